"""Gatys et al.'s perceptual loss: content + Gram-matrix style + total variation, through a frozen loss network.

Every term is normalised so that a weight means the same thing at every image size and batch size, and for every
loss network (Caffe VGG19 activations are ~50x torchvision's, and layers differ by 10^5 in raw Gram energy):
- content_l = mean (F_l(y) - F_l(c))² / mean F_l(c)²         (relative squared error of one image's features)
- gram(F)   = F Fᵀ / (C·H·W)                                 (Johnson et al., eq. 3)
- style_l   = ‖gram(F_l(y)) - G_l‖² / ‖G_l‖²                 (relative squared Frobenius error; G_l the style's Gram)
- tv        = mean (y[i+1, j] - y[i, j])² + mean (y[i, j+1] - y[i, j])², on RGB in [0, 1]
So content_l and style_l are 0 for a perfect match and about 1 for an unrelated image.
Each term is averaged over the batch. total = content_weight·Σ w_l content_l + style_weight·Σ w_l style_l
+ tv_weight·tv. Each term comes out in fp32 under autocast; its sums over the maps run on the maps' own dtype with
fp32 accumulation, not on fp32 copies of them (docs/experiments.md, "The loss's sums in bf16").
"""

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .vgg import LossNetwork


def _fp32(device: torch.device):
    return torch.autocast(device.type, enabled=False)


class _Gram(torch.autograd.Function):
    """F Fᵀ / n in fp32 for F of shape (B, C, N) in fp32 or bf16 (`gram` widens fp16), and its gradient
    (g + gᵀ) F / n, each one product in F's dtype. The forward product accumulates in fp32 and rounds once (bf16: 2⁻⁹
    of an entry). Autograd's own gradient is two products and the sum of one with the other's transpose, a strided
    pass over a (B, C, N) tensor that cost more than the products (docs/experiments.md, "The Gram's gradient"). With
    `rows`, F is (B, N, C), channels_last's own order, and the Gram is Fᵀ F."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, n: int, rows: bool) -> torch.Tensor:
        ctx.save_for_backward(f)
        ctx.n, ctx.rows = n, rows
        return (torch.bmm(f.transpose(1, 2), f) if rows else torch.bmm(f, f.transpose(1, 2))).float() / n

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (f,) = ctx.saved_tensors
        with _fp32(f.device):  # a bf16 F gets a bf16 gradient, as autocast's cast back would have made it
            both = ((g + g.transpose(1, 2)) / ctx.n).to(f.dtype)
            return (torch.bmm(f, both) if ctx.rows else torch.bmm(both, f)), None, None


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x, or x in fp32 where its dtype's range is too small for the sums below (fp16: a Gram entry overflows)."""
    return x.float() if x.dtype == torch.float16 else x


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), normalised by C·H·W, in fp32."""
    b, c, h, w = features.shape
    with _fp32(features.device):
        features = _wide(features)
        if features.is_contiguous(memory_format=torch.channels_last):  # read in place, not transposed
            return _Gram.apply(features.permute(0, 2, 3, 1).reshape(b, h * w, c), c * h * w, True)
        return _Gram.apply(features.reshape(b, c, h * w), c * h * w, False)


def _mean_square(x: torch.Tensor) -> torch.Tensor:
    """(B,) mean of squares per image, summed in fp32."""
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), dtype=torch.float32).square() / x[0].numel()


class _Content(torch.autograd.Function):
    """content_loss in one pass each way: d = output - target in the maps' dtype, and its gradient
    2·d / (B · n · mean target²), n a map's size, in the same dtype."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = output - target
        energy = _mean_square(target).clamp_min(1e-12)
        ctx.save_for_backward(d, energy)
        return (_mean_square(d) / energy).mean()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        d, energy = ctx.saved_tensors
        scale = 2 * g / (d.shape[0] * d[0].numel() * energy)
        return d * scale.to(d.dtype).view(-1, *[1] * (d.dim() - 1)), None


def content_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared error per image, averaged over the batch: a batch split between DDP processes gives the
    same loss, and so the same gradient, as the whole batch in one process. The target is a constant: no gradient
    reaches it."""
    with _fp32(output.device):
        output = _wide(output)
        return _Content.apply(output, target.to(output.dtype))


def gram_energy(target_gram: torch.Tensor) -> torch.Tensor:
    """‖G‖², style_loss's denominator: (B,) per target Gram, kept away from 0."""
    return target_gram.float().square().sum(dim=(1, 2)).clamp_min(1e-12)


def style_loss(output_gram: torch.Tensor, target_gram: torch.Tensor,
               energy: torch.Tensor | None = None) -> torch.Tensor:
    """Relative squared Frobenius distance per image, averaged over the batch; the target broadcasts.
    `energy`: gram_energy(target_gram), when the caller has it already."""
    with _fp32(output_gram.device):
        energy = gram_energy(target_gram) if energy is None else energy
        return ((output_gram - target_gram).square().sum(dim=(1, 2)) / energy).mean()


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    with _fp32(image.device):
        x = image.float()
        return (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., :, 1:] - x[..., :, :-1]).square().mean()


def stability_loss(stylized: torch.Tensor, stylized_noisy: torch.Tensor, noise_std: float) -> torch.Tensor:
    """How much input noise of std σ moves the output, as mean squared change / σ²: 1 for a network that passes
    the noise through unchanged, 0 for one that ignores it. Frame-to-frame noise is what makes video flicker."""
    with torch.autocast(stylized.device.type, enabled=False):
        return (stylized_noisy.float() - stylized.float()).square().mean() / noise_std**2


class PerceptualLoss(nn.Module):
    """Holds the loss network and the style's target Grams; returns every weighted term and the total."""

    def __init__(self, network: LossNetwork, content_layers: Mapping[str, float], style_layers: Mapping[str, float],
                 content_weight: float, style_weight: float, tv_weight: float):
        super().__init__()
        self.network = network
        self.content_layers = dict(content_layers)
        self.style_layers = dict(style_layers)
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        for name in self.style_layers:
            self.register_buffer(f"target_gram_{name}", None)
            # derived from the Gram, so not saved: computed once here instead of at every step
            self.register_buffer(f"target_energy_{name}", None, persistent=False)

    def weighted(self) -> bool:
        """Whether any term counts: with every weight 0 (a teacher alone) the loss is not computed at all."""
        return any((self.content_weight, self.style_weight, self.tv_weight))

    def target_gram(self, name: str) -> torch.Tensor:
        return getattr(self, f"target_gram_{name}")

    @torch.no_grad()
    def set_style(self, styles: Sequence[torch.Tensor], blend: Sequence[float] | None = None) -> None:
        """Target Grams from one or more (1, 3, H, W) style images, blended by `blend` (default: equal)."""
        self.set_styles([(styles, blend)])

    @torch.no_grad()
    def set_styles(self, paintings: Sequence[tuple[Sequence[torch.Tensor], Sequence[float] | None]]) -> None:
        """One target per painting, each from its images and their blend (forward's `style` picks one)."""
        grams: dict[str, list[torch.Tensor]] = {name: [] for name in self.style_layers}
        for styles, blend in paintings:
            blend = [1.0 / len(styles)] * len(styles) if blend is None else list(blend)
            mixed: dict[str, torch.Tensor] = {}
            for image, weight in zip(styles, blend):
                feats = self.network(image, list(self.style_layers))
                for name in self.style_layers:
                    mixed[name] = mixed.get(name, 0) + weight * gram(feats[name])
            for name in self.style_layers:
                grams[name].append(mixed[name])
        for name, g in grams.items():
            g = torch.cat(g)
            setattr(self, f"target_gram_{name}", g)
            setattr(self, f"target_energy_{name}", gram_energy(g))

    @torch.no_grad()
    def content_targets(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.network(content, list(self.content_layers))  # stops at the deepest content layer

    def forward(self, output: torch.Tensor, content_targets: Mapping[str, torch.Tensor],
                style: int = 0) -> dict[str, torch.Tensor]:
        """Every weighted term and the total, against painting `style`'s targets."""
        layers = (list(self.content_layers) if self.content_weight else []) + \
            (list(self.style_layers) if self.style_weight else [])
        feats = self.network(output, layers or None)
        zero = output.new_zeros((), dtype=torch.float32)
        content = zero
        if self.content_weight:  # a zero weight skips its term: style-only runs have no content target
            content = sum((w * content_loss(feats[n], content_targets[n])
                           for n, w in self.content_layers.items()), zero)
        if self.style_weight:
            pick = slice(style, style + 1)
            style_term = sum((w * style_loss(gram(feats[n]), self.target_gram(n)[pick],
                                             getattr(self, f"target_energy_{n}")[pick])
                              for n, w in self.style_layers.items()), zero)
        else:
            style_term = zero
        terms = {
            "content": self.content_weight * content,
            "style": self.style_weight * style_term,
            "tv": self.tv_weight * tv_loss(output),
        }
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


def build_perceptual_loss(loss_cfg) -> PerceptualLoss:
    """From the `loss` config group (a mapping): the network, layers and weights."""
    content_layers = dict(loss_cfg["content_layers"])
    style_layers = dict(loss_cfg["style_layers"])
    net_cfg = loss_cfg["network"]
    network = LossNetwork(list(content_layers) + list(style_layers), weights=str(net_cfg["weights"]),
                          pooling=str(net_cfg["pooling"]))
    return PerceptualLoss(network, content_layers, style_layers, loss_cfg["content_weight"],
                          loss_cfg["style_weight"], loss_cfg["tv_weight"])
