"""The file kinds impasto reads and writes, by suffix. Free of heavy imports, so that a command line can check its
paths before torch loads."""

from pathlib import Path

from .errors import UserError

# A trained style: its weights and, in the file's metadata, this format name and version and a JSON `meta` entry
# (style.py for .safetensors, onnx_style.py for .onnx).
STYLE_FORMAT = "impasto-style"
STYLE_FORMAT_VERSION = 1

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
