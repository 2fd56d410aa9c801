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

from . import __version__
from .errors import UserError
from .files import write_atomic
from .transformer import TransformerConfig, TransformerNet

FORMAT = "impasto-style"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"


def save_style(path: str | os.PathLike, net: TransformerNet, meta: dict[str, Any]) -> Path:
    """Write the transformer and its metadata atomically (a temporary file, then a rename)."""
    from safetensors.torch import save_file

    full_meta = {**meta, "network": net.config.to_dict(), "impasto_version": __version__}
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(full_meta, sort_keys=True)}
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
    if header.get("format") != FORMAT:
        raise UserError(f"{path} is not an impasto style checkpoint: pass a checkpoints/<style>.safetensors "
                        "file exported by train.py")
    if int(header.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer impasto (format {header['format_version']}): upgrade impasto")
    return json.loads(header["meta"])


def load_style(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[TransformerNet, dict[str, Any]]:
    """Rebuild the transformer from a checkpoint alone: no training config needed."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    net = TransformerNet(TransformerConfig.from_dict(meta["network"]))
    net.load_state_dict(load_file(str(Path(path).expanduser()), device=str(device)))
    return net.to(device).eval(), meta
