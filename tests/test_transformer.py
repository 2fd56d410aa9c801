import pytest
import torch

from impasto.transformer import TransformerConfig, TransformerNet


@pytest.mark.parametrize("h, w", [(64, 64), (37, 45), (33, 17), (1, 5)])
def test_keeps_height_and_width(h, w):
    net = TransformerNet(TransformerConfig(widths=(8, 16, 32), residual_blocks=2))
    assert net(torch.rand(2, 3, h, w)).shape == (2, 3, h, w)


def test_no_transposed_convs_and_configurable_widths():
    net = TransformerNet(TransformerConfig(widths=(4, 8, 12), residual_blocks=3))
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    assert len(net.residuals) == 3
    assert net.residuals[0].body[0][0].in_channels == 12
    assert all(m.padding_mode == "reflect" for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_config_round_trip():
    config = TransformerConfig(widths=(16, 32, 64), residual_blocks=4)
    assert TransformerConfig.from_dict(config.to_dict()) == config
