"""Image files <-> tensors: loading as viewers show them (upright, in sRGB), with clear errors; resizing; saving
atomically with the colour profile, the camera's metadata and the alpha channel kept. torch is imported only by the
two tensor conversions, so that an ONNX style's path runs without it."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageCms, ImageDraw, ImageOps, UnidentifiedImageError

from .errors import UserError
from .files import write_bytes_atomic
from .formats import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import torch

MAX_MEGAPIXELS = 200.0  # a photo over this is refused by its header, before decoding: --max-megapixels raises it
Image.MAX_IMAGE_PIXELS = None  # impasto's own limit above replaces Pillow's (89 megapixels, with no way past it)
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
SRGB_ICC = SRGB_PROFILE.tobytes()  # once: the bytes carry their creation time
JPEG_QUALITY = 95  # with 4:4:4 chroma: brush strokes are fine, coloured detail that 4:2:0 at Pillow's 75 smears
EXIF_ORIENTATION = 0x0112


class TooManyPixels(UserError):
    """A picture over the pixel limit, by its header."""

    def __init__(self, message: str, width: int, height: int):
        super().__init__(message)
        self.width, self.height = width, height


@dataclass
class Photo:
    """An image as a viewer shows it: `rgb` upright and in sRGB, its transparency if it has one, and its EXIF
    metadata with the orientation already applied (for the output to carry the camera's data along)."""

    rgb: Image.Image
    alpha: Image.Image | None = None
    exif: bytes | None = None


def _deep_gray_to_l(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale to 8 bits by its range (Pillow's own conversion clips at 255, so a
    16-bit photo would come out white): 16-bit from 0..65535; 32-bit integers and floats by what they hold, from
    0..1, 0..255 or 0..65535."""
    deep = image.mode.startswith("I;16")
    image = image.convert("F")
    high = image.getextrema()[1]
    full = 65535.0 if deep or high > 255 else 1.0 if high <= 1.0 else 255.0
    return image.point(lambda v: v * (255.0 / full)).convert("L")


def _to_srgb(image: Image.Image) -> Image.Image:
    """RGB in sRGB: through the embedded ICC profile where there is one (Display P3, Adobe RGB, a CMYK press
    profile, gray gamma), else by Pillow's plain conversion; 16-bit and palette images included."""
    if image.mode.startswith(("I", "F")):
        base = _deep_gray_to_l(image)
    else:
        base = image if image.mode in ("RGB", "CMYK", "L") else image.convert("L" if image.mode in ("1", "LA") else
                                                                             "RGB")
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(base, source, SRGB_PROFILE, outputMode="RGB",
                                             renderingIntent=ImageCms.Intent.PERCEPTUAL)
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken or mismatched profile: take the pixel values as they are, as most viewers do
    return base if base.mode == "RGB" else base.convert("RGB")


def _upright(im: Image.Image) -> Image.Image:
    """Decoded and turned as the camera's EXIF orientation says (phones store the sensor's rows and a rotation to
    show them with); the image itself where there is nothing to turn: a copy of a large photo costs its size."""
    im.load()
    return ImageOps.exif_transpose(im) if im.getexif().get(EXIF_ORIENTATION, 1) != 1 else im


def _open(source: str | os.PathLike | bytes, what: str, read, name: str = "upload",
          max_megapixels: float | None = None):
    """read(opened image) for a file, or for bytes (an upload, called `name` in messages); or a one-line UserError:
    missing, unreadable, truncated, or over `max_megapixels` (default MAX_MEGAPIXELS) by its header, which is
    checked before anything is decoded (a small file can declare a huge picture)."""
    if isinstance(source, bytes):
        label, stream = name, io.BytesIO(source)
    else:
        label = stream = Path(source).expanduser()
        if not label.exists():
            raise UserError(f"{what} {label} does not exist: check the path")
        if label.is_dir():
            raise UserError(f"{what} {label} is a folder, not an image file")
    limit = MAX_MEGAPIXELS if max_megapixels is None else max_megapixels
    try:
        with Image.open(stream) as im:
            width, height = im.size
            if width * height > limit * 1e6:
                raise TooManyPixels(f"{what} {label} is {width}x{height}, {width * height / 1e6:.0f} megapixels, "
                                    f"over the limit of {limit:g}, refused unread", width, height)
            return read(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = "truncated" if "truncated" in str(e) else e.__class__.__name__
        raise UserError(f"{what} {label} is not a readable image ({reason}): give a JPEG or PNG") from None


def _read_photo(im: Image.Image) -> Photo:
    im = _upright(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or im.mode == "P" and "transparency" in im.info
    alpha = im.convert("RGBA").getchannel("A") if has_alpha else None
    exif = im.getexif()
    exif.pop(EXIF_ORIENTATION, None)
    return Photo(_to_srgb(im), alpha, exif.tobytes() if exif else None)


def load_photo(source: str | os.PathLike | bytes, what: str = "input image", name: str = "upload",
               max_megapixels: float | None = None) -> Photo:
    """An image file, or its bytes, as a viewer shows it, for stylizing (see Photo); a UserError for a bad one or
    one over `max_megapixels` (default MAX_MEGAPIXELS)."""
    return _open(source, what, _read_photo, name, max_megapixels)


def load_image(path: str | os.PathLike, what: str = "image") -> Image.Image:
    """An image file as upright sRGB RGB (alpha and metadata dropped, unread: training loads many); a UserError for
    a bad file."""
    return _open(path, what, lambda im: _to_srgb(_upright(im)))


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
    import torch

    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1).float().div(255).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) float, clamped to [0, 1] -> PIL RGB."""
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().contiguous()
    return Image.frombytes("RGB", (array.shape[1], array.shape[0]), array.numpy().tobytes())


ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}


def _write(image: Image.Image, target, fmt: str, alpha: Image.Image | None, exif: bytes | None) -> None:
    options: dict = {"icc_profile": SRGB_ICC}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = JPEG_QUALITY
    if fmt == "JPEG":
        options["subsampling"] = 0
    if exif and fmt in ("JPEG", "WEBP", "PNG"):
        options["exif"] = exif
    if alpha is not None and fmt in ALPHA_FORMATS:
        image = image.copy()
        image.putalpha(alpha if alpha.size == image.size else alpha.resize(image.size, Image.Resampling.LANCZOS))
    image.save(target, format=fmt, **options)


def save_atomic(image: Image.Image, path: str | os.PathLike, alpha: Image.Image | None = None,
                exif: bytes | None = None) -> None:
    """Save an image atomically, in the format its suffix names, tagged as sRGB. JPEG and WebP at JPEG_QUALITY;
    `alpha` reattached where the format has an alpha channel (PNG, WebP, TIFF; a JPEG has none); `exif` carried
    over where the format stores it."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    write_bytes_atomic(path, encode_image(image, fmt, alpha, exif))


def encode_image(image: Image.Image, fmt: str, alpha: Image.Image | None = None, exif: bytes | None = None) -> bytes:
    """The bytes save_atomic would write in `fmt` (JPEG, PNG, …)."""
    buffer = io.BytesIO()
    _write(image, buffer, fmt, alpha, exif)
    return buffer.getvalue()


def list_images(root: str | os.PathLike, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Every image file (or file with one of `suffixes`) under `root`, recursively, in a stable order."""
    root = Path(root).expanduser()
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


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


def grid(rows: list[list[torch.Tensor]], tile: int = 384, pad: int = 6,
         labels: list[str] | None = None) -> Image.Image:
    """Images (each shown at `tile` px long side) in rows and columns on white, each row as tall as its tallest;
    `labels`, one per column, in a band above them: the one sheet layout (stylize --sheet, compare's panels, the
    artifact grids, the gallery)."""
    tiles = [[resize_long_side(to_pil(t[0]), tile) for t in row] for row in rows]
    heights = [max(im.height for im in row) for row in tiles]
    band = 18 if labels else 0
    sheet = Image.new("RGB", (len(tiles[0]) * (tile + pad) + pad, band + sum(heights) + pad * (len(tiles) + 1)),
                      "white")
    for c, label in enumerate(labels or []):
        ImageDraw.Draw(sheet).text((pad + c * (tile + pad), pad), label, fill="black")
    top = pad + band
    for row, height in zip(tiles, heights):
        for c, im in enumerate(row):
            sheet.paste(im, (pad + c * (tile + pad), top))
        top += height + pad
    return sheet
