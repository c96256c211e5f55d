"""The texture codec network: 3D analysis/synthesis transforms with a fixed-point hyperprior.

Shapes: a (B, 1, D, H, W) block with D, H, W multiples of ``STRIDE`` (32) gives latents y at 1/16
and hyper-latents z at 1/32 of each axis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .entropy_models import FactorizedPrior, GaussianConditional
from .hyper_synthesis import FixedPointHyperSynthesis, round_ste
from .layers import GDN3d, ResidualBlock3d, down, up

STRIDE = 32


@dataclass(frozen=True)
class TextureModelConfig:
    channels: int = 48
    latent_channels: int = 64
    hyper_channels: int = 32
    n_scales: int = 64
    scale_min: float = 0.11
    scale_max: float = 64.0

    def to_json(self) -> dict:
        return asdict(self)


class TextureModel(nn.Module):
    def __init__(self, config: TextureModelConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TextureModelConfig()
        n, m, h = c.channels, c.latent_channels, c.hyper_channels
        self.g_a = nn.Sequential(
            down(1, n),
            GDN3d(n),
            down(n, n),
            GDN3d(n),
            ResidualBlock3d(n),
            down(n, n),
            GDN3d(n),
            down(n, m),
        )
        self.g_s = nn.Sequential(
            up(m, n),
            GDN3d(n, inverse=True),
            up(n, n),
            GDN3d(n, inverse=True),
            ResidualBlock3d(n),
            up(n, n),
            GDN3d(n, inverse=True),
            up(n, 1),
        )
        self.h_a = nn.Sequential(
            nn.Conv3d(m, h, 3, padding=1),
            nn.LeakyReLU(0.1),
            down(h, h, 3),
        )
        self.h_s = FixedPointHyperSynthesis(h, h, m, upsamplings=1, n_scales=c.n_scales)
        self.z_prior = FactorizedPrior(h)
        self.y_model = GaussianConditional(c.n_scales, c.scale_min, c.scale_max)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass: reconstruction and the likelihoods of the quantized latents."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat = round_ste(z)
        z_likelihood = self.z_prior.likelihood(
            z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else z_hat
        )
        means, positions = self.h_s(z_hat)
        scales = self.y_model.scales_from_positions(positions)
        y_hat = round_ste(y - means) + means
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else y_hat
        y_likelihood = self.y_model.likelihood(y_noisy, means, scales)
        x_hat = self.g_s(y_hat)
        return {"x_hat": x_hat, "y_likelihood": y_likelihood, "z_likelihood": z_likelihood}

    def build_tables(self) -> None:
        """Freeze the integer coding tables (call after training, before saving)."""
        self.z_prior.build_tables()
        self.y_model.build_tables()


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Replicate-pad the last three axes up to a multiple of ``stride``; returns the original size."""
    size = tuple(x.shape[-3:])
    pads = [(-s) % stride for s in size]
    if any(pads):
        x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
    return x, size


class CompressedBlock(dict):
    """``{"z": bytes, "y": bytes, "z_shape": [...], "y_shape": [...]}`` for one latent block."""


@torch.no_grad()
def compress_latents(model: TextureModel, y: torch.Tensor) -> CompressedBlock:
    """Entropy-code analysis latents ``y`` (1, M, d, h, w): hyper-latents first, then y."""
    import numpy as np

    from .coder import encode_symbols

    z = model.h_a(y)
    z_support = model.z_prior.support
    z_sym = torch.clamp(torch.floor(z + 0.5), -z_support, z_support).to("cpu", torch.int64)
    z_tables = torch.arange(z.shape[1]).view(1, -1, 1, 1, 1).expand_as(z_sym)
    z_freq = model.z_prior.cdf_table.numpy()
    z_supports = np.full(z_freq.shape[0], z_support, dtype=np.int64)
    z_bytes, _ = encode_symbols(z_sym.numpy(), z_tables.numpy(), z_freq, z_supports)
    means, indices = model.h_s.exact(z_sym.to(torch.float64))
    y_sym = torch.floor(y.detach().to("cpu", torch.float64) - means + 0.5).to(torch.int64)
    y_bytes, _ = encode_symbols(
        y_sym.numpy(),
        indices.numpy(),
        model.y_model.cdf_table.numpy(),
        model.y_model.table_support.numpy().astype(np.int64),
    )
    return CompressedBlock(z=z_bytes, y=y_bytes, z_shape=list(z_sym.shape), y_shape=list(y_sym.shape))


@torch.no_grad()
def decompress_latents(model: TextureModel, block: CompressedBlock) -> torch.Tensor:
    """Inverse of :func:`compress_latents`: the dequantized latents y_hat (float32, CPU)."""
    import numpy as np

    from .coder import decode_symbols

    z_support = model.z_prior.support
    z_shape = tuple(block["z_shape"])
    z_tables = np.broadcast_to(np.arange(z_shape[1]).reshape(1, -1, 1, 1, 1), z_shape)
    z_freq = model.z_prior.cdf_table.numpy()
    z_sym = decode_symbols(block["z"], z_tables, z_freq, np.full(z_freq.shape[0], z_support, dtype=np.int64))
    means, indices = model.h_s.exact(torch.from_numpy(z_sym).to(torch.float64))
    if list(indices.shape) != list(block["y_shape"]):
        raise ValueError(f"latent shape {list(indices.shape)} does not match {block['y_shape']}")
    y_sym = decode_symbols(
        block["y"],
        indices.numpy(),
        model.y_model.cdf_table.numpy(),
        model.y_model.table_support.numpy().astype(np.int64),
    )
    return (torch.from_numpy(y_sym).to(torch.float64) + means).to(torch.float32)
