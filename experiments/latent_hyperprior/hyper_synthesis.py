"""Hyper-synthesis in fixed point, so the entropy model is bit-identical on every device.

The hyperprior decides which probability table codes each latent. If the encoder (say on a GPU)
and the decoder (on a CPU) computed the scales in floating point, one ulp across a table boundary
would pick another table and the rest of the stream would decode to garbage. So this network is
defined in fixed point: weights are integers times ``2**-WEIGHT_BITS``, activations integers times
``2**-ACT_BITS``, every rounding is ``floor(v + 1/2)``. Inference (:meth:`exact`) runs on
integer-valued float64 tensors on the CPU, where products and sums of integers below ``2**53``
are exact whatever the summation order, thread count or instruction set. Training runs the same
arithmetic in float32 with straight-through rounding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

WEIGHT_BITS = 10
ACT_BITS = 8
#: Activations are clamped to this many integer units so accumulators stay far below 2**53.
ACT_LIMIT = float(2**18)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x + 0.5)`` forward, identity gradient backward."""
    return x + (torch.floor(x + 0.5) - x).detach()


class FixedPointHyperSynthesis(nn.Module):
    """Integer latents z -> (means in units of ``2**-ACT_BITS``, scale-table indices).

    Architecture: [nearest 2x upsampling, 3x3x3 conv, ReLU] x ``upsamplings``, then a 3x3x3 conv to
    ``2 * latent_channels`` outputs (means, then log-scale positions in table steps).
    """

    def __init__(
        self, z_channels: int, hidden: int, latent_channels: int, upsamplings: int = 2, n_scales: int = 64
    ) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.n_scales = n_scales
        chans = [z_channels] + [hidden] * upsamplings
        self.convs = nn.ModuleList(nn.Conv3d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.head = nn.Conv3d(hidden, 2 * latent_channels, 3, padding=1)

    def _quant_weights(self, conv: nn.Conv3d, in_scale_bits: int):
        w = round_ste(conv.weight * 2**WEIGHT_BITS) / 2**WEIGHT_BITS
        b = round_ste(conv.bias * 2 ** (WEIGHT_BITS + in_scale_bits)) / 2 ** (WEIGHT_BITS + in_scale_bits)
        return w, b

    def forward(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training path: returns (means, continuous log-scale positions), both float."""
        x = z_hat
        in_bits = 0
        for conv in self.convs:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            w, b = self._quant_weights(conv, in_bits)
            x = F.relu(F.conv3d(x, w, b, padding=1))
            x = torch.clamp(round_ste(x * 2**ACT_BITS), max=ACT_LIMIT) / 2**ACT_BITS
            in_bits = ACT_BITS
        w, b = self._quant_weights(self.head, in_bits)
        out = round_ste(F.conv3d(x, w, b, padding=1) * 2**ACT_BITS) / 2**ACT_BITS
        means, positions = out.chunk(2, dim=1)
        return means, positions

    @torch.no_grad()
    def exact(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference path, bit-exact everywhere: (means as float64, int64 scale indices).

        Runs on the CPU in float64 on integer-valued tensors whatever device the model is on.
        """
        x = z_hat.detach().to("cpu", torch.float64).round()
        in_bits = 0
        for conv in self.convs:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self._integer_conv(x, conv, in_bits)
            x = torch.clamp(x, min=0, max=ACT_LIMIT)
            in_bits = ACT_BITS
        out = self._integer_conv(x, self.head, in_bits)
        means, positions = out.chunk(2, dim=1)
        indices = torch.clamp(torch.floor(positions / 2**ACT_BITS + 0.5), 0, self.n_scales - 1)
        return means / 2**ACT_BITS, indices.to(torch.int64)

    def _integer_conv(self, x: torch.Tensor, conv: nn.Conv3d, in_bits: int) -> torch.Tensor:
        """Integer x (units 2**-in_bits) -> integer output in units of 2**-ACT_BITS."""
        w = torch.floor(conv.weight.detach().to("cpu", torch.float64) * 2**WEIGHT_BITS + 0.5)
        b = torch.floor(conv.bias.detach().to("cpu", torch.float64) * 2 ** (WEIGHT_BITS + in_bits) + 0.5)
        acc = F.conv3d(x, w, b, padding=1)  # exact: integers, |values| << 2**53
        shift = WEIGHT_BITS + in_bits - ACT_BITS
        return torch.floor(acc / 2**shift + 0.5)  # division by a power of two is exact
