"""Johnson et al.'s image transformation network: a residual encoder-decoder, one forward pass per image."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransformerConfig:
    """Everything needed to rebuild the network; stored in every exported checkpoint."""

    widths: tuple[int, int, int] = (32, 64, 128)  # channels at full, 1/2 and 1/4 resolution
    residual_blocks: int = 5
    # The two stride-2 convolutions' kernel. 3 is Johnson et al.'s: its samples sit on the even pixels, so it pads
    # the top and left borders but never the bottom and right ones. 4 centres each sample between two pixels, the
    # same on every side. A file without the key is a 3.
    down_kernel: int = 3
    # Paintings the network holds (Dumoulin et al.'s conditional instance norm): every convolution is shared, and
    # each painting has its own norm scale and shift. A file without the key holds one.
    styles: int = 1

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "residual_blocks": self.residual_blocks, "down_kernel": self.down_kernel,
                "styles": self.styles}

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerConfig":
        d = dict(d)
        d["widths"] = tuple(int(w) for w in d["widths"])
        if len(d["widths"]) != 3:
            raise ValueError(f"widths needs 3 entries, got {d['widths']}")
        d["down_kernel"] = int(d.get("down_kernel", 3))
        if d["down_kernel"] not in (3, 4):
            raise ValueError(f"down_kernel is 3 or 4, got {d['down_kernel']}")
        d["styles"] = int(d.get("styles", 1))
        if d["styles"] < 1:
            raise ValueError(f"styles is 1 or more, got {d['styles']}")
        return cls(**{k: d[k] for k in asdict(cls()) if k in d})


class StyleNorm(nn.Module):
    """Instance norm with one scale and shift per painting, applied as `mix` weighs them: a one-hot mix is one
    painting, any other a blend (Dumoulin et al. 2017). One painting keeps the plain norm's (C,) parameters, so its
    files are those of a plain network; several hold (styles, C)."""

    def __init__(self, channels: int, styles: int = 1, eps: float = 1e-5):
        super().__init__()
        shape = (channels,) if styles == 1 else (styles, channels)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.eps = eps
        self.register_buffer("mix", torch.eye(styles)[0], persistent=False)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (C,) scale and shift of the current mix."""
        if self.weight.dim() == 1:
            return self.weight, self.bias
        mix = self.mix.to(self.weight.dtype)
        return mix @ self.weight, mix @ self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.affine()
        y = F.instance_norm(x, weight=weight, bias=bias, eps=self.eps)
        # instance_norm answers in the default layout whatever it is given; handing the next convolution channels_last
        # back costs one copy where it would otherwise reorder its input and its gradient (docs/experiments.md)
        last = torch.channels_last
        return y.contiguous(memory_format=last) if x.is_contiguous(memory_format=last) else y


class _InputGradByConv(torch.autograd.Function):
    """A stride-1, unpadded conv whose input gradient is a forward conv of the output gradient with the kernel
    flipped and its channels swapped: the same sums as the convolution's own backward, in another order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        kh, kw = weight.shape[-2:]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.conv2d(grad, weight.flip(2, 3).transpose(0, 1), padding=(kh - 1, kw - 1))
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, [weight.shape[0]] if ctx.bias else None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
        return grad_x, grad_w, grad_b


def pad(x: torch.Tensor, pads: Sequence[int], mode: str) -> torch.Tensor:
    """F.pad in x's own dtype. CPU autocast pads in fp32: the map cast up, padded and cast back down for the next
    conv, and the same two casts around the pad's backward, for a copy of values."""
    with torch.autocast(x.device.type, enabled=False):
        return F.pad(x, pads, mode=mode)


class PaddedConv(nn.Conv2d):
    """A conv whose reflection (or other) padding runs in its input's dtype (`pad`)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode == "zeros":
            return super()._conv_forward(x, weight, bias)
        x = pad(x, self._reversed_padding_repeated_twice, self.padding_mode)
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


class HeadConv(PaddedConv):
    """The conv to RGB. oneDNN takes the input gradient of a conv with 3 outputs on a slow GEMM path, so a training
    step on the CPU takes it as a forward conv instead (docs/experiments.md, "The head's input gradient")."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (x.device.type != "cpu" or not x.requires_grad or not torch.is_grad_enabled() or x.dtype != weight.dtype
                or torch.is_autocast_enabled("cpu") or self.stride != (1, 1) or self.dilation != (1, 1)
                or self.groups != 1):
            return super()._conv_forward(x, weight, bias)
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        padded = pad(x, self._reversed_padding_repeated_twice, mode)
        return _InputGradByConv.apply(padded, weight, bias)


class ConvLayer(nn.Sequential):
    """Reflection-padded conv, optional instance norm (one scale and shift per painting) and ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, norm: bool = True, relu: bool = True,
                 styles: int = 1, conv: type[nn.Conv2d] = PaddedConv):
        layers: list[nn.Module] = [
            conv(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2, padding_mode="reflect", bias=not norm)
        ]
        if norm:
            layers.append(StyleNorm(c_out, styles))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, styles: int = 1):
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3, styles=styles),
                                  ConvLayer(channels, channels, 3, relu=False, styles=styles))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """RGB in [0, 1] -> stylized RGB (roughly [0, 1]; clamp for display). Keeps H×W for any size, odd ones too."""

    def __init__(self, config: TransformerConfig = TransformerConfig()):
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        n = config.styles
        self.stem = ConvLayer(3, w1, 9, styles=n)
        self.down1 = ConvLayer(w1, w2, config.down_kernel, stride=2, styles=n)
        self.down2 = ConvLayer(w2, w3, config.down_kernel, stride=2, styles=n)
        self.residuals = nn.Sequential(*[ResidualBlock(w3, n) for _ in range(config.residual_blocks)])
        # Nearest-neighbour upsampling then a conv, not a transposed conv: no checkerboard artefacts.
        self.up1 = ConvLayer(w3, w2, 3, styles=n)
        self.up2 = ConvLayer(w2, w1, 3, styles=n)
        self.head = ConvLayer(w1, 3, 9, norm=False, relu=False, conv=HeadConv)

    def norms(self) -> list[StyleNorm]:
        return [m for m in self.modules() if isinstance(m, StyleNorm)]

    def norm_keys(self) -> set[str]:
        """The state-dict keys of every norm's scale and shift: a painting's own parameters."""
        return {f"{name}.{p}" for name, m in self.named_modules() if isinstance(m, StyleNorm)
                for p in ("weight", "bias")}

    def select(self, mix: torch.Tensor | int) -> None:
        """Paint with one painting (its index) or a blend (`mix`: one weight per painting, summing to 1)."""
        n = self.config.styles
        if isinstance(mix, int):  # made where the norms are: training selects every step, without a host copy
            if not 0 <= mix < n:
                raise IndexError(f"painting {mix} of a network holding {n}")
            mix = torch.eye(n, device=self.norms()[0].mix.device)[mix]
        if mix.shape != (n,):
            raise ValueError(f"a mix needs {n} weights, got shape {tuple(mix.shape)}")
        for norm in self.norms():
            norm.mix.copy_(mix)

    MIN_SIZE = 16  # reflection padding needs every feature map wider than its pad
    # Out of training, a photo is reflected out by this many pixels on every side and the output cut back: its border
    # pixels then see what interior ones see, and no line runs along its edges (docs/experiments.md, "The edge margin").
    # Set it to 0 on a network to see its own borders.
    edge = 16

    def min_size(self) -> int:
        """The smallest side a pass takes as it is; smaller inputs are padded up to it, and the output cut back."""
        return self.MIN_SIZE + (0 if self.training else self.edge)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < (least := self.min_size()):
            padded = F.pad(x, (0, max(0, least - w), 0, max(0, least - h)), mode="replicate")
            return self(padded)[..., :h, :w]
        pads = self.pads(h, w)
        # A no-op pad where there is nothing to add, so that an ONNX trace keeps every size.
        return self.unpad(self.layers(F.pad(x, pads, mode="reflect")), pads, h, w)

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        """F.pad's (left, right, top, bottom) for a pass: the edge margin out of training, and for the centred grid
        a reflection out to a multiple of 4 at the bottom and right (it halves a side exactly only then; Johnson's
        grid takes any size)."""
        m = 0 if self.training else self.edge
        if self.config.down_kernel != 4:
            return m, m, m, m
        return m, m + (4 - width % 4) % 4, m, m + (4 - height % 4) % 4

    @staticmethod
    def unpad(y: torch.Tensor, pads: tuple[int, int, int, int], height: int, width: int) -> torch.Tensor:
        """A padded pass's output cut back to the input's `height` × `width`."""
        left, _, top, _ = pads
        return y[..., top:top + height, left:left + width]

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        # Only the encoder's sizes are kept, not its activations: at full size those are the biggest tensors.
        y = self.stem(x)
        full = y.shape[-2:]
        y = self.down1(y)
        half = y.shape[-2:]
        y = self.residuals(self.down2(y))
        # Upsample to the encoder's exact sizes so odd inputs come back at their own H×W.
        y = self.up1(F.interpolate(y, size=half, mode="nearest"))
        y = self.up2(F.interpolate(y, size=full, mode="nearest"))
        return self.head(y)
