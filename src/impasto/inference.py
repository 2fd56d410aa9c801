"""Inference as a library: one forward pass of a style on a batch, in the chosen precision, and the memory check
that refuses a pass that cannot fit. stylize.py, video, flicker and any other front end share it."""

from collections.abc import Callable
from pathlib import Path

import torch

from .errors import UserError
from .images import preserve_color
from .runtime import free_memory


def stylizer(net: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
             keep_colors: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """One forward pass, fp32 out; in bf16 autocast when `dtype` says so (on the shipped style, 53–55 dB PSNR
    against fp32: no visible difference). The default memory layout: channels_last ran slower on an H100 (1080p:
    25 vs 17 ms). `keep_colors`: the output's luminance on the input's colours (images.preserve_color)."""

    @torch.inference_mode()
    def forward(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(batch).float()
        return preserve_color(out, batch.float()).clamp(0, 1) if keep_colors else out

    return forward


# Peak memory of a forward pass per output pixel, for the default widths (32 channels at full size), measured on
# the CPU in inference mode: 964 bytes in fp32 and 741 in bf16, rounded up.
BYTES_PER_PIXEL = {"fp32": 1000, "bf16": 800}


def check_memory(net: torch.nn.Module, device: torch.device, dtype: torch.dtype | None, src: Path, width: int,
                 height: int, frames: int = 1) -> None:
    """Refuse, in one line, a pass that cannot fit: on a CPU the OS would kill the process without a word."""
    free = free_memory(device)
    if free is None:
        return
    per_pixel = BYTES_PER_PIXEL["bf16" if dtype else "fp32"] * net.config.widths[0] / 32
    need = per_pixel * width * height * frames
    if need > free:
        fits = int(max(width, height) * (0.9 * free / need) ** 0.5)  # a margin for the images themselves
        what = f"{width}x{height}" + (f", {frames} frames at a time," if frames > 1 else "")
        fewer = " or a smaller --batch" if frames > 1 else ""
        raise UserError(f"{src} at {what} needs about {need / 2**30:.1f} GiB of {device.type} memory and "
                        f"{free / 2**30:.1f} GiB is free: pass --size {fits} or less{fewer}")
