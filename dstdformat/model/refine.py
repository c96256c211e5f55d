"""Decoder-side refinement: a small 3D network that removes base-layer (SPERR) coding artefacts.

It sees the decoded base layer (HU / 1000) and the rate each voxel was coded at, and predicts a
correction. It costs no bits: the file only names the weights (id + sha256). The network works at
half resolution after a 2x2x2 space-to-depth fold, which buys a wide receptive field for the
compute of a few full-resolution convolutions (decoding must stay near a minute for 512x512x300 on
two CPU cores).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: HU per network unit.
HU_SCALE = 1000.0
#: Spatial multiple every input must have (the space-to-depth fold).
FOLD = 2


@dataclass(frozen=True)
class RefinerConfig:
    channels: int = 32
    blocks: int = 3

    def to_json(self) -> dict:
        return asdict(self)


def rate_code(bits_per_voxel: float) -> float:
    """Rate as the network sees it: 0 at 256x for int16 (1/16 bit per voxel), +-1 per 4x."""
    return (math.log2(16.0 / bits_per_voxel) - 8.0) / 2.0


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv_b = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_b(F.leaky_relu(self.conv_a(x), 0.1))


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    b, c, d, h, w = x.shape
    x = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * 8, d // 2, h // 2, w // 2)


def depth_to_space(x: torch.Tensor) -> torch.Tensor:
    b, c8, d, h, w = x.shape
    c = c8 // 8
    x = x.reshape(b, c, 2, 2, 2, d, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, d * 2, h * 2, w * 2)


class Refiner(nn.Module):
    """Residual correction of a decoded volume; the identity at initialisation."""

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config or RefinerConfig()
        c = self.config.channels
        self.head = nn.Conv3d(8 + 1, c, 3, padding=1)
        self.body = nn.Sequential(*[_ResidualBlock(c) for _ in range(self.config.blocks)])
        self.tail = nn.Conv3d(c, 8, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def halo(self) -> int:
        """Voxels of context each side that reach an output voxel (the receptive field radius)."""
        return FOLD * (2 + 2 * self.config.blocks)

    def forward(self, x: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 1, D, H, W) in HU / 1000, sizes multiples of 2; ``rate``: same shape."""
        folded = space_to_depth(x)
        rate_half = F.avg_pool3d(rate, FOLD)
        h = torch.cat([folded, rate_half], 1)
        if not self.training:  # oneDNN's channels-last 3D convolutions are ~20% faster on CPU
            h = h.contiguous(memory_format=torch.channels_last_3d)
        h = self.tail(self.body(self.head(h)))
        return x + depth_to_space(h).contiguous()

    @torch.no_grad()
    def refine(self, hu: np.ndarray, rate: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        """Refine a float HU block (any size): pads to the fold multiple by edge replication."""
        return self.refine_many([(hu, rate)], device)[0]

    @torch.no_grad()
    def refine_many(
        self, blocks: list[tuple[np.ndarray, np.ndarray]], device: torch.device | str = "cpu"
    ) -> list[np.ndarray]:
        """Refine same-shaped (HU block, rate-code block) pairs as one batch."""
        shape = blocks[0][0].shape
        if any(hu.shape != shape or rate.shape != shape for hu, rate in blocks):
            raise ValueError("refine_many needs blocks of one shape")
        pads = [(0, (-s) % FOLD) for s in shape]
        x = np.stack([np.pad(hu, pads, mode="edge") / HU_SCALE for hu, _ in blocks])
        r = np.stack([np.pad(rate, pads, mode="edge") for _, rate in blocks])
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None].to(device)
        rt = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32))[:, None].to(device)
        out = self.forward(xt, rt)[:, 0].float().cpu().numpy().astype(np.float64) * HU_SCALE
        keep = (slice(None), *(slice(0, s) for s in shape))
        return list(out[keep])
