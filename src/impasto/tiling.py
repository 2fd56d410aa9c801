"""Stylize an image of any size on bounded memory: the full-resolution layers run in overlapping tiles, and every
instance norm takes its statistics from the whole image, so the result is the untiled one up to rounding.

The network (transformer.TransformerNet) has three parts, and each is run where its memory is smallest:
- the encoder (stem, down1, down2) runs tile by tile, once per norm: a pass gathers the whole image's moments of
  a layer, and the next pass normalizes that layer with them and goes one layer deeper;
- the residual blocks run on the whole image at quarter resolution (a 128-channel map there is 32 bytes per
  input pixel), with their own norms;
- the decoder (up1, up2, head) runs tile by tile from that quarter-resolution map, again one pass per norm.
That is about 1.5 untiled passes of arithmetic. Each tile carries MARGIN pixels of context on every side, more
than the widest reach of its convolutions, and tiles start on multiples of 4 so that the stride-2 and upsampling
grids line up with the whole image's.
"""

import math

import torch
import torch.nn.functional as F

from .transformer import ConvLayer, StyleNorm, TransformerNet

MARGIN = 16  # full-resolution context per tile side; the decoder's reach is 12 pixels, the encoder's 7
DEFAULT_TILE = 1024  # a tile's core, in full-resolution pixels: about 1 GiB of activations in fp32


class Moments:
    """Per-channel mean and variance of one layer over the whole image, gathered tile by tile in float64."""

    def __init__(self):
        self.count = 0
        self.sum: torch.Tensor | float = 0.0
        self.sum_sq: torch.Tensor | float = 0.0

    def add(self, a: torch.Tensor) -> None:
        for rows in a.split(256, dim=2):  # bounds the float64 copy of a large map
            rows = rows.double()
            self.sum = self.sum + rows.sum(dim=(0, 2, 3))
            self.sum_sq = self.sum_sq + rows.square().sum(dim=(0, 2, 3))
            self.count += rows.shape[2] * rows.shape[3]

    def affine(self, norm: StyleNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """The norm, with these statistics, as a per-channel scale and shift."""
        mean = self.sum / self.count
        var = (self.sum_sq / self.count - mean.square()).clamp_min(0)
        weight, bias = norm.affine()
        scale = weight.double() / (var + norm.eps).sqrt()
        shift = bias.double() - mean * scale
        return scale.float().view(1, -1, 1, 1), shift.float().view(1, -1, 1, 1)


def _finish(layer: ConvLayer, a: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A ConvLayer after its convolution: the norm (with whole-image statistics) and the ReLU."""
    scale, shift = affine
    y = a.float() * scale + shift
    return y.relu_() if len(layer) > 2 else y


def _upsample2x(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Nearest-neighbour doubling cut to rows × cols: the same pixels F.interpolate(size=…) picks for the whole
    image, whose sizes are ceil(n / 2) of each other, when the tile starts on an even coordinate."""
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., :rows, :cols]


class Tile:
    """A core region [y0, y1) × [x0, x1) of the full-resolution image and its context, clipped to the image."""

    def __init__(self, y0: int, y1: int, x0: int, x1: int, height: int, width: int):
        self.core = (y0, y1, x0, x1)
        self.context = (max(0, y0 - MARGIN), min(height, y1 + MARGIN), max(0, x0 - MARGIN), min(width, x1 + MARGIN))

    def at(self, scale: int) -> tuple[slice, slice]:
        """The core, in the coordinates of the tile's own map at 1/scale resolution."""
        y0, y1, x0, x1 = self.core
        cy, _, cx, _ = self.context
        return (slice(y0 // scale - cy // scale, math.ceil(y1 / scale) - cy // scale),
                slice(x0 // scale - cx // scale, math.ceil(x1 / scale) - cx // scale))

    def within(self, scale: int) -> tuple[slice, slice]:
        """The core, in whole-image coordinates at 1/scale resolution."""
        y0, y1, x0, x1 = self.core
        return slice(y0 // scale, math.ceil(y1 / scale)), slice(x0 // scale, math.ceil(x1 / scale))


def tiles(height: int, width: int, tile: int) -> list[Tile]:
    tile = max(4, tile // 4 * 4)
    return [Tile(y, min(y + tile, height), x, min(x + tile, width), height, width)
            for y in range(0, height, tile) for x in range(0, width, tile)]


@torch.inference_mode()
def tiled_forward(net: TransformerNet, image: torch.Tensor, device: torch.device, dtype: torch.dtype | None,
                  tile: int = DEFAULT_TILE) -> torch.Tensor:
    """net(image) for one image (1, 3, H, W) held anywhere, computed tile by tile on `device`; returned on the
    image's device, in fp32. `dtype`: the autocast dtype, as for an untiled pass (None: fp32)."""
    if image.shape[0] != 1:
        raise ValueError(f"tiled_forward takes one image at a time, got a batch of {image.shape[0]}")
    height, width = image.shape[-2:]
    if min(height, width) < 2 * MARGIN:  # too small to need tiles; the network pads what is smaller still
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return net(image.to(device)).float().to(image.device)
    pads = net.pads(height, width)  # as TransformerNet.forward pads it, then its layers in tiles
    out = _tiled_layers(net, F.pad(image, pads, mode="reflect"), device, dtype, tile)
    return net.unpad(out, pads, height, width)


def _tiled_layers(net: TransformerNet, image: torch.Tensor, device: torch.device, dtype: torch.dtype | None,
                  tile: int) -> torch.Tensor:
    """net.layers(image) in tiles, for an image already padded as the network pads it."""
    height, width = image.shape[-2:]
    grid = tiles(height, width, tile)

    def crop(t: Tile) -> torch.Tensor:
        cy0, cy1, cx0, cx1 = t.context
        return image[..., cy0:cy1, cx0:cx1].to(device)

    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        # Encoder: stem's moments, then down1's, then down2's output into the whole quarter-resolution map.
        encoder = (net.stem, net.down1, net.down2)
        affines: list[tuple[torch.Tensor, torch.Tensor]] = []
        quarter = None
        for depth, layer in enumerate(encoder):
            moments = Moments()
            for t in grid:
                y = crop(t)
                for done, norm_affine in zip(encoder, affines):
                    y = _finish(done, done[0](y), norm_affine)
                a = layer[0](y)
                rows, cols = t.at(2 ** depth)
                if layer is net.down2:
                    if quarter is None:
                        quarter = a.new_empty(1, a.shape[1], math.ceil(height / 4), math.ceil(width / 4))
                    quarter[(..., *t.within(4))] = a[..., rows, cols]
                moments.add(a[..., rows, cols])
            affines.append(moments.affine(layer[1]))
        quarter = _finish(net.down2, quarter, affines[-1])
        quarter = net.residuals(quarter)

        # Decoder: up1's moments, then up2's, then the output.
        out = torch.empty(1, 3, height, width, device=image.device)
        decoder_affines: list[tuple[torch.Tensor, torch.Tensor]] = []
        for depth in range(3):
            moments = Moments()
            for t in grid:
                cy0, cy1, cx0, cx1 = t.context
                y = quarter[..., cy0 // 4:math.ceil(cy1 / 4), cx0 // 4:math.ceil(cx1 / 4)]
                y = _upsample2x(y, math.ceil(cy1 / 2) - cy0 // 2, math.ceil(cx1 / 2) - cx0 // 2)
                a = net.up1[0](y)
                if depth == 0:
                    moments.add(a[(..., *t.at(2))])
                    continue
                y = _upsample2x(_finish(net.up1, a, decoder_affines[0]), cy1 - cy0, cx1 - cx0)
                a = net.up2[0](y)
                if depth == 1:
                    moments.add(a[(..., *t.at(1))])
                    continue
                y = net.head(_finish(net.up2, a, decoder_affines[1]))
                out[(..., *t.within(1))] = y[(..., *t.at(1))].float().to(image.device)
            if depth < 2:
                decoder_affines.append(moments.affine((net.up1, net.up2)[depth][1]))
    return out
