"""Where to run and in which precision: decided once here for train, stylize, gatys and the benchmarks."""

from pathlib import Path

import torch

from .errors import UserError
from .memory import free_host_memory


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


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on `device`, or None where that is not known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # + torch's cache
    return free_host_memory() if device.type == "cpu" else None


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


def describe(device: torch.device, dtype: torch.dtype | None) -> str:
    """Where and in which precision a pass runs, as the command lines and the web page print it."""
    return f"{device}, {'bf16' if dtype else 'fp32'}"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a one-image pass (stylize, Gatys) for a `precision` of auto, fp32 or bf16.

    auto is bf16 on CPUs with AMX, where it is faster, and fp32 on CUDA, where these batch-1 passes ran faster in
    fp32 (TF32 tensor cores) than in bf16 (docs/benchmarks.md). Training's batches are another matter: see
    train.resolve_precision.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}: use auto, fp32 or bf16")
    if precision == "bf16" or (precision == "auto" and device.type == "cpu" and cpu_has_amx()):
        return torch.bfloat16
    return None


def conv_memory_format(device: torch.device) -> torch.memory_format:
    """Training's layout: channels_last on CUDA, where cuDNN's bf16 tensor-core convolutions want it (not yet timed
    against the default layout there: one-image passes, timed, were faster without it); the default elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
