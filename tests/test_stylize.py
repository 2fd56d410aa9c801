"""stylize.py's forward pass: the bf16 fast path against fp32, on the shipped (real, trained) style."""

import torch

from conftest import ROOT
from impasto import ASSETS
from impasto.checkpoint import load_style
from impasto.images import load_image, resize_long_side, to_tensor
from impasto.runtime import autocast_dtype
from impasto.stylize import stylizer


def test_bf16_stylization_matches_fp32_within_a_few_levels():
    net, _ = load_style(ROOT / "checkpoints" / "starry_night.safetensors")
    photo = to_tensor(resize_long_side(load_image(ASSETS / "preview" / "chelsea.jpg", "photo"), 128)).unsqueeze(0)
    cpu = torch.device("cpu")
    fp32 = stylizer(net, cpu, None)(photo).clamp(0, 1)
    bf16 = stylizer(net, cpu, torch.bfloat16)(photo).clamp(0, 1)
    assert bf16.dtype == torch.float32 and bf16.shape == photo.shape
    levels = (fp32 - bf16).abs() * 255
    assert levels.mean() < 1.0 and levels.max() < 16, (levels.mean(), levels.max())
    assert not torch.equal(fp32, bf16)  # the bf16 path really ran in bf16


def test_auto_precision_is_fp32_on_cuda_and_follows_the_request_otherwise():
    """One-image passes ran faster in fp32 than in bf16 on an H100, so auto must not pick bf16 there."""
    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    assert autocast_dtype("auto", cuda) is None
    assert autocast_dtype("bf16", cuda) is torch.bfloat16
    assert autocast_dtype("fp32", torch.device("cpu")) is None
