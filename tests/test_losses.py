import itertools

import pytest
import torch

from impasto.losses import PerceptualLoss, content_loss, gram, style_loss, tv_loss
from impasto.vgg import LossNetwork


def test_gram_equals_direct_einsum():
    f = torch.randn(2, 5, 7, 3)
    expected = torch.einsum("bchw,bdhw->bcd", f, f) / (5 * 7 * 3)
    torch.testing.assert_close(gram(f), expected)


def test_gram_is_fp32_under_bf16_autocast():
    f = torch.randn(1, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram(f.bfloat16())
    assert g.dtype == torch.float32


def test_gram_gradient_is_autograds_in_the_features_dtype():
    """gram's own backward against autograd through the plain formula: equal in fp32, and in bf16 within bf16's
    rounding, returned in bf16 as autocast's cast back would return it, and in the features' layout."""
    weights = torch.randn(2, 6, 6)

    def plain(f):
        flat = f.float().reshape(2, 6, -1)
        return torch.bmm(flat, flat.transpose(1, 2)) / flat[0].numel()

    for (dtype, tolerance), layout in itertools.product(((torch.float32, 1e-5), (torch.bfloat16, 1e-2)),
                                                       (torch.contiguous_format, torch.channels_last)):
        f = torch.randn(2, 6, 5, 4, dtype=dtype).contiguous(memory_format=layout).requires_grad_()
        ours, = torch.autograd.grad((gram(f) * weights).sum(), f)
        theirs, = torch.autograd.grad((plain(f) * weights).sum(), f)
        assert ours.dtype == dtype and ours.is_contiguous(memory_format=layout)
        error = (ours.float() - theirs.float()).abs().max() / theirs.float().abs().max()
        assert error < tolerance, (dtype, error)
        # fp32: the same sums; bf16: accumulated in fp32 and rounded once, within 2⁻⁸ of each entry
        torch.testing.assert_close(gram(f), plain(f), rtol=0 if dtype == torch.float32 else 2**-8, atol=1e-6)


def test_fp16_maps_are_summed_in_fp32():
    """A Gram entry of VGG's fp16 maps overflows fp16's 65,504: fp16 maps are summed as fp32 ones."""
    f = torch.full((1, 4, 64, 64), 200.0, dtype=torch.float16, requires_grad=True)
    torch.testing.assert_close(gram(f), gram(f.detach().float()))
    target = torch.full_like(f, 199.0).detach()
    scaled = content_loss(f, target) * 2**16  # as a gradient scaler scales fp16 training's loss
    grad, = torch.autograd.grad(scaled, f)
    expected, = torch.autograd.grad(content_loss(f.float(), target.float()) * 2**16, f)
    assert grad.dtype == torch.float16 and (grad > 0).all()
    torch.testing.assert_close(grad.float(), expected.float(), rtol=1e-3, atol=0)


def test_content_loss_is_the_plain_formula_and_its_gradient():
    """content_loss's own backward against autograd through the formula, in fp32 and bf16, in the maps' dtype and
    layout; its value within bf16's rounding of the difference."""
    def plain(output, target):
        error = (output.float() - target.float()).square().mean(dim=(1, 2, 3))
        return (error / target.float().square().mean(dim=(1, 2, 3))).mean()

    torch.manual_seed(0)
    for (dtype, tolerance), layout in itertools.product(((torch.float32, 1e-5), (torch.bfloat16, 1e-2)),
                                                       (torch.contiguous_format, torch.channels_last)):
        target = (torch.rand(3, 8, 6, 5) * torch.tensor([1.0, 10, 0.1]).view(3, 1, 1, 1)).to(dtype)
        output = (target + torch.randn_like(target.float()) * 0.3).to(dtype)
        output = output.contiguous(memory_format=layout).requires_grad_()
        ours, theirs = content_loss(output, target), plain(output, target)
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=0)
        (g_ours,), (g_theirs,) = (torch.autograd.grad(x, output) for x in (ours, theirs))
        assert g_ours.dtype == dtype and g_ours.is_contiguous(memory_format=layout)
        error = (g_ours.float() - g_theirs.float()).abs().max() / g_theirs.float().abs().max()
        assert error < tolerance, (dtype, error)


def test_terms_are_zero_for_identical_inputs_and_positive_otherwise():
    a, b = torch.rand(2, 8, 6, 6) + 0.1, torch.rand(2, 8, 6, 6) + 0.1
    assert content_loss(a, a) == 0 and content_loss(a, b) > 0
    assert style_loss(gram(a), gram(a)) == 0 and style_loss(gram(a), gram(b)) > 0
    assert tv_loss(torch.full((1, 3, 8, 8), 0.3)) == 0 and tv_loss(torch.rand(1, 3, 8, 8)) > 0


def test_each_term_of_a_batch_is_the_mean_of_its_images_terms():
    """What makes a batch split between DDP processes train as the whole batch in one process."""
    a, b = torch.rand(4, 8, 6, 6) + 0.1, torch.rand(4, 8, 6, 6) + 0.1
    a[2:] *= 10  # images of different energy: a ratio of batch means would weigh them unequally
    halves = [content_loss(a[:2], b[:2]), content_loss(a[2:], b[2:])]
    torch.testing.assert_close(content_loss(a, b), sum(halves) / 2)
    target = gram(b[:1])
    torch.testing.assert_close(style_loss(gram(a), target),
                               (style_loss(gram(a[:2]), target) + style_loss(gram(a[2:]), target)) / 2)
    torch.testing.assert_close(tv_loss(a), (tv_loss(a[:2]) + tv_loss(a[2:])) / 2)


@pytest.fixture(scope="module")
def random_loss():
    # Random-weight VGG on purpose: this test checks the loss arithmetic, not what the weights see.
    torch.manual_seed(0)
    network = LossNetwork(["relu1_1", "relu2_1", "relu2_2"], weights="random")
    loss = PerceptualLoss(network, {"relu2_2": 1.0}, {"relu1_1": 1.0, "relu2_1": 0.5}, 1.0, 3.0, 2.0)
    return loss


def test_perceptual_loss_terms(random_loss):
    style = torch.rand(1, 3, 40, 40)
    random_loss.set_style([style])
    # The style image itself, as its own content: content and style terms vanish.
    terms = random_loss(style, random_loss.content_targets(style))
    assert terms["content"] == 0 and terms["style"] < 1e-10
    other = torch.rand(2, 3, 32, 32)
    terms = random_loss(other, random_loss.content_targets(other.flip(-1)))
    assert terms["content"] > 0 and terms["style"] > 0 and terms["tv"] > 0
    torch.testing.assert_close(terms["total"], terms["content"] + terms["style"] + terms["tv"])


def test_style_blend_mixes_grams(random_loss):
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 0.5
    random_loss.set_style([a, b], [0.25, 0.75])
    ga, gb = (gram(random_loss.network(x)["relu1_1"]) for x in (a, b))
    torch.testing.assert_close(random_loss.target_gram("relu1_1"), 0.25 * ga + 0.75 * gb)


def test_style_term_uses_the_energy_stored_with_the_targets(random_loss):
    # The style loss's denominators are stored by set_style, not recomputed each step; they are not saved,
    # so a checkpoint's keys stay the same.
    style, other = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    random_loss.set_style([style])
    feats = random_loss.network(other)
    expected = sum(w * style_loss(gram(feats[n]), random_loss.target_gram(n))
                   for n, w in random_loss.style_layers.items()) * random_loss.style_weight
    torch.testing.assert_close(random_loss(other, random_loss.content_targets(other))["style"], expected)
    random_loss.target_energy_relu1_1.mul_(2)  # the stored energy is what the forward pass divides by
    assert random_loss(other, random_loss.content_targets(other))["style"] < expected
    assert not any("energy" in k for k in random_loss.state_dict())


def test_stability_term_is_one_for_passing_noise_through_and_zero_for_ignoring_it():
    from impasto.losses import stability_loss

    torch.manual_seed(0)
    x, sigma = torch.rand(2, 3, 64, 64), 0.02
    noisy = x + sigma * torch.randn_like(x)
    assert abs(stability_loss(x, noisy, sigma) - 1.0) < 0.02  # the identity network passes the noise through
    assert stability_loss(x.mean() * torch.ones_like(x), x.mean() * torch.ones_like(x), sigma) == 0
    blurred = torch.nn.functional.avg_pool2d(noisy, 3, 1, 1)  # a 3x3 blur keeps ~1/9 of white noise's energy
    assert 0.05 < stability_loss(torch.nn.functional.avg_pool2d(x, 3, 1, 1), blurred, sigma) < 0.2
