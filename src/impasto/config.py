"""Glue between the Hydra configs and the code: the `asset` and `cache` resolvers, style images, `style=NAME` for new
paintings, sweeps."""

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import ASSETS
from .errors import UserError
from .images import load_image, resize_long_side, to_tensor
from .runtime import cache_dir

CONF_DIR = Path(__file__).resolve().parent / "conf"

# ${asset:styles/starry_night.jpg} -> the file shipped inside the package, wherever it is installed.
OmegaConf.register_new_resolver("asset", lambda rel: str(ASSETS / rel), replace=True)
# ${cache:sittings} -> impasto's folder in the user's cache, the one the bf16 probe keeps its answer in.
OmegaConf.register_new_resolver("cache", lambda rel: str(cache_dir() / rel), replace=True)


def available_styles(conf_dir: Path = CONF_DIR) -> list[str]:
    return sorted(p.stem for p in (conf_dir / "style").glob("*.yaml") if p.stem != "custom")


def rewrite_style_override(argv: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """`style=NAME style.image=PATH` for a painting with no YAML becomes `style=custom style.name=NAME ...`.

    An unknown `style=NAME` without `style.image` is an error that lists the styles there are.
    """
    names = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("style=")]
    if names and names[-1].startswith("[") and names[-1].endswith("]"):
        return rewrite_styles_override(argv, names[-1][1:-1].split(","), conf_dir)
    if not names or (conf_dir / "style" / f"{names[-1]}.yaml").exists():
        return argv
    name = names[-1]
    if "," in name:  # a sweep (-m style=a,b): every style in it must have its YAML
        unknown = [n for n in name.split(",") if not (conf_dir / "style" / f"{n}.yaml").exists()]
        if unknown:
            raise UserError(f"unknown style(s) {', '.join(unknown)} in the sweep: available styles are "
                            f"{', '.join(available_styles(conf_dir))}")
        return argv
    if not any(a.startswith("style.image=") for a in argv[1:]):
        raise UserError(f"unknown style {name!r}: available styles are {', '.join(available_styles(conf_dir))}; "
                        f"or train any painting with style={name} style.image=PATH")
    return [a if not a.startswith("style=") else "style=custom" for a in argv] + [f"style.name={name}"]


def rewrite_styles_override(argv: list[str], names: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """`style=[a,b,...]`, several paintings in one network, becomes `style=a styles=[a,b,...]`: `style` keeps the
    first painting's settings (style.size applies to every painting), `styles` names them all, and the export is
    `paintings` unless export.name says otherwise."""
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if not (conf_dir / "style" / f"{n}.yaml").exists()]
    if unknown or not names:
        raise UserError(f"unknown style(s) {', '.join(unknown) or '(none given)'} in style=[...]: available styles "
                        f"are {', '.join(available_styles(conf_dir))}")
    if len(set(names)) != len(names):
        raise UserError(f"style=[{','.join(names)}] names a painting twice")
    rest = [a for a in argv if not a.startswith("style=")]
    name = [] if any(a.startswith("export.name=") for a in argv) else ["export.name=paintings"]
    return rest + [f"style={names[0]}", f"styles=[{','.join(names)}]", *name]


def style_configs(cfg) -> list:
    """The style config of every painting a run trains: `styles` (several, each from conf/style/NAME.yaml, at
    style.size), else `style` alone."""
    if not cfg.get("styles"):
        return [cfg.style]
    configs = []
    for name in cfg.styles:
        path = CONF_DIR / "style" / f"{name}.yaml"
        if not path.exists():
            raise UserError(f"unknown style {name!r} in styles: available styles are {', '.join(available_styles())}")
        style = OmegaConf.load(path)
        style.size = cfg.style.size
        configs.append(style)
    return configs


def load_style_images(style_cfg) -> tuple[list[torch.Tensor], list[float]]:
    """The style image(s) as (1, 3, H, W) tensors at `style.size` (long side), and their normalised blend weights."""
    if OmegaConf.is_missing(style_cfg, "image"):
        raise UserError("no style image: pass style.image=PATH")
    images = style_cfg.image
    images = [images] if isinstance(images, str) else list(images)
    blend = style_cfg.get("blend")
    blend = [1.0] * len(images) if blend is None else [float(w) for w in blend]
    if len(blend) != len(images):
        raise UserError(f"style.blend has {len(blend)} weights for {len(images)} style images: give one per image")
    if any(w < 0 for w in blend) or sum(blend) <= 0:
        raise UserError(f"style.blend weights must be non-negative with a positive sum, got {blend}")
    tensors = [to_tensor(resize_long_side(load_image(p, "style image"), style_cfg.size)).unsqueeze(0)
               for p in images]
    return tensors, [w / sum(blend) for w in blend]


def sweep_suffix(argv: list[str] | None = None) -> str:
    """`-N` (the job's number) in a Hydra sweep over anything but `style`, whose jobs would otherwise all export
    under one name; nothing elsewhere (a sweep over styles names each export after its style)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    swept = [a.split("=", 1)[0] for a in (argv or sys.argv)[1:] if "=" in a and is_sweep(a.split("=", 1)[1])]
    return f"-{HydraConfig.get().job.num}" if any(key.lstrip("+~") != "style" for key in swept) else ""


def is_sweep(value: str) -> bool:
    """A Hydra override value that sweeps: a comma outside brackets (`1,2`), or a sweep function (`range(...)`)."""
    if value.startswith(("range(", "choice(", "glob(", "interval(")):
        return True
    depth = 0
    for char in value:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            return True
    return False
