"""The per-style checkpoint format, defined once: training exports through it, stylize.py imports through it.

A `.safetensors` file holding the transformer's weights only (no loss network) and, in the header's metadata,
`format = impasto-style`, `format_version`, and a JSON `meta` entry: style name, network config, loss config,
steps, loss-network source, impasto version. safetensors holds tensors and strings only: loading it never
unpickles anything.
"""

import json
import os
from pathlib import Path
from typing import Any

import torch

from . import ASSETS, __version__
from .errors import UserError
from .files import write_atomic
from .formats import STYLE_FORMAT, STYLE_FORMAT_VERSION
from .transformer import TransformerConfig, TransformerNet

SUFFIX = ".safetensors"


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors holding a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def save_style(path: str | os.PathLike, net: TransformerNet, meta: dict[str, Any]) -> Path:
    """Write the transformer and its metadata atomically (a temporary file, then a rename). Weights that are not
    finite (a diverged run) are refused: such a style would paint every photo black or NaN."""
    from safetensors.torch import save_file

    full_meta = {**meta, "network": net.config.to_dict(), "impasto_version": __version__}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    broken = non_finite(tensors)
    if broken:
        raise UserError(f"not writing {path}: {len(broken)} of the network's {len(tensors)} weight tensors are not "
                        f"finite (the first: {broken[0]}); the training run diverged")
    metadata = {"format": STYLE_FORMAT, "format_version": str(STYLE_FORMAT_VERSION),
                "meta": json.dumps(full_meta, sort_keys=True)}
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's metadata, or a UserError naming the file if it is not an impasto style checkpoint."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: train a style first or pass an existing --ckpt")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception:  # safetensors raises several types for foreign files; all mean "not ours"
        header = {}
    if header.get("format") != STYLE_FORMAT:
        raise UserError(f"{path} is not an impasto style checkpoint: pass a checkpoints/<style>.safetensors "
                        "file exported by train.py")
    if int(header.get("format_version", 0)) > STYLE_FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer impasto (format {header['format_version']}): upgrade impasto")
    return json.loads(header["meta"])


def load_style(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[TransformerNet, dict[str, Any]]:
    """Rebuild the transformer from a checkpoint alone: no training config needed."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    net = TransformerNet(TransformerConfig.from_dict(meta["network"]))
    weights = load_file(str(Path(path).expanduser()), device=str(device))
    broken = non_finite(weights)
    if broken:
        raise UserError(f"{path} holds weights that are not finite ({len(broken)} tensors, the first: {broken[0]}): "
                        "it comes from a diverged training run; retrain it or use another style")
    net.load_state_dict(weights)
    return net.to(device).eval(), meta

def load_weights_into(transformer: TransformerNet, path: str | os.PathLike) -> None:
    """Start from an exported style's weights (fine-tuning); its network must be the one `model` builds."""
    source, _ = load_style(path)
    if source.config != transformer.config:
        raise UserError(f"init_from {path} holds a network with {source.config.to_dict()}, but model builds "
                        f"{transformer.config.to_dict()}: set model.widths and model.residual_blocks to match")
    transformer.load_state_dict(source.state_dict())


ASSET_PREFIX = "asset:"  # a style image shipped with impasto, named relative to its assets: the same on every machine


def asset_name(path: str) -> str:
    """`asset:styles/NAME.jpg` for an image inside impasto's assets; any other path as it is."""
    try:
        return ASSET_PREFIX + Path(path).resolve().relative_to(ASSETS.resolve()).as_posix()
    except ValueError:
        return path


def asset_path(name: str) -> str:
    """The file that asset_name named, on this machine."""
    return str(ASSETS / name.removeprefix(ASSET_PREFIX)) if name.startswith(ASSET_PREFIX) else name


def style_meta(hparams: dict, steps: int) -> dict:
    """The export's metadata, from the run's resolved config (as saved in its hyperparameters)."""
    images = hparams["style"]["image"]
    count = 1 if isinstance(images, str) else len(images)
    blend = hparams["style"].get("blend") or [1.0] * count
    return {
        "style": hparams["style"]["name"],
        "style_image": asset_name(images) if isinstance(images, str) else [asset_name(i) for i in images],
        "style_size": hparams["style"]["size"],
        "style_blend": [w / sum(blend) for w in blend],
        "steps": steps,
        "init_from": hparams.get("init_from"),
        "loss": hparams["loss"],
        "loss_network": hparams["loss"]["network"]["weights"],
        "data": hparams["data_description"],
        "image_size": hparams["data"]["size"],
        "batch_size": hparams["data"]["batch_size"],
    }


def export_lightning_checkpoint(ckpt: str | Path, target: str | Path, overwrite: bool = False) -> Path:
    """Export the style in a Lightning checkpoint of train.py (an interrupted run's last.ckpt, say)."""
    ckpt, target = Path(ckpt).expanduser(), Path(target).expanduser()
    if not ckpt.is_file():
        raise UserError(f"Lightning checkpoint {ckpt} does not exist: look in outputs/<style>/<run>/checkpoints/")
    if target.exists() and not overwrite:
        raise UserError(f"{target} exists: pass --overwrite to replace it, or another output path")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        hparams, weights = state["hyper_parameters"], state["state_dict"]
        transformer = TransformerNet(TransformerConfig.from_dict(hparams["model"]))
        transformer.load_state_dict({k.removeprefix("transformer."): v for k, v in weights.items()
                                     if k.startswith("transformer.")})
    except Exception as e:  # anything unreadable or foreign here is the user's file to fix
        raise UserError(f"{ckpt} is not a train.py checkpoint ({type(e).__name__}): pass "
                        "outputs/<style>/<run>/checkpoints/last.ckpt") from None
    return save_style(target, transformer, style_meta(hparams, state["global_step"]))
