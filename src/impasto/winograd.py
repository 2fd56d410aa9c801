"""Winograd F(4×4, 3×3) for the frozen loss network's 3×3 convolutions on the CPU in fp32.

Each 6×6 tile of the input becomes 4×4 outputs from 36 products a channel pair, where a direct convolution takes 144:
the channel sums turn into 36 batched matrix products, the tiles' transforms into two small ones. oneDNN's fp32 CPU
kernels are direct convolutions, so where the channels are many and the maps small this is faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import runtime

_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
MIN_TILES = 16  # fewer, and reading the kernels' transforms costs more than the products save (one 8×8 map: 0.7 times)


def _kron(m: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(m, dtype=torch.float64)
    return torch.kron(t, t).float()


_IN = _kron(_BT)    # (36, 36): a flattened 6×6 tile to its transform
_OUT = _kron(_AT)   # (16, 36): a transformed tile back to 4×4 outputs


def kernels(weight: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, 3, 3) → (36, Cin, Cout), the weights' transforms, computed in float64 and rounded once."""
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ij,ocjk,lk->ilco", g, weight.detach().double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).float().contiguous()


def conv(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A 3×3 stride-1 convolution padded by 1 with zeros, without bias: x (B, C, H, W) fp32 in any layout, u from
    `kernels`; the result in channels_last."""
    b, c, h, w = x.shape
    co = u.shape[2]
    th, tw = -(-h // 4), -(-w // 4)
    # one zero row and column before, enough after for whole tiles; the tiles overlap by 2
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 4 * tw - w + 1, 1, 4 * th - h + 1))
    out = x.new_empty(b, 4 * th, 4 * tw, co)
    # Chunks whose transforms stay in the cache, but no smaller than the kernels, which each chunk reads whole
    budget = max(4 << 20, u.numel() * 4)
    rows = max(1, budget // (tw * c * 36 * 4))
    images = max(1, min(b, rows // th)) if rows >= th else 1
    rows = min(rows, th)
    into, back = _IN.to(x.device), _OUT.to(x.device)
    for i in range(0, b, images):
        n = min(b, i + images) - i
        for r in range(0, th, rows):
            k = min(th, r + rows) - r
            tiles = padded[i:i + n, 4 * r:4 * (r + k) + 2].unfold(1, 6, 4).unfold(2, 6, 4)  # (n, k, tw, C, 6, 6)
            v = (into @ tiles.permute(4, 5, 0, 1, 2, 3).reshape(36, -1)).view(36, n * k * tw, c)
            y = (back @ torch.bmm(v, u).view(36, -1)).view(4, 4, n, k, tw, co)
            out[i:i + n, 4 * r:4 * (r + k)].view(n, k, 4, tw, 4, co).copy_(y.permute(2, 3, 0, 4, 1, 5))
    return out[:, :h, :w].permute(0, 3, 1, 2)


class _Frozen(torch.autograd.Function):
    """The convolution with frozen weights: its backward is the input's gradient alone, itself a 3×3 convolution (the
    kernel flipped, its channels swapped), so nothing of the input is kept for it."""

    @staticmethod
    def forward(ctx, x, u, u_back, bias):
        ctx.save_for_backward(u_back)
        out = conv(x, u)
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, grad):
        (u_back,) = ctx.saved_tensors
        return conv(grad, u_back), None, None, None


class WinogradConv(nn.Conv2d):
    """A frozen 3×3 convolution (stride 1, padding 1) that takes Winograd's way for fp32 maps on a CPU where that
    measured faster (runtime.winograd_is_fast), and the plain way otherwise (GPU, autocast, weights that train, maps
    of a few tiles)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding=1)
        self._transforms: tuple | None = None

    def winograd(self, x: torch.Tensor) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.device)
        if self._transforms is None or self._transforms[0] != key:  # kept: a 512-channel layer's take 0.2 s
            back = self.weight.detach().flip(2, 3).transpose(0, 1)
            self._transforms = (key, kernels(self.weight), kernels(back))
        return _Frozen.apply(x, self._transforms[1], self._transforms[2], self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if (x.device.type == "cpu" and x.dtype == torch.float32 and not self.weight.requires_grad
                and b * -(-h // 4) * -(-w // 4) >= MIN_TILES and not torch.is_autocast_enabled("cpu")
                and not torch.compiler.is_compiling() and runtime.winograd_is_fast()):
            return self.winograd(x)
        return super().forward(x)
