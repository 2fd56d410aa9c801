"""A style by its name or file: the shipped and the trained styles, and the paintings a file holds, read from the
files' headers alone (no torch), so that a command line finds its style before torch loads."""

import json
import os
from pathlib import Path

from . import ASSETS
from .errors import UserError
from .formats import STYLE_FORMAT

SHIPPED_STYLES = ASSETS / "styles"  # each shipped style's network beside its painting
MODELS = ("full", "thin")  # the shipped networks: model=full's, and model=thin's (for CPUs) in a folder of their own
TRAINED_STYLES = Path("checkpoints")  # where train.py exports its styles, in the working folder (paths.checkpoint_dir)


def header_meta(path: Path, whole: bool = True) -> dict:
    """A .safetensors style's metadata read from its header alone (no torch), or {} for any other file; with
    `whole`, {} too for a file shorter than its header says (a cut-off copy)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 1 << 24:
                return {}
            header = json.loads(f.read(size))
            meta = header.get("__metadata__") or {}
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if whole and os.path.getsize(path) < 8 + size + end:
                return {}
        return json.loads(meta["meta"]) if meta.get("format") == STYLE_FORMAT else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def painting_names(meta: dict) -> list[str]:
    """The paintings a style file holds, in its network's order."""
    return [p["name"] for p in meta["paintings"]] if "paintings" in meta else [meta["style"]]


def file_paintings(path: Path) -> list[str]:
    """The paintings a style file holds, from its header alone; [] for a file that is not a whole style."""
    meta = header_meta(path)
    return painting_names(meta) if meta else []


def images_seen(meta: dict) -> int:
    """Training images the file's network has seen (files from before the count: steps times batch)."""
    return int(meta.get("images", meta.get("steps", 0) * meta.get("batch_size", 0)))


def trained_images(meta: dict) -> int:
    """Training images behind the style `meta` describes: its painting's own (one painting of a file of several) or
    the whole file's. A file's `steps` are its last sitting's alone, so this is what says how far a style trained."""
    own = meta.get("painting_images")
    return int(own) if own is not None else images_seen(meta)


def shipped_folder(model: str = "full") -> Path:
    """Where the shipped styles of a model (MODELS) are."""
    if model not in MODELS:
        raise UserError(f"model is {' or '.join(MODELS)}, got {model!r}")
    return SHIPPED_STYLES if model == "full" else SHIPPED_STYLES / model


def shipped_styles(model: str = "full") -> list[str]:
    """Every painting shipped with impasto, by name: a file of one painting, or each painting of a file of several."""
    names = []
    for path in sorted(shipped_folder(model).glob("*.safetensors")):
        meta = header_meta(path)
        names += painting_names(meta) if meta else [path.stem]
    return sorted(set(names))


def find_style(arg: str, model: str = "full") -> tuple[Path, str | None]:
    """A style by its file, or by its name alone: checkpoints/NAME.safetensors in the working folder (what train.py
    exported there), else the style shipped with impasto (`model`'s), so that an installed package stylizes from
    anywhere. A name may also be one painting of a file of several, or a blend of a file's paintings by weight
    (starry_night:0.7,the_scream:0.3): then the painting, or the blend, comes back with the file (else None)."""
    shipped = shipped_folder(model)
    path = Path(arg).expanduser()
    if not path.exists() and ("," in arg or ":" in arg) and len(path.parts) == 1:  # a blend of paintings
        return blend_file(arg, model), arg
    if path.exists() or path.suffix or len(path.parts) != 1:
        return path, None
    for candidate in (TRAINED_STYLES / f"{arg}.safetensors", shipped / f"{arg}.safetensors"):
        if candidate.is_file():  # a file of several named after one of them (a new painting's export) paints it
            meta = header_meta(candidate)
            return candidate, arg if "paintings" in meta and arg in painting_names(meta) else None
    for folder in (TRAINED_STYLES, shipped):
        for candidate in sorted(folder.glob("*.safetensors")):
            meta = header_meta(candidate)
            if "paintings" in meta and arg in painting_names(meta):
                return candidate, arg
    raise UserError(f"no style named {arg!r} in checkpoints/ or among the shipped styles "
                    f"({', '.join(shipped_styles(model))}): pass a style's name or its .safetensors file")


def blend_file(spec: str, model: str = "full") -> Path:
    """The file a blend's paintings are mixed in: its first painting's, else the first file that holds them all (a
    painting may also have a file of its own, which cannot blend)."""
    names = {part.partition(":")[0].strip() for part in spec.split(",")}
    first = find_style(spec.split(",")[0].partition(":")[0].strip(), model)[0]
    for candidate in (first, *sorted(TRAINED_STYLES.glob("*.safetensors")),
                      *sorted(shipped_folder(model).glob("*.safetensors"))):
        if names <= set(file_paintings(candidate)):
            return candidate
    raise UserError(f"{spec}: no style file holds all of {', '.join(sorted(names))}; a blend mixes one file's "
                    "paintings")


def parse_mix(spec: str, names: list[str]) -> list[float]:
    """`name` or `a:0.7,b:0.3` (weights, normalised to sum 1) as one weight per painting of `names`."""
    mix = [0.0] * len(names)
    for part in spec.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in names:
            raise UserError(f"{spec}: no painting {name!r} in this file; it holds {', '.join(names)}")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"{spec}: the weight of {name} is not a number ({weight!r})") from None
        if not 0 <= value < float("inf"):
            raise UserError(f"{spec}: weights are 0 or more and finite, got {weight} for {name}")
        mix[names.index(name)] += value
    total = sum(mix)
    if total <= 0:
        raise UserError(f"{spec}: the weights sum to 0")
    return [w / total for w in mix]
