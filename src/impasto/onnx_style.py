"""A style as an ONNX model, for other runtimes and languages: exported from a `.safetensors` style with dynamic
batch, height and width, and run here on the CPU through onnxruntime (pip install 'impasto[onnx]').

The model takes `image`, float32 (N, 3, H, W) RGB in [0, 1], and gives `stylized`, the same shape (clamp it to
[0, 1] for display); H and W at least 16. The style's metadata (checkpoint.FORMAT and the JSON `meta`) is in the
model's metadata_props.
"""

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import FORMAT, FORMAT_VERSION, load_style
from .errors import UserError
from .files import write_atomic
from .transformer import TransformerConfig, TransformerNet

SUFFIX = ".onnx"
OPSET = 17  # InstanceNormalization and reflect Pad are in every runtime that reads opset 17


def _import(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise UserError(f"ONNX styles need {name}: pip install 'impasto[onnx]'") from None


def export_onnx(style: str | os.PathLike, target: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `style` (a .safetensors style) as an ONNX model at `target`, atomically."""
    onnx = _import("onnx")
    target = Path(target).expanduser()
    if target.suffix != SUFFIX:
        raise UserError(f"the ONNX output {target} needs the {SUFFIX} suffix")
    if target.exists() and not overwrite:
        raise UserError(f"{target} exists: pass --overwrite to replace it, or another output path")
    net, meta = load_style(style)
    example = torch.rand(1, 3, 256, 256)
    axes = {0: "batch", 2: "height", 3: "width"}

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the tracer's notes on the small-image branch and eval-mode norms
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), tmp, input_names=["image"], output_names=["stylized"],
                              dynamic_axes={"image": axes, "stylized": axes}, opset_version=OPSET, dynamo=False)
        model = onnx.load(tmp)
        for key, value in (("format", FORMAT), ("format_version", str(FORMAT_VERSION)),
                           ("meta", json.dumps(meta, sort_keys=True))):
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, tmp)

    return write_atomic(target, write)


class OnnxStyle:
    """An exported style run by onnxruntime on the CPU; called like the TransformerNet it came from."""

    def __init__(self, path: str | os.PathLike):
        ort = _import("onnxruntime")
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"ONNX style {path} does not exist: export one with scripts/export_onnx.py")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for foreign or damaged files
            raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get("format") != FORMAT:
            raise UserError(f"{path} is not an impasto style: export one with scripts/export_onnx.py")
        self.meta: dict[str, Any] = json.loads(props["meta"])
        self.config = TransformerConfig.from_dict(self.meta["network"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        small = TransformerNet.MIN_SIZE
        if min(h, w) < small:  # as TransformerNet.forward does; the exported graph has only its usual path
            padded = F.pad(batch, (0, max(0, small - w), 0, max(0, small - h)), mode="replicate")
            return self(padded)[..., :h, :w]
        (out,) = self.session.run(None, {"image": batch.detach().float().cpu().contiguous().numpy()})
        return torch.from_numpy(out)
