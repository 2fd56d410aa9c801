"""Where to run and in which precision: decided once here for train, stylize, gatys and the benchmarks."""

import functools
import itertools
import json
import os
import time
from pathlib import Path

import torch

from .errors import UserError
from .files import write_atomic
from .memory import free_host_memory

BF16_FASTER = 1.2  # auto picks bf16 on a CPU where the probe runs this many times faster than fp32 or more
WINOGRAD_FASTER = 1.2  # the loss network takes Winograd's way where its probe runs this many times faster or more


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


def cpu_model() -> str:
    """The CPU's name and its vector flags: virtual machines often show one name for CPUs of different kinds."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = dict(line.split(":", 1) for line in reversed(lines) if ":" in line)  # the first CPU's
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = sorted(f for f in fields.get("flags", "").split() if f.startswith(("avx", "amx")))
    return f"{fields.get('model name') or 'unknown CPU'} ({' '.join(flags)})"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "impasto"


def probe_bf16(repeats: int = 8) -> dict[str, float]:
    """fp32's time over bf16 autocast's for a residual block's 3x3 convolution (128 channels, 64², batch 2): its
    forward, as a stylize pass runs it, and its forward and backward, as a training step does. The CPU's flags do not
    tell: with AVX512-BF16 and no AMX, bf16 measured slower on an Intel Xeon and twice as fast on an AMD EPYC
    (docs/experiments.md). The best of `repeats` turns each, interleaved, so a busy machine slows both alike."""
    best = {(bf16, part): float("inf") for bf16 in (False, True) for part in ("forward", "step")}
    with torch.inference_mode(False), torch.enable_grad():  # whatever mode the caller is in
        conv = torch.nn.Conv2d(128, 128, 3, padding=1)
        x = torch.randn(2, 128, 64, 64, requires_grad=True)
        for _, bf16 in itertools.product(range(repeats), (False, True)):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = conv(x)
            forward = time.perf_counter()
            y.float().sum().backward()
            best[bf16, "forward"] = min(best[bf16, "forward"], forward - start)
            best[bf16, "step"] = min(best[bf16, "step"], time.perf_counter() - start)
    return {part: round(best[False, part] / best[True, part], 3) for part in ("forward", "step")}


def probe_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__}"


def bf16_kernels() -> bool:
    """Whether oneDNN has bf16 convolutions for this CPU. Without them (AVX2 alone, say) autocast falls back to a
    reference path over a hundred times slower than fp32, and timing that would keep a first run waiting minutes."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN's query: the probe decides
        return True


def measured_once(name: str, probe, parts: tuple[str, ...]) -> dict[str, float]:
    """A probe's figures for this CPU, measured once per CPU model and torch version and kept in the user's cache
    (`name`.json), so that every run on a machine makes the same choice (a resumed training goes on as it began)."""
    path, key = cache_dir() / f"{name}.json", probe_key()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    kept = known.get(key)
    if isinstance(kept, dict) and all(isinstance(kept.get(part), (int, float)) for part in parts):
        return kept
    known[key] = probe()
    try:
        write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(known, indent=1) + "\n"))
    except UserError:  # an unwritable cache only costs the probe again next time
        pass
    return known[key]


@functools.cache
def cpu_bf16_speedup() -> dict[str, float] | None:
    """probe_bf16's figures for this CPU (measured_once); None where the CPU has no bf16 kernels, which needs no
    measuring."""
    if not bf16_kernels():
        return None
    return measured_once("bf16", lambda: probe_bf16(), ("forward", "step"))


def probe_winograd(repeats: int = 4) -> dict[str, float]:
    """A direct convolution's time over winograd.conv's for a deep loss-network layer (256 channels, 32², batch 2,
    fp32), forward and the input's gradient, as a training step or a Gatys step runs it. The best of `repeats` turns
    each, interleaved."""
    from .winograd import WinogradConv  # the runtime is imported by everything; the convolution only here

    best = {True: float("inf"), False: float("inf")}
    with torch.inference_mode(False), torch.enable_grad():
        conv = WinogradConv(256, 256).requires_grad_(False)
        x = torch.randn(2, 256, 32, 32, requires_grad=True)
        for _, winograd in itertools.product(range(repeats), (False, True)):
            start = time.perf_counter()
            y = conv.winograd(x) if winograd else torch.nn.Conv2d.forward(conv, x)
            y.sum().backward()
            best[winograd] = min(best[winograd], time.perf_counter() - start)
    return {"step": round(best[False] / best[True], 3)}


@functools.cache
def winograd_is_fast() -> bool:
    """Whether the loss network's deep layers run faster by Winograd on this CPU (probe_winograd, measured once)."""
    return measured_once("winograd", lambda: probe_winograd(), ("step",))["step"] >= WINOGRAD_FASTER


def bf16_is_fast(device: torch.device, training: bool = False) -> bool:
    """Whether bf16 autocast is faster than fp32 here: CUDA with bf16, or a CPU where the probe measured it faster
    (for a training step when `training`, else for a pass)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    measured = cpu_bf16_speedup()
    return measured is not None and measured["step" if training else "forward"] >= BF16_FASTER


def describe(device: torch.device, dtype: torch.dtype | None) -> str:
    """Where and in which precision a pass runs, as the command lines and the web page print it."""
    return f"{device}, {'bf16' if dtype else 'fp32'}"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a one-image pass (stylize, Gatys) for a `precision` of auto, fp32 or bf16.

    auto is bf16 on CPUs where it measures faster (bf16_is_fast), and fp32 on CUDA, where these batch-1 passes ran
    faster in fp32 (TF32 tensor cores) than in bf16 (docs/benchmarks.md). Training's batches are another matter: see
    train.resolve_precision.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}: use auto, fp32 or bf16")
    if precision == "bf16" or (precision == "auto" and device.type == "cpu" and bf16_is_fast(device)):
        return torch.bfloat16
    return None


def conv_memory_format(device: torch.device, precision: str) -> torch.memory_format:
    """Training's layout: channels_last on CUDA, where cuDNN's bf16 tensor-core convolutions want it (not yet timed
    against the default layout there: one-image passes, timed, were faster without it), and on the CPU in bf16, where
    oneDNN's bf16 kernels take it without reordering every map; the default in fp32 on the CPU, where channels_last
    measured slower (docs/benchmarks.md)."""
    if device.type == "cuda" or (device.type == "cpu" and precision.startswith("bf16")):
        return torch.channels_last
    return torch.contiguous_format
