"""The styles a web page offers: every style file found, each loaded once on first use and kept, with a thumbnail of
its painting."""

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, check_fraction
from ..lookup import MODELS, painting_names, shipped_folder

KEPT_BLENDS = 2  # blends of two paintings kept loaded (a network each)


@dataclass
class Style:
    name: str
    path: Path
    meta: dict
    painting: str | None = None  # which painting of a file of several
    thumbnail: bytes | None = None
    stylizer: object = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class StyleLibrary:
    """The `.safetensors` styles under `folders`, by file stem, or by painting for a file of several (the first of a
    name wins; in a folder, a painting's file of its own before a file of several), on `device` in `precision`. A
    file that is not an impasto style is left out with a warning line."""

    def __init__(self, folders: list[Path], device: str = "auto", precision: str = "auto"):
        from ..memory import keep_freed_host_memory
        from ..runtime import autocast_dtype, pick_device
        from ..style import SUFFIX, one_painting, read_meta

        self.device = pick_device(device)
        self.precision, self.dtype = precision, autocast_dtype(precision, self.device)
        if self.device.type == "cpu":  # before the server's threads start: a thread keeps the arena it first took
            keep_freed_host_memory()
        self.styles: dict[str, Style] = {}
        self.homes: dict[str, tuple[Path, list[str]]] = {}  # each painting's first file of several: where it blends
        self.blends: dict[str, object] = {}  # Stylizers of blends, oldest first
        self.blends_lock = threading.Lock()
        shipped = {shipped_folder(model) for model in MODELS}
        for folder in folders:
            if not folder.is_dir():
                raise UserError(f"style folder {folder} does not exist: start from the project's folder, or pass "
                                "--checkpoints DIR or --styles DIR")
            found = []
            for path in sorted(folder.rglob(f"*{SUFFIX}")):
                if path.parent != folder and path.parent in shipped:  # the other model's (assets/styles/thin)
                    continue
                try:
                    found.append((path, read_meta(path)))
                except UserError as e:
                    print(f"warning: left out: {e}", file=sys.stderr)
            # A painting's file of its own comes before its file of several, as find_style takes it by name.
            for path, meta in sorted(found, key=lambda item: "paintings" in item[1]):
                if "paintings" not in meta:
                    self.styles.setdefault(path.stem, Style(path.stem, path, meta))
                    continue
                for name in painting_names(meta):
                    self.styles.setdefault(name, Style(name, path, one_painting(meta, name), name))
                    self.homes.setdefault(name, (path, painting_names(meta)))
        if not self.styles:
            raise UserError(f"no styles in {', '.join(map(str, folders))}: train one (python train.py) or pass "
                            "--styles DIR")

    def get(self, name: str) -> Style:
        if name not in self.styles:
            raise UserError(f"unknown style {name!r}: choose one of {', '.join(self.styles)}")
        return self.styles[name]

    def partners(self, name: str) -> list[str]:
        """The other paintings of the style's file of several (its own, or the first that holds it too): what it can
        be blended with."""
        self.get(name)
        return [other for other in self.homes.get(name, (None, []))[1] if other != name]

    def stylizer(self, name: str, blend: tuple[str, float] | None = None):
        """The style's Stylizer, loaded on first use and kept; with `blend` (another painting of its file and that
        painting's weight, from 0 to 1), the blend's, the last KEPT_BLENDS of them kept."""
        from ..inference import Stylizer

        style = self.get(name)
        if blend is not None and blend[1] > 0:
            other, weight = blend
            if other not in self.partners(name):
                raise UserError(f"{other!r} is not a painting of {name}'s file: it blends with "
                                f"{', '.join(self.partners(name)) or 'none'}")
            check_fraction(weight, "a blend's weight")
            spec = f"{name}:{1 - weight:g},{other}:{weight:g}"
            with self.blends_lock:
                if spec not in self.blends:
                    self.blends[spec] = Stylizer.from_style(self.homes[name][0], self.device, self.precision, spec)
                    while len(self.blends) > KEPT_BLENDS:
                        self.blends.pop(next(iter(self.blends)))
                return self.blends[spec]
        with style.lock:
            if style.stylizer is None:
                style.stylizer = Stylizer.from_style(style.path, self.device, self.precision, style.painting)
        return style.stylizer

    def thumbnail(self, name: str, size: int = 192) -> bytes:
        """A small JPEG of the style's painting; where the painting is not on this machine, the style applied to a
        preview photo instead."""
        from PIL import Image

        from .. import ASSETS
        from ..images import encode_image, load_image
        from ..style import painting_images

        style = self.get(name)
        if style.thumbnail is None:
            first = next(iter(painting_images(style.meta)), None)
            if first is not None and Path(first).is_file():
                image = load_image(first, "style image")
            else:
                photo = load_image(ASSETS / "preview" / "chelsea.jpg")
                photo.thumbnail((size, size), Image.Resampling.LANCZOS)
                image = self.stylizer(name).stylize_pil(photo)
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            style.thumbnail = encode_image(image, "JPEG")
        return style.thumbnail
