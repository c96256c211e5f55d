"""Fitting a scan to the template: affine pre-alignment, then the cycle-consistent SIREN pair.

Both stages work on copies of the volumes pooled to a few millimetres: the deformation is smooth,
and the loss only needs anatomy to line up. The loss is DeepSTD's: ``-NCC`` of the image pairs in
both directions, a penalty on ``|1 - det J|`` of the non-rigid part, and a cycle term
``|psi(phi(x)) - x|`` in millimetres.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from .deformation import (
    COORD_SCALE_MM,
    AffineMap,
    CycleDeformation,
    SirenConfig,
    VolumeFrame,
    downsample,
    intensity,
    jacobian_determinant,
    ncc,
    sample,
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RegistrationConfig:
    """Defaults follow the paper where it says (2,500 Adam steps at 1e-4, 4,096 points, weights
    0.05 and 0.001); the SIREN is narrower than its 3-256-256-3 so the shape code stays small."""

    siren: SirenConfig = field(default_factory=SirenConfig)
    resolution_mm: float = 3.0
    affine_steps: int = 200
    affine_lr: float = 1e-2
    steps: int = 2500
    learning_rate: float = 1e-4
    points: int = 4096
    jacobian_weight: float = 0.05
    cycle_weight: float = 0.001
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RegistrationResult:
    deformation: CycleDeformation
    ncc_start: float  #: centroids aligned only
    ncc_affine: float
    ncc_final: float
    folding_fraction: float  #: share of scan points where det J of the non-rigid part is <= 0
    cycle_error_mm: float  #: mean |psi(phi(x)) - x| over the scan
    seconds: float

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "deformation"}


class _Pooled:
    """A volume pooled to registration resolution, with its frame and intensity image."""

    def __init__(self, hu: np.ndarray | torch.Tensor, spacing: Sequence[float], resolution_mm: float) -> None:
        volume = torch.as_tensor(np.asarray(hu, dtype=np.float32))
        pooled, pooled_spacing = downsample(intensity(volume), spacing, resolution_mm)
        self.image = pooled
        # The pooled grid keeps the physical extent of the original voxel centres' span.
        full = VolumeFrame(tuple(volume.shape), tuple(float(s) for s in spacing))  # type: ignore[arg-type]
        half = full.half_extent
        self.frame = VolumeFrame(
            tuple(pooled.shape),  # type: ignore[arg-type]
            tuple(
                float(2 * h * COORD_SCALE_MM / max(n - 1, 1)) if n > 1 else float(s)
                for h, n, s in zip(half, pooled.shape, pooled_spacing)
            ),  # type: ignore[arg-type]
        )
        self.half = self.frame.half_extent

    def random_points(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand(n, 3, generator=generator) * 2 - 1) * self.half

    def centroid(self) -> torch.Tensor:
        """Intensity-weighted centre of the body (air has intensity 0)."""
        coords = self.frame.grid()
        weights = self.image.clamp_min(0)
        return (coords * weights[..., None]).sum(dim=(0, 1, 2)) / weights.sum().clamp_min(1e-6)

    def value(self, coords: torch.Tensor) -> torch.Tensor:
        return sample(self.image, self.frame, coords)


def _evaluate(
    deformation: CycleDeformation, scan: _Pooled, template: _Pooled, points: torch.Tensor
) -> tuple[float, float, float]:
    """NCC at the points, folding fraction and cycle error (mm)."""
    mapped, det = jacobian_determinant(deformation.forward_residual, deformation.affine(points))
    with torch.no_grad():
        score = float(ncc(scan.value(points), template.value(mapped)))
        back = deformation.to_scan(mapped)
        cycle = float((back - points).norm(dim=-1).mean() * COORD_SCALE_MM)
    return score, float((det <= 0).float().mean()), cycle


def register(
    scan_hu: np.ndarray,
    scan_spacing: Sequence[float],
    template_hu: np.ndarray,
    template_spacing: Sequence[float],
    config: RegistrationConfig = RegistrationConfig(),
    progress: Progress | None = None,
    affine_from: RegistrationResult | None = None,
) -> RegistrationResult:
    """Fit ``phi`` (scan -> template) and ``psi`` (template -> scan). Deterministic for a seed on
    one device and thread count. ``affine_from``: an earlier (affine-only) fit of the same pair
    whose affine is kept, skipping the affine stage."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    scan = _Pooled(scan_hu, scan_spacing, config.resolution_mm)
    template = _Pooled(template_hu, template_spacing, config.resolution_mm)
    eval_points = scan.random_points(8192, torch.Generator().manual_seed(config.seed + 1))

    # 1. Affine: start from the centroids lined up, then maximise NCC of scan vs template.
    if affine_from is not None:
        affine = AffineMap.from_array(affine_from.deformation.affine.as_array())
        ncc_start = affine_from.ncc_start
        config = replace(config, affine_steps=0)
    else:
        affine = AffineMap((template.centroid() - scan.centroid()).tolist())
        with torch.no_grad():
            ncc_start = float(ncc(scan.value(eval_points), template.value(affine(eval_points))))
    total = config.affine_steps + config.steps
    optimiser = torch.optim.Adam(affine.parameters(), lr=config.affine_lr)
    # Decay to zero: Adam at a fixed rate keeps wobbling around the optimum of 12 parameters.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 1.0 - step / max(config.affine_steps, 1)
    )
    for step in range(config.affine_steps):
        points = scan.random_points(config.points, generator)
        loss = -ncc(scan.value(points), template.value(affine(points)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress:
            progress(step + 1, total)
    with torch.no_grad():
        ncc_affine = float(ncc(scan.value(eval_points), template.value(affine(eval_points))))
    for parameter in affine.parameters():
        parameter.requires_grad_(False)

    # 2. The SIREN pair around the fixed affine.
    deformation = CycleDeformation(affine, config.siren)
    networks = list(deformation.forward_net.parameters()) + list(deformation.backward_net.parameters())
    optimiser = torch.optim.Adam(networks, lr=config.learning_rate)
    for step in range(config.steps):
        x = scan.random_points(config.points, generator)
        y = template.random_points(config.points, generator)
        y_of_x, det_f = jacobian_determinant(deformation.forward_residual, affine(x))
        z_of_y, det_b = jacobian_determinant(deformation.backward_residual, y)
        x_of_y = affine.inverse(z_of_y)
        image = -ncc(scan.value(x), template.value(y_of_x)) - ncc(template.value(y), scan.value(x_of_y))
        jacobian = (1 - det_f).abs().mean() + (1 - det_b).abs().mean()
        cycle_x = deformation.to_scan(y_of_x) - x
        cycle_y = deformation.to_template(x_of_y) - y
        cycle = ((cycle_x**2).sum(-1).mean() + (cycle_y**2).sum(-1).mean()) * COORD_SCALE_MM**2
        loss = image + config.jacobian_weight * jacobian + config.cycle_weight * cycle
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress:
            progress(config.affine_steps + step + 1, total)

    score, folding, cycle_mm = _evaluate(deformation, scan, template, eval_points)
    return RegistrationResult(
        deformation, ncc_start, ncc_affine, score, folding, cycle_mm, time.perf_counter() - started
    )
