"""Scan metadata: geometry and intensity facts that travel with a volume through every format.

Conventions (also in SPEC.md):

* Arrays are 3D and indexed ``[k, j, i]`` -- axis 0 is the slowest, usually the axial (z) axis,
  so ``volume[z]`` is an axial slice. Readers of NIfTI (stored ``[i, j, k]``) transpose on import
  and back on export.
* ``affine`` maps an array index ``(a0, a1, a2, 1)`` to world coordinates in millimetres, RAS+
  (the NIfTI convention), *in array axis order*. ``spacing`` is the length of its first three
  columns, so ``spacing[0]`` is the step along axis 0.
* Physical value (HU for CT) = stored value * ``slope`` + ``intercept``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np

from .errors import InvalidInputError

#: The CT window in HU, air (-1024) to dense bone (3071): 4096 levels, 12 bits. The lossy codecs
#: code it, the metrics clip to it, the training normalises by it; declared here only.
HU_WINDOW = (-1024.0, 3071.0)

#: Permutation between NIfTI's ``[i, j, k]`` and our ``[k, j, i]`` index order (its own inverse).
IJK_TO_KJI = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def _as_affine(value: Any) -> np.ndarray:
    try:
        affine = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"affine must be a 4x4 array of numbers: {exc}") from None
    if affine.shape != (4, 4):
        raise InvalidInputError(f"affine must be 4x4, got shape {affine.shape}")
    if not np.all(np.isfinite(affine)):
        raise InvalidInputError("affine contains NaN or infinity")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise InvalidInputError(f"affine's last row must be [0, 0, 0, 1], got {affine[3].tolist()}")
    return affine


def _as_spacing(value: Any) -> tuple[float, float, float]:
    try:
        spacing = tuple(float(s) for s in value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"spacing must be three numbers: {exc}") from None
    if len(spacing) != 3:
        raise InvalidInputError(f"spacing must have 3 values, got {len(spacing)}")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InvalidInputError(f"spacing values must be finite and positive, got {spacing}")
    return spacing  # type: ignore[return-value]


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel step in mm along each array axis: the norms of the affine's first three columns."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return tuple(float(n) for n in norms)  # type: ignore[return-value]


#: Names of the world axes, the affine's rows (RAS+ as NIfTI defines it: +x right, +y anterior, +z superior).
WORLD_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class AxisGeometry:
    """Where each array axis lies in the world, for formats that only know a per-axis scale and
    translation (OME-Zarr, xarray coordinates).

    Array axis ``a`` runs along world axis ``world_axes[a]``; index ``n`` along it sits at
    ``origin[a] + step[a] * n`` mm on that world axis (``step`` is negative for a flipped axis).
    Exact for affines that only permute, flip and scale the axes; for ``oblique`` ones it is the
    nearest such reading and the affine remains the truth.
    """

    origin: tuple[float, float, float]
    step: tuple[float, float, float]
    world_axes: tuple[str, str, str]
    oblique: bool


def axis_geometry(affine: np.ndarray, tolerance: float = 1e-6) -> AxisGeometry:
    """The :class:`AxisGeometry` of a 4x4 affine mapping (k, j, i, 1) to world millimetres."""
    matrix = np.asarray(affine, dtype=np.float64)
    rotation = matrix[:3, :3]
    rows = [int(np.argmax(np.abs(rotation[:, axis]))) for axis in range(3)]
    if len(set(rows)) != 3:  # two array axes closest to one world axis: take the best assignment
        rows = list(
            max(permutations(range(3)), key=lambda order: sum(abs(rotation[order[a], a]) for a in range(3)))
        )
    kept = np.zeros_like(rotation)
    for axis, row in enumerate(rows):
        kept[row, axis] = rotation[row, axis]
    scale = float(np.abs(rotation).max()) or 1.0
    oblique = bool(np.abs(rotation - kept).max() > tolerance * scale)
    return AxisGeometry(
        origin=tuple(float(matrix[row, 3]) for row in rows),  # type: ignore[arg-type]
        step=tuple(float(rotation[row, axis]) for axis, row in enumerate(rows)),  # type: ignore[arg-type]
        world_axes=tuple(WORLD_AXES[row] for row in rows),  # type: ignore[arg-type]
        oblique=oblique,
    )


@dataclass
class ScanMetadata:
    """Geometry, intensity scaling and descriptive attributes of one 3D scan."""

    spacing: tuple[float, float, float] | None = None
    affine: np.ndarray | None = None
    slope: float = 1.0
    intercept: float = 0.0
    modality: str | None = None
    original_dtype: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Format-specific facts needed to export faithfully (e.g. NIfTI qform/sform and codes).
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.affine is not None:
            self.affine = _as_affine(self.affine)
        if self.spacing is not None:
            self.spacing = _as_spacing(self.spacing)
        if self.affine is not None and self.spacing is not None:
            implied = spacing_from_affine(self.affine)
            if not np.allclose(implied, self.spacing, rtol=1e-4, atol=1e-6):
                raise InvalidInputError(
                    f"spacing {self.spacing} disagrees with the affine, whose columns give "
                    f"{tuple(round(v, 6) for v in implied)}"
                )
        if self.affine is None and self.spacing is not None:
            self.affine = np.diag([*self.spacing, 1.0])
        elif self.spacing is None and self.affine is not None:
            self.spacing = _as_spacing(spacing_from_affine(self.affine))
        elif self.spacing is None:
            self.spacing = (1.0, 1.0, 1.0)
            self.affine = np.eye(4)
        for name in ("slope", "intercept"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
            if not math.isfinite(value):
                raise InvalidInputError(f"{name} must be finite, got {value}")
            setattr(self, name, value)
        if self.slope == 0:
            raise InvalidInputError("slope must not be zero")
        for name in ("attributes", "provenance"):
            if not isinstance(getattr(self, name), Mapping):
                raise InvalidInputError(f"{name} must be a mapping")
            setattr(self, name, dict(getattr(self, name)))
        for name in ("modality", "original_dtype"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"{name} must be a string, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the ``metadata`` member of a ``.dstd`` header."""
        assert self.affine is not None and self.spacing is not None
        return {
            "spacing": list(self.spacing),
            "affine": self.affine.tolist(),
            "slope": self.slope,
            "intercept": self.intercept,
            "modality": self.modality,
            "original_dtype": self.original_dtype,
            "attributes": self.attributes,
            "provenance": self.provenance,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScanMetadata:
        return cls(
            spacing=data.get("spacing"),
            affine=data.get("affine"),
            slope=data.get("slope", 1.0),
            intercept=data.get("intercept", 0.0),
            modality=data.get("modality"),
            original_dtype=data.get("original_dtype"),
            attributes=data.get("attributes") or {},
            provenance=data.get("provenance") or {},
        )

    def replace(self, **changes: Any) -> ScanMetadata:
        """A copy with ``changes``; changing only one of spacing/affine keeps the other consistent.

        A new ``spacing`` alone rescales the affine's columns (orientation and origin kept); a new
        ``affine`` alone implies its spacing.
        """
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise InvalidInputError(
                f"unknown metadata field(s) {sorted(unknown)}; valid: {', '.join(FIELDS)}"
            )
        data = self.to_json()
        if "affine" in changes and "spacing" not in changes:
            data["spacing"] = None
        elif "spacing" in changes and "affine" not in changes and changes["spacing"] is not None:
            spacing = _as_spacing(changes["spacing"])
            affine = np.array(self.affine, dtype=np.float64)
            affine[:3, :3] = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0) * spacing
            data["affine"] = affine
        data.update(changes)
        return ScanMetadata.from_json(data)


FIELDS = ("spacing", "affine", "slope", "intercept", "modality", "original_dtype", "attributes", "provenance")


@dataclass
class Scan:
    """A 3D array (indexed ``[k, j, i]``) with its metadata: what readers return and writers take."""

    array: np.ndarray
    metadata: ScanMetadata = field(default_factory=ScanMetadata)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def affine(self) -> np.ndarray:
        assert self.metadata.affine is not None
        return self.metadata.affine

    @property
    def spacing(self) -> Sequence[float]:
        assert self.metadata.spacing is not None
        return self.metadata.spacing
