"""Image files <-> tensors: loading with clear errors, resizing, atomic saving."""

import os
import warnings
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .errors import UserError
from .files import write_atomic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit (89 megapixels), refused before decoding


def load_image(path: str | os.PathLike, what: str = "image") -> Image.Image:
    """Open an RGB image, or raise a one-line UserError naming the file: missing, unreadable, truncated, or over
    MAX_PIXELS by its header (a decompression bomb), which is checked before anything is decoded."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{what} {path} does not exist: check the path")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UserError(f"{what} {path} declares more than {MAX_PIXELS / 1e6:.0f} megapixels: refused unread, as a "
                        "possible decompression bomb") from None
    except (UnidentifiedImageError, OSError) as e:
        reason = "truncated" if "truncated" in str(e) else e.__class__.__name__
        raise UserError(f"{what} {path} is not a readable image ({reason}): give a JPEG or PNG") from None


def long_side_size(width: int, height: int, size: int | None = None, scale: float | None = None) -> tuple[int, int]:
    """(width, height) scaled so the longer side is `size` pixels, or by `scale`; unchanged when neither is given."""
    if scale:
        size = max(1, round(max(width, height) * scale))
    if not size:
        return width, height
    factor = size / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def resize_long_side(image: Image.Image, size: int | None, scale: float | None = None) -> Image.Image:
    """Scale so the longer side is `size` pixels, or by `scale` (neither: unchanged)."""
    target = long_side_size(image.width, image.height, size, scale)
    return image if target == image.size else image.resize(target, Image.Resampling.LANCZOS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float (3, H, W) in [0, 1]."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1).float().div(255).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) float, clamped to [0, 1] -> PIL RGB."""
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().contiguous()
    return Image.frombytes("RGB", (array.shape[1], array.shape[0]), array.numpy().tobytes())


def save_atomic(image: Image.Image, path: str | os.PathLike) -> None:
    """Save an image atomically, in the format its suffix names."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    write_atomic(path, lambda tmp: image.save(tmp, format=fmt))


def list_images(root: str | os.PathLike, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Every image file (or file with one of `suffixes`) under `root`, recursively, in a stable order."""
    root = Path(root).expanduser()
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the content's colours (Gatys et al. 2016, "Preserving Color", luminance transfer).

    YCbCr is linear and its inverse maps Y to (1, 1, 1), so replacing Y keeps Cb/Cr: shift RGB by the Y difference.
    """
    luma = torch.tensor([0.299, 0.587, 0.114], device=content.device, dtype=content.dtype).view(1, 3, 1, 1)
    return content + ((stylized - content) * luma).sum(dim=1, keepdim=True)


def collect_files(inputs: list[str], suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The files named, and in each folder named every file with one of `suffixes`, recursively."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = list_images(path, suffixes)
            if not found:
                raise UserError(f"input folder {path} holds none of {', '.join(sorted(suffixes))}")
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            raise UserError(f"input {path} does not exist: check the path")
    return paths
