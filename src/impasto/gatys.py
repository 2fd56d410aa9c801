"""Gatys et al.'s slow method: optimize the pixels themselves against the same PerceptualLoss the fast network trains on.

The reference baseline: what the fast network's single forward pass is measured against.
"""

from collections.abc import Callable

import torch

from .errors import UserError
from .losses import PerceptualLoss

INITS = ("content", "noise", "color")
OPTIMIZERS = ("lbfgs", "adam")


def initial_image(content: torch.Tensor, init: str, color: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  seed: int = 0) -> torch.Tensor:
    """The optimization's start: the content image, uniform noise, or a plain colour (RGB in [0, 1])."""
    if init == "content":
        return content.clone()
    if init == "noise":
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(content.shape, generator=generator).to(content.device)
    if init == "color":
        return torch.tensor(color, dtype=content.dtype, device=content.device).view(1, 3, 1, 1).expand_as(content).clone()
    raise UserError(f"unknown init {init!r}: use one of {', '.join(INITS)}")


def optimize(loss: PerceptualLoss, content: torch.Tensor, start: torch.Tensor, steps: int, optimizer: str = "lbfgs",
             lr: float | None = None, autocast_dtype: torch.dtype | None = None,
             on_step: Callable[[int, dict[str, torch.Tensor], torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run `steps` optimizer steps on the pixels of `start`; returns the image (not clamped).

    L-BFGS takes one function evaluation a step (as pastiche and Gatys's code do). `on_step(step, terms, image)`
    sees each step's loss terms as tensors: reading them forces a host sync, so call it sparingly.
    """
    if steps < 0:
        raise UserError(f"steps must be 0 or more, got {steps}")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    targets = loss.content_targets(content) if loss.content_weight else {}
    image = start.detach().clone().contiguous().requires_grad_(True)
    image.register_hook(lambda grad: grad.contiguous())  # L-BFGS flattens grads with .view(); oneDNN's may be strided
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([image], lr=lr or 1.0, max_iter=1, history_size=100, line_search_fn=None)
    else:
        opt = torch.optim.Adam([image], lr=lr or 0.02)
    device_type = content.device.type
    last: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            terms = loss(image, targets)
        terms["total"].backward()
        last.update({k: v.detach() for k, v in terms.items()})
        return terms["total"]

    for step in range(1, steps + 1):
        opt.step(closure)
        if on_step is not None:
            on_step(step, last, image)
    return image.detach()


def evaluate(loss: PerceptualLoss, image: torch.Tensor, content: torch.Tensor) -> dict[str, float]:
    """Every loss term of `image` against `content` and the style, in fp32: the common yardstick for fast and slow."""
    with torch.no_grad():
        terms = loss(image, loss.content_targets(content) if loss.content_weight else {})
    return {k: float(v) for k, v in terms.items()}
