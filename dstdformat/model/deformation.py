"""Deformations between a scan and the reference template: affine + implicit neural residual.

Coordinates are *centred physical* coordinates: millimetres from the volume's centre divided by
:data:`COORD_SCALE_MM`, ordered (k, j, i) like the arrays. Two scans with different fields of view
and spacings share this frame, so one affine maps any scan near the template.

The residual displacement is a SIREN (sine-activated MLP, Sitzmann et al. 2020), as in DeepSTD's
shape branch and IDIR (Wolterink et al. 2022): ``phi(x) = A x + t + u(A x + t)`` maps scan to
template; a second SIREN gives ``psi``, template to scan, and a cycle term keeps the two inverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Millimetres per coordinate unit: a 512 mm field of view spans [-1, 1].
COORD_SCALE_MM = 256.0


@dataclass(frozen=True)
class SirenConfig:
    """Residual-displacement network: 3 -> width (x depth) -> 3, ``sin(omega * x)``."""

    width: int = 64
    depth: int = 2  # hidden layers
    omega: float = 30.0

    def to_json(self) -> dict:
        return asdict(self)


class Siren(nn.Module):
    """A SIREN whose output starts at zero displacement (last layer initialised to zero)."""

    def __init__(self, config: SirenConfig = SirenConfig()) -> None:
        super().__init__()
        self.config = config
        sizes = [3] + [config.width] * config.depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.out = nn.Linear(config.width, 3)
        with torch.no_grad():
            for n, layer in enumerate(self.hidden):
                fan_in = layer.in_features
                bound = 1.0 / fan_in if n == 0 else math.sqrt(6.0 / fan_in) / config.omega
                layer.weight.uniform_(-bound, bound)
            self.out.weight.zero_()
            self.out.bias.zero_()

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        h = coords
        for layer in self.hidden:
            h = torch.sin(self.config.omega * layer(h))
        return self.out(h)


class AffineMap(nn.Module):
    """``x -> A x + t`` with A = I + M; starts at the identity (or a given translation)."""

    def __init__(self, translation: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.linear = nn.Parameter(torch.zeros(3, 3, dtype=torch.float32))
        self.translation = nn.Parameter(torch.tensor(list(translation), dtype=torch.float32))

    @property
    def matrix(self) -> torch.Tensor:
        return torch.eye(3, dtype=self.linear.dtype, device=self.linear.device) + self.linear

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return coords @ self.matrix.T + self.translation

    def inverse(self, coords: torch.Tensor) -> torch.Tensor:
        return (coords - self.translation) @ torch.linalg.inv(self.matrix).T

    def as_array(self) -> np.ndarray:
        """3x4 float64 [A | t]."""
        with torch.no_grad():
            return np.concatenate(
                [self.matrix.double().cpu().numpy(), self.translation.double().cpu().numpy()[:, None]], axis=1
            )

    @classmethod
    def from_array(cls, matrix: np.ndarray) -> AffineMap:
        affine = cls(translation=[float(v) for v in matrix[:, 3]])
        with torch.no_grad():
            affine.linear.copy_(torch.as_tensor(matrix[:, :3] - np.eye(3), dtype=torch.float32))
        return affine


class CycleDeformation(nn.Module):
    """Forward (scan -> template) and backward (template -> scan) maps around a shared affine."""

    def __init__(self, affine: AffineMap, config: SirenConfig = SirenConfig()) -> None:
        super().__init__()
        self.affine = affine
        self.forward_net = Siren(config)
        self.backward_net = Siren(config)

    def to_template(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_residual(self.affine(x))

    def to_scan(self, y: torch.Tensor) -> torch.Tensor:
        return self.affine.inverse(self.backward_residual(y))

    def forward_residual(self, y: torch.Tensor) -> torch.Tensor:
        """The non-rigid part of :meth:`to_template`, in the template frame."""
        return y + self.forward_net(y)

    def backward_residual(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.backward_net(y)


# --- Coordinates and sampling ------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeFrame:
    """Where a voxel grid sits in centred physical coordinates: centred on 0 unless ``origin``
    (the coordinate of voxel (0, 0, 0)) says otherwise."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] | None = None

    @property
    def step(self) -> torch.Tensor:
        """Coordinate distance between neighbouring voxels, per axis."""
        return torch.tensor([s / COORD_SCALE_MM for s in self.spacing], dtype=torch.float32)

    @property
    def start(self) -> torch.Tensor:
        if self.origin is not None:
            return torch.tensor(self.origin, dtype=torch.float32)
        return -self.half_extent

    @property
    def half_extent(self) -> torch.Tensor:
        """Half the span of the voxel centres, per axis."""
        return torch.tensor(
            [(n - 1) * s / 2.0 / COORD_SCALE_MM for n, s in zip(self.shape, self.spacing)],
            dtype=torch.float32,
        )

    def axes(self, region: Sequence[slice] | None = None) -> list[torch.Tensor]:
        region = region or [slice(0, n) for n in self.shape]
        start, step = self.start, self.step
        return [
            start[a] + step[a] * torch.arange(r.start, r.stop, dtype=torch.float32)
            for a, r in enumerate(region)
        ]

    def grid(self, region: Sequence[slice] | None = None) -> torch.Tensor:
        """Coordinates of the voxels (of ``region``), shape (*region shape, 3)."""
        return torch.stack(torch.meshgrid(*self.axes(region), indexing="ij"), dim=-1)

    def to_normalized(self, coords: torch.Tensor) -> torch.Tensor:
        """grid_sample's [-1, 1] (align_corners=True), axes reversed to (i, j, k)."""
        start = self.start.to(coords.device)
        span = (self.step * torch.tensor([max(n - 1, 1) for n in self.shape])).to(coords.device)
        return ((coords - start) / span * 2 - 1).flip(-1)

    def to_voxel(self, coords: torch.Tensor) -> torch.Tensor:
        """Fractional voxel index of coordinates, axes (k, j, i)."""
        return (coords - self.start.to(coords.device)) / self.step.to(coords.device)


def sample(
    volume: torch.Tensor, frame: VolumeFrame, coords: torch.Tensor, padding_value: float = 0.0
) -> torch.Tensor:
    """Trilinear value of ``volume`` (D, H, W) at coordinates (..., 3); ``padding_value`` outside."""
    flat = coords.reshape(1, 1, 1, -1, 3)
    grid = frame.to_normalized(flat)
    values = F.grid_sample(
        (volume - padding_value)[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return values.reshape(coords.shape[:-1]) + padding_value


def downsample(
    volume: torch.Tensor, spacing: Sequence[float], target_mm: float, max_size: int = 128
) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Average-pool ``volume`` to about ``target_mm`` voxels (at most ``max_size`` per axis)."""
    factors = []
    for n, s in zip(volume.shape, spacing):
        f = max(1, round(target_mm / s), math.ceil(n / max_size))
        factors.append(min(f, n))
    pooled = F.avg_pool3d(volume[None, None], kernel_size=factors, stride=factors, ceil_mode=True)[0, 0]
    new_spacing = tuple(float(s * f) for s, f in zip(spacing, factors))
    # ceil_mode keeps partial windows, so with this spacing the pooled grid can span up to one
    # pooled voxel more than the original; callers that need the exact span (registration's
    # _Pooled) recompute the spacing from it.
    return pooled, new_spacing  # type: ignore[return-value]


# --- Losses ------------------------------------------------------------------------------------


def ncc(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Global normalised cross-correlation of two samples (1 = identical up to gain and offset)."""
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + eps)


def jacobian_determinant(mapping, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mapped coordinates and det of d mapping / d coords at each point (autograd, differentiable)."""
    coords = coords.detach().requires_grad_(True)
    mapped = mapping(coords)
    rows = [torch.autograd.grad(mapped[:, n].sum(), coords, create_graph=True)[0] for n in range(3)]
    jac = torch.stack(rows, dim=1)
    return mapped, torch.linalg.det(jac)


def intensity(hu: torch.Tensor) -> torch.Tensor:
    """HU as registration sees them: soft tissue to bone in [0, 1]; air and metal clipped."""
    return ((hu + 1000.0) / 2000.0).clamp(0.0, 1.0)
