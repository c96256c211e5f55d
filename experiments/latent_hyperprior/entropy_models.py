"""Entropy models: a factorized prior for the hyper-latent z and a Gaussian conditional for y.

Training uses continuous likelihoods (additive uniform noise or straight-through rounding).
Coding uses integer CDF tables that :meth:`build_tables` computes once and the model stores, so
the probabilities a decoder sees never depend on floating-point arithmetic at decode time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

#: CDF tables are integers summing to 2**CDF_PRECISION.
CDF_PRECISION = 16
LIKELIHOOD_BOUND = 1e-9


def _lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """max(x, bound) whose gradient still flows when x is below the bound and rising helps."""
    return x + (torch.clamp(x, min=bound) - x).detach()


def pmf_to_integer_cdf(pmf: np.ndarray, precision: int = CDF_PRECISION) -> np.ndarray:
    """Quantize probabilities (rows) to integer frequencies >= 1 summing to 2**precision.

    Deterministic (numpy float64, fixed order): any excess is taken from the largest entries.
    """
    pmf = np.asarray(pmf, dtype=np.float64)
    total = 1 << precision
    freq = np.maximum(1, np.floor(pmf / pmf.sum(axis=-1, keepdims=True) * total)).astype(np.int64)
    for row in freq.reshape(-1, freq.shape[-1]):
        excess = int(row.sum()) - total
        order = np.argsort(-row, kind="stable")
        i = 0
        while excess != 0:
            j = order[i % len(order)]
            if excess > 0 and row[j] > 1:
                row[j] -= 1
                excess -= 1
            elif excess < 0:
                row[j] += 1
                excess += 1
            i += 1
    return freq


class FactorizedPrior(nn.Module):
    """Per-channel learned density for z (Ballé et al. 2018, "EntropyBottleneck")."""

    def __init__(
        self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10, support: int = 32
    ) -> None:
        super().__init__()
        self.channels = channels
        self.support = support  # symbols are clipped to [-support, support] when coding
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.register_buffer("cdf_table", torch.zeros(0, dtype=torch.int32), persistent=True)

    def _logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        # x: (channels, 1, n)
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """P(round(z)) under the learned density, for z of shape (B, C, ...)."""
        c = z.shape[1]
        flat = z.transpose(0, 1).reshape(c, 1, -1)
        lower = self._logits_cumulative(flat - 0.5)
        upper = self._logits_cumulative(flat + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        p = _lower_bound(p, LIKELIHOOD_BOUND)
        return p.reshape(c, z.shape[0], *z.shape[2:]).transpose(0, 1)

    @torch.no_grad()
    def build_tables(self) -> None:
        """Integer frequency table per channel over symbols -support..support."""
        symbols = torch.arange(-self.support, self.support + 1, dtype=torch.float32)
        grid = symbols.view(1, 1, -1).expand(self.channels, 1, -1)
        lower = self._logits_cumulative(grid - 0.5)
        upper = self._logits_cumulative(grid + 0.5)
        sign = -torch.sign(lower + upper)
        pmf = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).squeeze(1)
        self.cdf_table = torch.from_numpy(pmf_to_integer_cdf(pmf.double().numpy()).astype(np.int32))


class GaussianConditional(nn.Module):
    """Gaussian likelihood of y given means and scales chosen from a fixed log-spaced table."""

    def __init__(
        self, n_scales: int = 64, scale_min: float = 0.11, scale_max: float = 64.0, tail: float = 8.0
    ) -> None:
        super().__init__()
        self.n_scales = n_scales
        self.scale_min, self.scale_max = scale_min, scale_max
        self.log_step = math.log(scale_max / scale_min) / (n_scales - 1)
        self.tail = tail
        self.support = int(math.ceil(scale_max * tail))
        self.register_buffer("cdf_table", torch.zeros(0, dtype=torch.int32), persistent=True)
        self.register_buffer("table_support", torch.zeros(0, dtype=torch.int32), persistent=True)

    def scales_from_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Continuous table positions (0 .. n_scales-1) -> scales."""
        positions = torch.clamp(positions, 0, self.n_scales - 1)
        return torch.exp(math.log(self.scale_min) + positions * self.log_step)

    def table_scales(self) -> np.ndarray:
        return self.scale_min * np.exp(np.arange(self.n_scales) * self.log_step)

    def likelihood(self, y: torch.Tensor, means: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        values = torch.abs(y - means)
        upper = (0.5 - values) / scales
        lower = (-0.5 - values) / scales
        p = _normal_cdf(upper) - _normal_cdf(lower)
        return _lower_bound(p, LIKELIHOOD_BOUND)

    @torch.no_grad()
    def build_tables(self) -> None:
        """One integer frequency table per scale over symbols -s..s with s = ceil(tail * scale)
        (rows zero-padded to the widest); symbols beyond a table's support are clipped."""
        scales = self.table_scales()
        supports = np.ceil(self.tail * scales).astype(np.int64)
        width = 2 * int(supports.max()) + 1
        table = np.zeros((self.n_scales, width), dtype=np.int32)
        for t, (scale, s) in enumerate(zip(scales, supports)):
            symbols = np.arange(-s, s + 1, dtype=np.float64)
            pmf = np.maximum(
                _np_normal_cdf((symbols + 0.5) / scale) - _np_normal_cdf((symbols - 0.5) / scale), 0.0
            )
            table[t, : 2 * s + 1] = pmf_to_integer_cdf(pmf[None])[0]
        self.cdf_table = torch.from_numpy(table)
        self.table_support = torch.from_numpy(supports.astype(np.int32))


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2))


def _np_normal_cdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)
