"""The network rewritten for the CPU's convolutions: the same outputs, to float rounding, from better-shaped work.

oneDNN vectorises a convolution over 16 output channels at a time, so the 3-channel head runs at a fifth of the
speed of the rest, and the decoder's convolutions run on doubled maps that are mostly copies. Two exact rewrites:

- A nearest-neighbour doubling then a 3×3 conv is, per output phase (the four pixels each input pixel becomes), a
  3×3 conv on the small map with the taps that land on the same input pixel summed: one conv with four times the
  outputs, then pixel_shuffle. The doubled map and its padding are never built. Reflection padding of the doubled
  map is replication padding of the small one.
- The head's 9×9 conv on a map folded 2×2 into channels (pixel_unshuffle) is a 5×5 conv with 12 outputs (3 channels
  × 4 phases) instead of 3, then pixel_shuffle.
"""

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import TransformerNet, pad

# Which of a 3×3 kernel's rows (or columns) land on the small map's rows -1, 0, +1, for the doubled map's even (0)
# and odd (1) rows.
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
                            [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def doubled_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, 3, 3) for a 3×3 conv on a doubled map -> (4·O, C, 3, 3) on the small map, outputs in pixel_shuffle's
    order (o, row phase, column phase)."""
    taps = _PHASE_TAPS.to(weight)
    phases = torch.einsum("aru,ocuv,bsv->oabcrs", taps, weight, taps)
    return phases.reshape(4 * weight.shape[0], weight.shape[1], 3, 3)


def folded_conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, K, K), K odd -> the conv on pixel_unshuffle(·, 2) of the same padded input: (4·O, 4·C, K//2+1,
    K//2+1), outputs in pixel_shuffle's order. Output phase (a, b), folded tap (m, n) and input phase (s, t) read
    the original tap (2m + s - a, 2n + t - b)."""
    out, channels, k, _ = weight.shape
    if k % 2 == 0:
        raise ValueError(f"a folded conv needs an odd kernel, got {k}")
    size = k // 2 + 1
    folded = weight.new_zeros(out, 2, 2, channels, 2, 2, size, size)
    for a, b, s, t, m, n in itertools.product(range(2), range(2), range(2), range(2), range(size), range(size)):
        u, v = 2 * m + s - a, 2 * n + t - b
        if 0 <= u < k and 0 <= v < k:
            folded[:, a, b, :, s, t, m, n] = weight[:, :, u, v]
    return folded.reshape(4 * out, 4 * channels, size, size)


class CPUTransformer(nn.Module):
    """A TransformerNet's forward pass with the two rewrites; its norms and every other layer are the network's own
    (a painting chosen with select() holds). Falls back to the network itself where a map is not exactly doubled
    (Johnson's grid on an odd side)."""

    def __init__(self, net: TransformerNet):
        super().__init__()
        self.net = net
        head = net.head[0]
        self.up1 = doubled_conv_weight(net.up1[0].weight.detach())
        self.up2 = doubled_conv_weight(net.up2[0].weight.detach())
        self.head = folded_conv_weight(head.weight.detach())
        self.head_bias = head.bias.detach().repeat_interleave(4) if head.bias is not None else None
        self.head_pad = head.padding[0]

    def rewrites(self, height: int, width: int) -> bool:
        """Whether a pass at this size is the rewritten one (else the network's own)."""
        return min(height, width) >= self.net.min_size() and self.net.config.down_kernel == 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        h, w = x.shape[-2:]
        if not self.rewrites(h, w):
            return net(x)
        pads = net.pads(h, w)
        x = F.pad(x, pads, mode="reflect")
        y = net.residuals(net.down2(net.down1(net.stem(x))))
        for layer, weight in ((net.up1, self.up1), (net.up2, self.up2)):
            y = F.pixel_shuffle(F.conv2d(pad(y, (1, 1, 1, 1), "replicate"), weight), 2)
            y = layer[2](layer[1](y))  # the norm, then the ReLU
        p = self.head_pad  # the map's sides are multiples of 4 (pads), so folding by 2 takes it whole
        y = F.pixel_unshuffle(pad(y, (p, p, p, p), "reflect"), 2)
        y = F.pixel_shuffle(F.conv2d(y, self.head, self.head_bias), 2)
        return net.unpad(y, pads, h, w)
