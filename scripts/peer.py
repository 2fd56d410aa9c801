"""The peer that scripts/bench.py times impasto against: pytorch/examples' fast_neural_style as it ships (its
transformation network, its VGG16 loss with its weights 1e5 and 1e10, Adam at 1e-3, fp32 eager), written here from
its published description with random weights, so that both run on the same machine in the same process."""

import torch
import torch.nn.functional as F
from torch import nn


class _Conv(nn.Sequential):
    """Reflection pad, conv, then optionally instance norm (affine) and ReLU, as the peer's layers are."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, norm: bool = True, relu: bool = True):
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(c_in, c_out, kernel, stride)]
        if norm:
            layers.append(nn.InstanceNorm2d(c_out, affine=True))
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_Conv(channels, channels, 3), _Conv(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PeerTransformer(nn.Module):
    """32-64-128 channels, five residual blocks, upsample-then-convolve decoder; output not squashed."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(_Conv(3, 32, 9), _Conv(32, 64, 3, 2), _Conv(64, 128, 3, 2),
                                     *[_Residual(128) for _ in range(5)])
        self.up1, self.up2 = _Conv(128, 64, 3), _Conv(64, 32, 3)
        self.head = _Conv(32, 3, 9, norm=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encoder(x)
        y = self.up1(F.interpolate(y, scale_factor=2, mode="nearest"))
        y = self.up2(F.interpolate(y, scale_factor=2, mode="nearest"))
        return self.head(y)


def _gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


class PeerLoss(nn.Module):
    """VGG16 to relu4_3 (random weights, frozen); content on relu2_2, style on relu1_2, relu2_2, relu3_3, relu4_3."""

    TAPS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3 in torchvision's vgg16().features

    def __init__(self, style: torch.Tensor):
        super().__init__()
        from torchvision.models import vgg16

        self.features = vgg16(weights=None).features[:23].requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        with torch.no_grad():
            self.grams = [_gram(f) for f in self.taps(style)]

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                out.append(x)
        return out

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        fy, fx = self.taps(y), self.taps(x)
        content = 1e5 * F.mse_loss(fy[1], fx[1])
        style = 1e10 * sum(F.mse_loss(_gram(f), g.expand(f.shape[0], -1, -1)) for f, g in zip(fy, self.grams))
        return content + style


class PeerStep:
    """One training step of the peer on a batch: transformer forward, loss, backward, Adam."""

    def __init__(self, size: int, device: torch.device):
        torch.manual_seed(0)
        self.net = PeerTransformer().to(device).train()
        self.loss = PeerLoss(torch.rand(1, 3, size, size, device=device)).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def __call__(self, batch: torch.Tensor) -> float:
        self.optimizer.zero_grad()
        loss = self.loss(self.net(batch), batch)
        loss.backward()
        self.optimizer.step()
        return loss.item()
