"""Where to run and in which precision: decided once here for train, stylize, optimize and the benchmarks."""

from pathlib import Path

import torch

from .errors import UserError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("a CUDA device was asked for, but no CUDA GPU is available: use cpu")
    return device


def cpu_has_amx() -> bool:
    """bf16 matrix units (Sapphire Rapids and later): there CPU bf16 autocast runs ~2x faster than fp32."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_amx()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `precision` of auto, fp32 or bf16: None for fp32, bf16 where asked or where fast."""
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}: use auto, fp32 or bf16")
    if precision == "bf16" or (precision == "auto" and bf16_is_fast(device)):
        return torch.bfloat16
    return None


def conv_memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, the layout of cuDNN's fastest tensor-core convolutions; the default layout elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
