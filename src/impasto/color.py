"""Colour operations on stylized images: keeping the photo's colours, and applying a style at part strength."""

import torch

# Ottosson's OKLab (2020): a perceptual space where a straight line between two colours looks like an even mix.
_LMS_FROM_LINEAR_RGB = torch.tensor([[0.4122214708, 0.5363325363, 0.0514459929],
                                     [0.2119034982, 0.6806995451, 0.1073969566],
                                     [0.0883024619, 0.2817188376, 0.6299787005]])
_LAB_FROM_LMS = torch.tensor([[0.2104542553, 0.7936177850, -0.0040720468],
                              [1.9779984951, -2.4285922050, 0.4505937099],
                              [0.0259040371, 0.7827717662, -0.8086757660]])
_LMS_FROM_LAB = torch.tensor([[1.0, 0.3963377774, 0.2158037573],
                              [1.0, -0.1055613458, -0.0638541728],
                              [1.0, -0.0894841775, -1.2914855480]])
_LINEAR_RGB_FROM_LMS = torch.tensor([[4.0767416621, -3.3077115913, 0.2309699292],
                                     [-1.2684380046, 2.6097574011, -0.3413193965],
                                     [-0.0041960863, -0.7034186147, 1.7076147010]])


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(x.device, x.dtype), x)


def srgb_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> OKLab (L in [0, 1], a and b about ±0.4)."""
    rgb = rgb.clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return _apply(_LAB_FROM_LMS, _apply(_LMS_FROM_LINEAR_RGB, linear).clamp_min(0) ** (1 / 3))


def oklab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """OKLab -> sRGB, clamped to [0, 1]."""
    linear = _apply(_LINEAR_RGB_FROM_LMS, _apply(_LMS_FROM_LAB, lab) ** 3).clamp(0, 1)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def blend_strength(stylized: torch.Tensor, photo: torch.Tensor, strength: float) -> torch.Tensor:
    """The style at `strength` (0: the photo, 1: the stylized image), mixed in OKLab. Chosen by eye among four
    (docs/strength.md): an RGB mix turns milky halfway, a hue-keeping mix paints pink between orange and blue, and
    scaling the network's residual blocks gives a garish image at 0."""
    if strength >= 1:
        return stylized
    if strength <= 0:
        return photo
    return mix_oklab(stylized, photo, strength)


def mix_oklab(stylized: torch.Tensor, photo: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
    """blend_strength without its shortcuts at 0 and 1: one graph for any strength, as the ONNX export needs."""
    lab = srgb_to_oklab(photo)
    return oklab_to_srgb(lab + strength * (srgb_to_oklab(stylized) - lab))


def preserve_color(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized luminance with the content's colours (Gatys et al. 2016, "Preserving Color", luminance transfer).

    YCbCr is linear and its inverse maps Y to (1, 1, 1), so replacing Y keeps Cb/Cr: shift RGB by the Y difference.
    """
    luma = torch.tensor([0.299, 0.587, 0.114], device=content.device, dtype=content.dtype).view(1, 3, 1, 1)
    return content + ((stylized - content) * luma).sum(dim=1, keepdim=True)
