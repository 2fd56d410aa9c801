"""Inference as a library: a style ready to apply (precision, colours, strength, tiling) and the memory plan that
picks a whole pass, tiles, or a one-line refusal. stylize.py, video, flicker, the web page and any other front end
share it."""

from pathlib import Path

import torch

from .color import blend_strength, preserve_color
from .errors import UserError, check_fraction
from .memory import keep_freed_host_memory, release_freed_host_memory, size_that_fits, whole_pass_bytes
from .rewrite import CPUTransformer
from .runtime import autocast_dtype, describe, free_memory, pick_device
from .tiling import DEFAULT_TILE, MARGIN, tiled_forward

# Tiled (tiling.py), per pixel and for the default widths: the input, the output and the quarter-resolution map stay
# whole, and the residual blocks on that map add to them (measured peaks: docs/benchmarks.md, "Tiles").
TILED_RESIDENT, TILED_RESIDUAL_PEAK = 110, 340


class Stylizer:
    """A style on a device, in a precision (`dtype`: the autocast dtype, None for fp32), with the output's options:
    `keep_colors`, the output's luminance on the input's colours (color.preserve_color), and `strength`, from 0 (the
    photo) to 1 (the full style, color.blend_strength). On the CPU a whole pass runs the network rewritten for its
    convolutions (rewrite.CPUTransformer; `rewrite=False`: as it is)."""

    def __init__(self, net: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                 keep_colors: bool = False, strength: float = 1.0, channels_last: bool = False,
                 compile: bool | str = False, rewrite: bool = True):
        check_fraction(strength, "strength")
        self.net, self.device, self.dtype, self.meta = net, device, dtype, {}
        self.keep_colors, self.strength = keep_colors, strength
        if device.type == "cpu":
            keep_freed_host_memory()
        # The GPU's fast-path candidates, timed against each other by scripts/bench.py stylize.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            net.to(memory_format=torch.channels_last)
        # compile: True for torch.compile's default, or its mode ("reduce-overhead" replays CUDA graphs).
        if compile:
            self.whole_pass = torch.compile(net, mode=None if compile is True else compile)
        elif device.type == "cpu" and not channels_last and rewrite:  # the same pass in better-shaped convolutions
            self.whole_pass = CPUTransformer(net)
        else:
            self.whole_pass = net

    @classmethod
    def from_style(cls, style: str | Path, device: str | torch.device = "auto", precision: str = "auto",
                   painting: str | None = None, **options) -> "Stylizer":
        """The one way to stylize with a `.safetensors` style: by file or name (lookup.find_style), on `device` in
        `precision` (runtime.autocast_dtype), painting `painting` (a name or a blend, style.select) where the file
        holds several; `meta` says what it paints. `options`: keep_colors, strength."""
        from .style import open_style

        device = pick_device(device) if isinstance(device, str) else device
        net, meta = open_style(str(style), device, painting)
        stylizer = cls(net, device, autocast_dtype(precision, device), **options)
        stylizer.meta = meta
        return stylizer

    def _whole(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            return self.whole_pass(batch.contiguous(memory_format=self.memory_format)).float()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """A whole pass on a batch (B, 3, H, W) in [0, 1], held anywhere; fp32 in [0, 1] on the device. In the
        default memory layout: channels_last ran slower on the GPU (docs/benchmarks.md)."""
        batch = batch.to(self.device)
        return self.finish(self._whole(batch), batch.float())

    @torch.inference_mode()
    def image(self, image: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """One image (1, 3, H, W): a whole pass, or `tile`-pixel tiles (tiling.py); returned on the image's device."""
        if tile is None:
            out = self(image).to(image.device)
            self._release()
            return out
        return self.finish(self.raw(image, tile), image.float())

    @torch.inference_mode()
    def raw(self, image: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """The network's output for one image, before finish(): for a front end that applies several strengths or
        colour choices to one pass."""
        if tile is None:
            out = self._whole(image.to(self.device)).to(image.device)
        else:
            out = tiled_forward(self.net, image, self.device, self.dtype, tile)
        self._release()
        return out

    def _release(self) -> None:
        """After one image, what the pass kept goes back to the system: the next image's plan reads the free memory,
        and a server may wait a long time for it. Batches of video frames keep it from one batch to the next."""
        if self.device.type == "cpu":
            release_freed_host_memory()

    def stylize_pil(self, rgb, tile: int | None = None):
        """A PIL RGB image stylized, at its own size: what stylize.py and the web page run."""
        from .images import to_pil, to_tensor

        return to_pil(self.image(to_tensor(rgb).unsqueeze(0), tile)[0])

    def describe(self) -> str:
        return describe(self.device, self.dtype)

    def finish(self, out: torch.Tensor, photo: torch.Tensor, keep_colors: bool | None = None,
               strength: float | None = None) -> torch.Tensor:
        """The network's output `out` for `photo` with the colour choice and strength applied (the Stylizer's own,
        unless given), clamped to [0, 1]."""
        keep_colors = self.keep_colors if keep_colors is None else keep_colors
        strength = self.strength if strength is None else strength
        if keep_colors:
            out = preserve_color(out, photo)
        return blend_strength(out.clamp(0, 1), photo, strength)

    def _per_pixel(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Bytes per pixel at this size: a whole pass (the rewritten one where it runs), the network's own pass (a
        tile's: tiling.py), and tiled, resident and at the residual blocks' peak."""
        widths, precision = self.net.config.widths, "bf16" if self.dtype else "fp32"
        network = whole_pass_bytes(widths[0], precision)
        rewritten = isinstance(self.whole_pass, CPUTransformer) and self.whole_pass.rewrites(height, width)
        whole = whole_pass_bytes(widths[0], precision, rewritten=True) if rewritten else network
        return whole, network, TILED_RESIDENT * widths[2] / 128, TILED_RESIDUAL_PEAK * widths[2] / 128

    def _pixels(self, width: int, height: int) -> int:
        """The pixels a pass computes for an image: with the network's padding (TransformerNet.pads)."""
        left, right, top, bottom = self.net.pads(height, width)
        return (width + left + right) * (height + top + bottom)

    def plan(self, src: Path, width: int, height: int, tile: int | None = None) -> int | None:
        """How one image fits: None for a whole pass, or the tile size; `tile` asks for tiles of that size. A
        UserError, in one line, where it cannot fit: on a CPU the OS would kill the process without a word."""
        free = free_memory(self.device)
        whole, network, resident, residual = self._per_pixel(width, height)
        pixels = self._pixels(width, height)
        if free is None:
            return tile
        if tile is None and whole * pixels <= free:
            return None
        tile = tile or DEFAULT_TILE
        tiled = max(residual * pixels, resident * pixels + network * (tile + 2 * MARGIN) ** 2)
        if tiled <= free:
            return tile
        fits = size_that_fits(width, height, tiled, free)
        raise UserError(f"{src} at {width}x{height} needs about {tiled / 2**30:.1f} GiB of {self.device.type} memory "
                        f"even in tiles, and {free / 2**30:.1f} GiB is free: pass --size {fits} or less")

    def check_frames(self, src: Path, width: int, height: int, frames: int) -> None:
        """Refuse, in one line, a batch of video frames that cannot fit in a whole pass."""
        free = free_memory(self.device)
        need = self._per_pixel(width, height)[0] * self._pixels(width, height) * frames
        if free is not None and need > free:
            fits = size_that_fits(width, height, need, free)
            raise UserError(f"{src} at {width}x{height}, {frames} frames at a time, needs about {need / 2**30:.1f} "
                            f"GiB of {self.device.type} memory and {free / 2**30:.1f} GiB is free: pass --size {fits} "
                            "or less, or a smaller --batch")
