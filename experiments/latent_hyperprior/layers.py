"""Building blocks of the 3D transforms: GDN and residual blocks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GDN3d(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016), simplified form of Johnston et al.
    (``|x|`` instead of ``x**2``, no square root), which trains faster and is as good."""

    def __init__(self, channels: int, inverse: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.inverse = inverse
        self.eps = eps
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.abs() + self.eps
        gamma = self.gamma.abs()
        c = gamma.shape[0]
        norm = F.conv3d(x.abs(), gamma.view(c, c, 1, 1, 1), beta)
        return x * norm if self.inverse else x / norm


class ResidualBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a leaky ReLU and an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.1)), 0.1))


def down(cin: int, cout: int, kernel: int = 5) -> nn.Conv3d:
    """Stride-2 convolution (halves every axis)."""
    return nn.Conv3d(cin, cout, kernel, stride=2, padding=kernel // 2)


def up(cin: int, cout: int, kernel: int = 5) -> nn.ConvTranspose3d:
    """Stride-2 transposed convolution (doubles every axis)."""
    return nn.ConvTranspose3d(cin, cout, kernel, stride=2, padding=kernel // 2, output_padding=1)
