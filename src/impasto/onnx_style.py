"""A style as an ONNX model, for other runtimes and languages, and for a CPU stylize.py that starts without torch
(pip install 'impasto[onnx]').

The model is the whole of a stylization: the network, the colour choice and the strength, with dynamic batch, height
and width. Inputs: `image`, float32 (N, 3, H, W) RGB in [0, 1], H and W at least 32; `strength`, float32 (1,), from
0 (the photo) to 1 (the full style); `keep_colors`, float32 (1,), 1 to keep the photo's colours, else 0. Output:
`stylized`, float32 (N, 3, H, W) in [0, 1]. A file of several paintings has one input more, `style`, float32
(paintings,), their weights (one-hot for one painting, summing to 1 for a blend). The style's metadata is in the
model's metadata_props (format, format_version, meta), as in a .safetensors style.

Exporting needs torch; running an exported style needs only onnxruntime, NumPy and Pillow, which import in a tenth
of the time torch takes, so that a photo is stylized within a second or two of the command's start.
"""

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import refuse_overwrite, write_atomic
from .formats import STYLE_FORMAT, STYLE_FORMAT_VERSION
from .lookup import painting_names, parse_mix
from .memory import free_host_memory, size_that_fits, whole_pass_bytes

SUFFIX = ".onnx"
OPSET = 17  # InstanceNormalization and reflect Pad are in every runtime that reads opset 17
MIN_SIZE = 32  # TransformerNet's min_size() out of training: smaller images are padded up to it, as it does itself


def _import(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise UserError(f"ONNX styles need {name}: pip install 'impasto[onnx]'") from None


def export_onnx(style: str | os.PathLike, target: str | os.PathLike, overwrite: bool = False,
                painting: str | None = None) -> Path:
    """Write `style` (a .safetensors style) as an ONNX model at `target`, atomically: all its paintings, or only
    `painting`."""
    onnx = _import("onnx")
    import torch

    from .color import mix_oklab, preserve_color
    from .style import extract, load_style

    target = Path(target).expanduser()
    if target.suffix != SUFFIX:
        raise UserError(f"the ONNX output {target} needs the {SUFFIX} suffix")
    refuse_overwrite(target, overwrite)
    net, meta = load_style(style)
    if painting is not None:
        net, meta = extract(net, meta, painting)

    class Stylization(torch.nn.Module):
        """Stylizer.finish after the network, with strength and colour choice as inputs."""

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image, strength, keep_colors, *style):
            for norm in self.net.norms() if style else ():  # the weights as an input: every norm mixes by them
                norm.mix = style[0]
            out = self.net(image)
            out = torch.where(keep_colors > 0.5, preserve_color(out, image), out).clamp(0, 1)
            return mix_oklab(out, image, strength)

    paintings = net.config.styles
    several = (torch.eye(paintings)[0],) if paintings > 1 else ()
    example = (torch.rand(1, 3, 256, 256), torch.ones(1), torch.zeros(1), *several)
    axes = {0: "batch", 2: "height", 3: "width"}

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the tracer's notes on the small-image branch and eval-mode norms
            warnings.simplefilter("ignore")
            torch.onnx.export(Stylization().eval(), example, tmp,
                              input_names=["image", "strength", "keep_colors"] + ["style"] * bool(several),
                              output_names=["stylized"], dynamic_axes={"image": axes, "stylized": axes},
                              opset_version=OPSET, dynamo=False)
        model = onnx.load(tmp)
        for key, value in (("format", STYLE_FORMAT), ("format_version", str(STYLE_FORMAT_VERSION)),
                           ("meta", json.dumps(meta, sort_keys=True))):
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, tmp)

    return write_atomic(target, write)


class OnnxStyle:
    """An exported style run by onnxruntime on the CPU, with its colour choice and strength: what stylize.py runs
    for an .onnx --style (images only; videos take the .safetensors style)."""

    def __init__(self, path: str | os.PathLike, keep_colors: bool = False, strength: float = 1.0,
                 style: str | None = None):
        ort = _import("onnxruntime")
        self.np = _import("numpy")
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"ONNX style {path} does not exist: export one with impasto-export")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for foreign or damaged files
            raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        inputs = {i.name for i in self.session.get_inputs()}
        if props.get("format") != STYLE_FORMAT or inputs - {"style"} != {"image", "strength", "keep_colors"}:
            raise UserError(f"{path} is not an impasto style: export one with impasto-export")
        self.meta: dict[str, Any] = json.loads(props["meta"])
        names = painting_names(self.meta)
        if len(names) > 1 and style is None:
            raise UserError(f"{path} holds {len(names)} paintings: pass --painting NAME, one of {', '.join(names)}, "
                            f"or a blend such as {names[0]}:0.5,{names[1]}:0.5")
        self.mix = parse_mix(style, names) if style else None
        self.several = "style" in inputs  # the export of a file of several takes the paintings' weights
        if self.several:
            self.meta = {**self.meta, "style": style}
        self.keep_colors, self.strength = keep_colors, strength

    def run(self, batch, strength: float = 1.0, keep_colors: bool = False):
        """(N, 3, H, W) float32 in [0, 1] -> the same shape, stylized, as NumPy arrays."""
        np = self.np
        h, w = batch.shape[-2:]
        if min(h, w) < MIN_SIZE:
            padded = np.pad(batch, ((0, 0), (0, 0), (0, max(0, MIN_SIZE - h)), (0, max(0, MIN_SIZE - w))), "edge")
            return self.run(padded, strength, keep_colors)[..., :h, :w]
        (out,) = self.session.run(None, {"image": np.ascontiguousarray(batch, dtype=np.float32),
                                         "strength": np.array([strength], np.float32),
                                         "keep_colors": np.array([float(keep_colors)], np.float32),
                                         **({"style": np.array(self.mix, np.float32)} if self.several else {})})
        return out

    def describe(self) -> str:
        return "cpu, onnxruntime"

    def plan(self, src, width: int, height: int, tile: int | None = None) -> None:
        """A whole pass, or a UserError where it cannot fit (an ONNX style has no tiles)."""
        if tile is not None:
            raise UserError("an ONNX style runs whole passes only: use the .safetensors style for --tile")
        free = free_host_memory()
        need = whole_pass_bytes(self.meta["network"]["widths"][0]) * width * height
        if free is not None and need > free:
            fits = size_that_fits(width, height, need, free)
            raise UserError(f"{src} at {width}x{height} needs about {need / 2**30:.1f} GiB in one pass and an ONNX "
                            f"style cannot run in tiles: pass --size {fits} or less, or use the .safetensors style")

    def stylize_pil(self, rgb, tile: int | None = None):
        """A PIL RGB image stylized, at its own size."""
        from PIL import Image

        np = self.np
        batch = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None] / 255
        out = self.run(batch, self.strength, self.keep_colors)[0]
        return Image.fromarray((out.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8), "RGB")
