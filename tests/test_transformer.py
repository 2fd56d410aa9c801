import pytest
import torch

from impasto.transformer import ConvLayer, HeadConv, PaddedConv, TransformerConfig, TransformerNet


@pytest.mark.parametrize("down_kernel", [3, 4])
@pytest.mark.parametrize("h, w", [(64, 64), (37, 45), (33, 17), (1, 5)])
def test_keeps_height_and_width(h, w, down_kernel):
    net = TransformerNet(TransformerConfig(widths=(8, 16, 32), residual_blocks=2, down_kernel=down_kernel))
    assert net(torch.rand(2, 3, h, w)).shape == (2, 3, h, w)


@torch.no_grad()
def test_the_centred_grid_treats_every_border_alike_and_johnsons_does_not():
    """A network that commutes with flips paints the bottom-right as it paints the top-left. With random weights
    made flip-symmetric (each kernel averaged with its flips), the centred grid gives flip(net(x)) == net(flip(x));
    Johnson's 3x3 stride-2 grid, which samples the even pixels only, does not."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 48)
    errors = {}
    for down_kernel in (3, 4):
        net = TransformerNet(TransformerConfig(widths=(8, 16, 32), residual_blocks=2, down_kernel=down_kernel)).eval()
        for conv in (m for m in net.modules() if isinstance(m, torch.nn.Conv2d)):
            w = conv.weight
            conv.weight.copy_((w + w.flip(2) + w.flip(3) + w.flip(2, 3)) / 4)
        flipped = net(x.flip(2, 3)).flip(2, 3)
        errors[down_kernel] = float((flipped - net(x)).abs().max())
    assert errors[4] < 1e-4 and errors[3] > 100 * errors[4], errors


def test_no_transposed_convs_and_configurable_widths():
    net = TransformerNet(TransformerConfig(widths=(4, 8, 12), residual_blocks=3))
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    assert len(net.residuals) == 3
    assert net.residuals[0].body[0][0].in_channels == 12
    assert all(m.padding_mode == "reflect" for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_config_round_trip():
    config = TransformerConfig(widths=(16, 32, 64), residual_blocks=4, down_kernel=4)
    assert TransformerConfig.from_dict(config.to_dict()) == config
    # Files written before the key existed hold Johnson's network.
    assert TransformerConfig.from_dict({"widths": [32, 64, 128], "residual_blocks": 5}).down_kernel == 3
    with pytest.raises(ValueError, match="down_kernel"):
        TransformerConfig.from_dict({"widths": [32, 64, 128], "down_kernel": 5})


@pytest.mark.parametrize("padding_mode", ["reflect", "zeros"])
def test_the_heads_input_gradient_by_a_forward_conv_is_the_convs_own(padding_mode):
    """A training step on the CPU takes the head's input gradient as a forward conv (HeadConv); the output and
    every gradient are the plain conv's, to float rounding, and the plain conv's path is what the step would
    otherwise take."""
    torch.manual_seed(0)
    head = HeadConv(8, 3, 9, padding=4, padding_mode=padding_mode)
    plain = torch.nn.Conv2d(8, 3, 9, padding=4, padding_mode=padding_mode)
    plain.load_state_dict(head.state_dict())
    x = torch.randn(2, 8, 23, 30)
    grad = torch.randn(2, 3, 23, 30)
    outputs = {}
    for conv in (head, plain):
        xi = x.clone().requires_grad_(True)
        y = conv(xi)
        y.backward(grad)
        outputs[type(y.grad_fn).__name__] = [y, xi.grad, conv.weight.grad, conv.bias.grad]
    assert list(outputs) == ["_InputGradByConvBackward", "ConvolutionBackward0"], list(outputs)
    for ours, theirs in zip(*outputs.values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert type(head(x).grad_fn).__name__ == "ConvolutionBackward0"  # no input gradient to take: the plain conv
    unpadded = HeadConv(8, 3, 9)(x.requires_grad_(True))
    assert type(unpadded.grad_fn).__name__ == "_InputGradByConvBackward" and unpadded.shape[-2:] == (15, 22)


def test_the_network_uses_the_head_conv():
    net = TransformerNet(TransformerConfig(widths=(4, 8, 12), residual_blocks=1))
    assert isinstance(net.head[0], HeadConv)
    assert sum(isinstance(m, HeadConv) for m in net.modules()) == 1


def test_a_channels_last_pass_stays_channels_last_through_the_norms_and_computes_what_the_default_layout_does():
    """instance_norm alone answers in the default layout, which made every convolution after a norm reorder its
    input and its gradient; the norms hand channels_last back."""
    torch.manual_seed(0)
    cl = torch.channels_last
    last = TransformerNet(TransformerConfig(widths=(8, 16, 32), residual_blocks=2, down_kernel=4, styles=2))
    last.to(memory_format=cl).train()
    x = torch.rand(2, 3, 32, 40)
    layouts = []
    for norm in last.norms():
        norm.register_forward_hook(lambda m, i, out: layouts.append(out.is_contiguous(memory_format=cl)))
    y_last = last(x.contiguous(memory_format=cl))
    assert layouts and all(layouts) and y_last.is_contiguous(memory_format=cl)
    grads_last = torch.autograd.grad(y_last.square().mean(), list(last.parameters()))
    plain = TransformerNet(last.config)
    plain.load_state_dict(last.state_dict())
    y_plain = plain.train()(x)
    assert y_plain.is_contiguous()
    torch.testing.assert_close(y_last, y_plain, rtol=1e-4, atol=1e-5)
    for g_last, g_plain in zip(grads_last, torch.autograd.grad(y_plain.square().mean(), list(plain.parameters()))):
        torch.testing.assert_close(g_last, g_plain, rtol=1e-3, atol=1e-6)


def test_a_reflected_conv_under_bf16_autocast_pads_in_bf16_and_computes_what_the_plain_conv_does():
    """CPU autocast pads in fp32: the plain conv casts the whole map up and the padded map down, each way. Ours casts
    no map, with the same output and the same gradients (the border's sums rounded in bf16 instead of fp32)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class MapCasts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and args[0].dim() == 4 and args[0].shape[0] == 2:
                self.count += 1  # a cast of a (2, C, H, W) map, not of a weight
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    ours = PaddedConv(8, 16, 3, padding=1, padding_mode="reflect")
    plain = torch.nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect")
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 20, 24).bfloat16()
    results = []
    for conv in (ours, plain):
        xi = x.clone().requires_grad_(True)
        with MapCasts() as casts:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = conv(xi)
            y.square().mean().backward()
        results.append((casts.count, y, xi.grad, conv.weight.grad))
    (count, *ours_out), (plain_count, *plain_out) = results
    assert count == 0 and plain_count >= 4, (count, plain_count)
    for a, b in zip(ours_out, plain_out):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=1e-2)
    assert all(isinstance(m[0], PaddedConv) for m in TransformerNet().modules() if isinstance(m, ConvLayer))
