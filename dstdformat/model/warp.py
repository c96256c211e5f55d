"""Dense use of a deformation: evaluate it on a coarse grid once, interpolate it everywhere.

A SIREN evaluated at every voxel of a 512x512x300 scan would cost minutes on a CPU; the
deformation is smooth at a few millimetres, so it is evaluated on a grid of ``spacing_mm`` and
interpolated trilinearly. Decoding a region interpolates only that region's coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .deformation import COORD_SCALE_MM, VolumeFrame, sample

Mapping = Callable[[torch.Tensor], torch.Tensor]

#: Spacing of the grid a deformation is evaluated on.
FIELD_SPACING_MM = 4.0
_BATCH = 1 << 16


def field_shape(frame: VolumeFrame, spacing_mm: float = FIELD_SPACING_MM) -> tuple[int, int, int]:
    """Grid points per axis of a :class:`CoarseField` over ``frame``."""
    extent = [(n - 1) * s for n, s in zip(frame.shape, frame.spacing)]
    return tuple(max(2, math.ceil(e / spacing_mm) + 1) for e in extent)  # type: ignore[return-value]


class CoarseField:
    """``mapping`` sampled on a regular grid spanning ``frame``; trilinear (border-clamped) between."""

    def __init__(self, mapping: Mapping, frame: VolumeFrame, spacing_mm: float = FIELD_SPACING_MM) -> None:
        extent = [(n - 1) * s for n, s in zip(frame.shape, frame.spacing)]
        shape = field_shape(frame, spacing_mm)
        spacing = tuple(e / (n - 1) if e > 0 else 1.0 for e, n in zip(extent, shape))
        self.frame = VolumeFrame(shape, spacing, tuple(float(v) for v in frame.start))  # type: ignore[arg-type]
        points = self.frame.grid().reshape(-1, 3)
        with torch.no_grad():
            values = torch.cat([mapping(points[i : i + _BATCH]) for i in range(0, len(points), _BATCH)])
        self.values = values.reshape(*shape, 3).permute(3, 0, 1, 2).contiguous()

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        grid = self.frame.to_normalized(coords.reshape(1, 1, 1, -1, 3))
        out = F.grid_sample(
            self.values[None], grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        return out.reshape(3, -1).T.reshape(*coords.shape)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest mapped coordinate, per axis."""
        flat = self.values.reshape(3, -1)
        return flat.min(dim=1).values, flat.max(dim=1).values


def inverse_field(
    forward: CoarseField,
    frame: VolumeFrame,
    start: Mapping,
    linear: np.ndarray,
    iterations: int = 20,
    spacing_mm: float = FIELD_SPACING_MM,
) -> CoarseField:
    """The inverse of ``forward`` (scan -> template) on a grid over ``frame`` (template side).

    Starts from ``start`` (the backward network) and corrects by fixed-point iteration
    ``x <- x + A^-1 (y - forward(x))`` with the affine's linear part ``A``, so that the encoder
    warps with the inverse of exactly the field the decoder will use; a backward network alone
    is only as close as the cycle term made it (0.4-3.6 mm measured)."""
    inverse_linear = torch.as_tensor(np.linalg.inv(np.asarray(linear, dtype=np.float64)), dtype=torch.float32)
    field = CoarseField(start, frame, spacing_mm)
    targets = field.frame.grid().reshape(-1, 3)
    with torch.no_grad():
        x = field.values.permute(1, 2, 3, 0).reshape(-1, 3).clone()
        for _ in range(iterations):
            x = x + (targets - forward(x)) @ inverse_linear.T
        field.values = x.reshape(*field.frame.shape, 3).permute(3, 0, 1, 2).contiguous()
    return field


def texture_frame(field: CoarseField, scan: VolumeFrame, linear: np.ndarray) -> VolumeFrame:
    """The grid the texture is stored on: the box ``field`` maps the scan into, with about the
    scan's voxel count (each scan axis keeps its spacing, scaled by how much the affine stretches it)."""
    low, high = field.bounds()
    stretch = np.linalg.norm(np.asarray(linear, dtype=np.float64), axis=0)
    spacing = tuple(float(s * max(f, 1e-3)) for s, f in zip(scan.spacing, stretch))
    step = np.array(spacing) / COORD_SCALE_MM
    # ceil: the last voxel centre reaches the highest mapped point, so no mapped point falls
    # outside the grid (floor left up to a voxel uncovered, read as padding).
    shape = tuple(int(math.ceil(float(h - lo) / st - 1e-6)) + 1 for lo, h, st in zip(low, high, step))
    return VolumeFrame(shape, spacing, tuple(float(v) for v in low))  # type: ignore[arg-type]


def _keys_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Cubic convolution (Keys 1981, a = -0.5, i.e. Catmull-Rom) weights of taps -1, 0, 1, 2."""
    t2, t3 = t * t, t * t * t
    return [(-t3 + 2 * t2 - t) / 2, (3 * t3 - 5 * t2 + 2) / 2, (-3 * t3 + 4 * t2 + t) / 2, (t3 - t2) / 2]


def _outside(voxel: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Points more than half a voxel outside a grid of ``shape`` (fractional voxel indices), or
    not finite."""
    limit = torch.tensor(shape, dtype=voxel.dtype) - 0.5
    return ((voxel < -0.5) | (voxel > limit) | ~torch.isfinite(voxel)).any(dim=-1)


def _bounded(voxel: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``voxel`` brought within [-2, n + 1] on each axis, NaN to -2: points that far out read
    padding anyway, and a forged deformation's huge or non-finite positions must not overflow
    the integer tap indices (they once made a tap fall outside the decoded box)."""
    low = torch.full((3,), -2.0, dtype=voxel.dtype)
    high = torch.tensor(shape, dtype=voxel.dtype) + 1.0
    return torch.nan_to_num(voxel, nan=-2.0).clamp(min=low, max=high)


def cubic_box(voxel: torch.Tensor, shape: Sequence[int]) -> list[slice]:
    """The voxel box of a grid of ``shape`` that :func:`sample_cubic_voxels` reads for ``voxel``
    (fractional indices, (N, 3)): every tap, after edge clamping."""
    base = torch.floor(_bounded(voxel, shape))
    first = (base.min(dim=0).values - 1).long()
    last = (base.max(dim=0).values + 2).long()
    return [
        slice(int(min(max(lo, 0), n - 1)), int(min(max(hi, 0), n - 1)) + 1)
        for lo, hi, n in zip(first.tolist(), last.tolist(), shape)
    ]


def sample_cubic_voxels(
    volume: torch.Tensor,
    voxel: torch.Tensor,
    full_shape: Sequence[int] | None = None,
    box: Sequence[slice] | None = None,
    padding_value: float = 0.0,
) -> torch.Tensor:
    """Cubic-convolution value at fractional voxel indices ``voxel`` (N, 3) of a grid of
    ``full_shape``, of which ``volume`` holds only ``box`` (at least :func:`cubic_box`). The taps
    are clamped to the full grid's edges, so the value of a point is the same whichever box
    holds it: a region read equals that part of the full read."""
    full_shape = tuple(full_shape or volume.shape)
    box = list(box or [slice(0, n) for n in full_shape])
    bounded = _bounded(voxel, full_shape)
    base = torch.floor(bounded)
    frac = bounded - base
    base = base.long()
    weights = [_keys_weights(frac[:, axis]) for axis in range(3)]
    strides = (volume.shape[1] * volume.shape[2], volume.shape[2], 1)
    # Flat offsets of the 4 taps per axis (clamped to the full grid, then made box-relative),
    # computed once, not per inner tap.
    taps = [
        [
            ((base[:, axis] + t - 1).clamp(0, full_shape[axis] - 1) - box[axis].start) * strides[axis]
            for t in range(4)
        ]
        for axis in range(3)
    ]
    flat = volume.reshape(-1)
    out = torch.zeros(len(voxel), dtype=volume.dtype)
    for a in range(4):
        for b in range(4):
            row = taps[0][a] + taps[1][b]
            wab = weights[0][a] * weights[1][b]
            for c in range(4):
                out += wab * weights[2][c] * flat[row + taps[2][c]]
    out[_outside(voxel, full_shape)] = padding_value
    return out


def sample_cubic(
    volume: torch.Tensor, volume_frame: VolumeFrame, coords: torch.Tensor, padding_value: float = 0.0
) -> torch.Tensor:
    """Cubic-convolution value of ``volume`` at coordinates (..., 3): local (4 taps per axis, edges
    clamped), interpolating, and the same for a point whatever else is sampled with it. Points
    more than half a voxel outside get ``padding_value``."""
    voxel = volume_frame.to_voxel(coords.reshape(-1, 3))
    out = sample_cubic_voxels(volume, voxel, padding_value=padding_value)
    return out.reshape(coords.shape[:-1])


def resample(
    volume: torch.Tensor,
    volume_frame: VolumeFrame,
    field: CoarseField,
    out_frame: VolumeFrame,
    region: Sequence[slice] | None = None,
    padding_value: float = -1024.0,
    slab: int = 8,
    order: int | str = 1,
) -> torch.Tensor:
    """``out[v] = volume(field(coords of v))`` over ``region`` of ``out_frame``, slab by slab.

    ``order`` 1 is trilinear (torch, any device); 3 is a cubic B-spline (scipy, CPU), which loses
    far less detail when a volume is resampled twice (a sub-voxel shift there and back: 7.8 HU
    MAE against 20.5 trilinear on a 1.4 mm lung scan); ``"keys"`` is cubic convolution, local
    like trilinear (a region equals that part of the whole), between the two in detail kept."""
    region = list(region or [slice(0, n) for n in out_frame.shape])
    out = torch.empty(tuple(r.stop - r.start for r in region), dtype=torch.float32)
    if order == 3:
        from scipy import ndimage

        coefficients = ndimage.spline_filter(volume.double().cpu().numpy(), order=3, mode="nearest")
    elif order not in (1, "keys"):
        raise ValueError(f"interpolation order must be 1, 3 or 'keys', not {order!r}")
    for k in range(region[0].start, region[0].stop, slab):
        part = [slice(k, min(k + slab, region[0].stop)), *region[1:]]
        coords = field(out_frame.grid(part))
        rows = slice(k - region[0].start, part[0].stop - region[0].start)
        if order == 1:
            out[rows] = sample(volume, volume_frame, coords, padding_value)
            continue
        if order == "keys":
            out[rows] = sample_cubic(volume, volume_frame, coords, padding_value)
            continue
        voxel = volume_frame.to_voxel(coords).double()
        values = ndimage.map_coordinates(
            coefficients, np.moveaxis(voxel.numpy(), -1, 0), order=3, mode="nearest", prefilter=False
        )
        values[_outside(voxel, volume_frame.shape).numpy()] = padding_value
        out[rows] = torch.from_numpy(values.astype(np.float32))
    return out
