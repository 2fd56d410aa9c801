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
