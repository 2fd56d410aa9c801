"""How much memory this process may still take on the host, and glibc's keeping of what a CPU pass frees: free of
heavy imports, for the ONNX runtime's path too."""

import ctypes
import functools
import platform
from pathlib import Path

# Peak memory of a whole pass per pixel, with the freed memory kept, at the full network's first width (32) and the
# thin one's (8): the largest measured peaks rounded up (docs/benchmarks.md, "Memory a pass plans for"). The CPU's
# rewritten pass (rewrite.py) never builds the decoder's doubled maps; its peak varies from run to run, hence the
# wider margin over its measured peaks.
WHOLE_PASS_BYTES = {"network": {"fp32": (1400, 460), "bf16": (1100, 320)},
                    "rewritten": {"fp32": (900, 230), "bf16": (900, 260)}}


def whole_pass_bytes(first_width: int, precision: str = "fp32", rewritten: bool = False) -> float:
    """Bytes a pixel of a whole pass of a network whose first width is `first_width`: on the line through the full
    and thin networks' figures; narrower networks than the thin one are planned as the thin one."""
    full, thin = WHOLE_PASS_BYTES["rewritten" if rewritten else "network"][precision]
    return thin + (full - thin) * (max(first_width, 8) - 8) / 24


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@functools.cache
def keep_freed_host_memory() -> bool:
    """Have glibc keep the memory a CPU pass frees for the pass's next tensors. By default it hands every freed block
    over 32 MB back to the kernel, and the kernel then zeroes fresh pages for the next one: up to half of a large
    pass's time (docs/benchmarks.md). One arena for every thread, large blocks from that heap, and the heap's top
    kept up to 2 GB. True where this was set; elsewhere (not glibc) nothing changes."""
    libc = _glibc()
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # malloc.h
    settings = ((m_arena_max, 1), (m_mmap_max, 0), (m_trim_threshold, 2**31 - 1))
    return libc is not None and all(libc.mallopt(option, value) == 1 for option, value in settings)


def release_freed_host_memory() -> None:
    """Hand what keep_freed_host_memory kept back to the system."""
    if (libc := _glibc()) is not None:
        libc.malloc_trim(0)


def size_that_fits(width: int, height: int, need: float, free: float) -> int:
    """The long side at which a pass needing `need` bytes at width × height takes 90 % of `free` (memory grows with
    the pixels, so with the square of the side; the 10 % is a margin for the images themselves)."""
    return int(max(width, height) * (0.9 * free / need) ** 0.5)


def free_host_memory() -> int | None:
    """Bytes the process can still take: the smaller of the machine's available memory and its container's
    headroom; None where neither is known."""
    known = [n for n in (_meminfo_available(), cgroup_headroom()) if n is not None]
    return min(known) if known else None


def _meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """A container's memory limit minus its use (cgroup v2, then v1), or None without a limit: in a container,
    the machine's free memory overstates what the process may take before it is killed."""
    for limit, usage in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes",
                                                             "memory/memory.usage_in_bytes")):
        try:
            cap, used = (root / limit).read_text().strip(), int((root / usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:  # v2 says "max", v1 a huge number, where there is no limit
            return max(0, int(cap) - used)
    return None
