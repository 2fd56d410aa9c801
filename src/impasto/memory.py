"""How much memory this process may still take on the host: free of heavy imports, for the ONNX runtime's path
too."""

from pathlib import Path

# Peak memory of a whole pass per output pixel, for the default widths (32 channels at full size), measured on the
# CPU in inference mode: 964 bytes in fp32 and 741 in bf16, rounded up.
BYTES_PER_PIXEL = {"fp32": 1000, "bf16": 800}


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
