"""The network rewritten for the CPU's convolutions (rewrite.py) gives the network's own output, to float rounding,
at every size, for every painting and blend, and on Johnson's grid too."""

import pytest
import torch
import torch.nn.functional as F

from impasto.lookup import find_style
from impasto.rewrite import CPUTransformer, doubled_conv_weight, folded_conv_weight
from impasto.style import load_style, select
from impasto.transformer import TransformerConfig, TransformerNet


def test_a_doubled_map_conv_is_a_conv_on_the_small_map_in_four_phases():
    torch.manual_seed(0)
    x, weight = torch.randn(2, 5, 7, 9), torch.randn(4, 5, 3, 3)
    expected = F.conv2d(F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect"), weight)
    got = F.pixel_shuffle(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), doubled_conv_weight(weight)), 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", [9, 5, 3])
def test_a_conv_on_a_folded_map_is_the_conv(kernel):
    torch.manual_seed(0)
    x, weight = torch.randn(1, 3, 20, 26), torch.randn(2, 3, kernel, kernel)
    expected = F.conv2d(x, weight)  # (20 - k + 1) × (26 - k + 1)
    got = F.pixel_shuffle(F.conv2d(F.pixel_unshuffle(x, 2), folded_conv_weight(weight)), 2)
    torch.testing.assert_close(got[..., :expected.shape[-2], :expected.shape[-1]], expected, rtol=1e-5, atol=1e-5)


def test_the_shipped_paintings_rewritten_paint_what_they_paint():
    net, meta = load_style(find_style("paintings")[0])  # the six paintings' file
    for spec in ("the_scream", "starry_night:0.5,udnie:0.5"):
        select(net, meta, spec)
        fast = CPUTransformer(net.eval())
        with torch.inference_mode():
            for height, width in ((64, 64), (37, 45), (100, 67), (16, 130)):
                x = torch.rand(1, 3, height, width)
                expected, got = net(x), fast(x)
                assert got.shape == expected.shape
                assert (got - expected).abs().max() < 1e-4, (spec, height, width)


def test_johnsons_grid_runs_as_it_is():
    net = TransformerNet(TransformerConfig(widths=(4, 8, 8), residual_blocks=1, down_kernel=3)).eval()
    x = torch.rand(1, 3, 35, 41)
    with torch.inference_mode():
        assert torch.equal(CPUTransformer(net)(x), net(x))
