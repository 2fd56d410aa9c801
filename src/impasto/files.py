"""Atomic file writes: a crash or a bad input never leaves a half-written or clobbered file behind."""

import errno
import glob
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import UserError


def refuse_overwrite(path: Path, overwrite: bool, how: str = "--overwrite", other: str = "another output path"):
    """The one refusal to replace an existing output: a UserError naming the option that allows it."""
    if not overwrite and Path(path).exists():
        raise UserError(f"{path} exists: pass {how} to replace it, or {other}")


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, flush it to disk, then rename it into place: the
    target holds either its old content or the whole new file, even across a crash or a power cut."""
    path = Path(path)
    through = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if through is not None:
        raise UserError(f"cannot write {path}: {through} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{temp_prefix(path)}{os.getpid()}.", suffix=path.suffix, dir=path.parent)
    except OSError as e:  # a path through a file, a folder nobody may write in
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should read like any other file
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)  # the rename itself
    except OSError as e:  # a full disk, a read-only folder: one line, and the old file (if any) as it was
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def temp_prefix(path: Path) -> str:
    """The start of `path`'s temporary files' names: hidden, and naming this machine (a process id is the next part)."""
    return f".{path.stem}.{socket.gethostname()}-"


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files of `path` that a killed writer on this machine left behind (its process is gone);
    a live writer's stay."""
    prefix = temp_prefix(path)
    for leftover in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(path.suffix)}"):
        pid = leftover.name[len(prefix):].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """write_atomic for bytes in memory, checking that every byte reached the file before it takes the name: a
    short write (a full disk that did not say so) never passes for a whole file."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
        if os.path.getsize(tmp) != len(data):
            raise OSError(errno.ENOSPC, f"{os.path.getsize(tmp)} of {len(data)} bytes written")

    return write_atomic(path, write)


def fsync(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries (a rename), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
