"""The file kinds impasto reads and writes, by suffix. Free of heavy imports, so that a command line can check its
paths before torch loads."""

from pathlib import Path

from . import ASSETS
from .errors import UserError

# A trained style: its weights and, in the file's metadata, this format name and version and a JSON `meta` entry
# (checkpoint.py for .safetensors, onnx_style.py for .onnx).
STYLE_FORMAT = "impasto-style"
STYLE_FORMAT_VERSION = 1
SHIPPED_STYLES = ASSETS / "styles"  # each shipped style's network beside its painting

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}

# What impasto writes, by output suffix: (FFmpeg muxer, video encoder, encoder options). H.264 at CRF 18, close to
# visually lossless: brush strokes are fine detail, which the default CRF 23 smears.
CONTAINERS = {
    ".mp4": ("mp4", "libx264", {"crf": "18", "preset": "medium"}),
    ".m4v": ("mp4", "libx264", {"crf": "18", "preset": "medium"}),
    ".mov": ("mov", "libx264", {"crf": "18", "preset": "medium"}),
    ".mkv": ("matroska", "libx264", {"crf": "18", "preset": "medium"}),
    ".webm": ("webm", "libvpx-vp9", {"crf": "24", "b": "0"}),
    ".avi": ("avi", "mpeg4", {"qscale": "3"}),
}
# What it reads: anything FFmpeg decodes, recognised by these suffixes.
VIDEO_SUFFIXES = set(CONTAINERS) | {".mpg", ".mpeg", ".ts", ".m2ts", ".wmv", ".flv", ".3gp", ".ogv"}


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def check_output(dst: Path) -> None:
    if dst.suffix.lower() not in CONTAINERS:
        raise UserError(f"output {dst} needs a video suffix impasto writes: {', '.join(CONTAINERS)}")


def shipped_styles() -> list[str]:
    return sorted(p.stem for p in SHIPPED_STYLES.glob("*.safetensors"))


def find_style(arg: str) -> Path:
    """A style by its file, or by its name alone: checkpoints/NAME.safetensors in the working folder (what train.py
    exported there), else the style shipped with impasto, so that an installed package stylizes from anywhere."""
    path = Path(arg).expanduser()
    if path.exists() or path.suffix or len(path.parts) != 1:
        return path
    for candidate in (Path("checkpoints") / f"{arg}.safetensors", SHIPPED_STYLES / f"{arg}.safetensors"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no style named {arg!r} in checkpoints/ or among the shipped styles "
                    f"({', '.join(shipped_styles())}): pass a style's name or its .safetensors file")
