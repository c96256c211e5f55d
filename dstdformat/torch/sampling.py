"""Where patches come from: uniform random corners, corners around voxels of chosen label
classes, or a regular grid over every scan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError, PatchTooLargeError

Corner = tuple[int, int, int]
#: Voxels of one label class kept per scan for sampling around them (a random subset beyond).
MAX_CLASS_VOXELS = 200_000


def check_patch(patch: Sequence[int], shape: Sequence[int], name: str) -> tuple[int, int, int]:
    if len(patch) != 3 or not all(isinstance(p, (int, np.integer)) and p >= 1 for p in patch):
        raise InvalidInputError(f"patch_size must be three positive integers, got {patch!r}")
    if any(p > s for p, s in zip(patch, shape)):
        raise PatchTooLargeError(
            f"patch {tuple(int(p) for p in patch)} is larger than {name} of shape {tuple(shape)}"
        )
    return tuple(int(p) for p in patch)  # type: ignore[return-value]


def random_corner(rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int]) -> Corner:
    return tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch))  # type: ignore


def corner_around(voxel: Sequence[int], shape: Sequence[int], patch: Sequence[int]) -> Corner:
    """The corner of the patch centred on ``voxel``, moved inside the scan."""
    return tuple(  # type: ignore[return-value]
        int(min(max(v - p // 2, 0), s - p)) for v, s, p in zip(voxel, shape, patch)
    )


def grid_corners(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> list[Corner]:
    """Corners of patches every ``stride`` voxels, the last of each axis flush with its end, so
    every voxel is in at least one patch."""
    axes = []
    for s, p, step in zip(shape, patch, stride):
        starts = list(range(0, s - p + 1, step))
        if starts[-1] != s - p:
            starts.append(s - p)
        axes.append(starts)
    return [(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]]


def centring_ratios(foreground: float, ratios: Mapping[int, float] | None) -> dict[int | None, float]:
    """Probability of centring a patch on each label class (None: anywhere), from the
    ``foreground`` probability (any label > 0) or per-class ``ratios``."""
    if ratios is not None:
        if foreground:
            raise InvalidInputError("give foreground or class_ratios, not both")
        weights = {int(c): float(w) for c, w in ratios.items()}
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise InvalidInputError(f"class_ratios must be non-negative with a positive sum, got {ratios!r}")
        total = sum(weights.values())
        return {c: w / total for c, w in weights.items()}
    if not 0.0 <= float(foreground) <= 1.0:
        raise InvalidInputError(f"foreground must be a probability in 0..1, got {foreground!r}")
    return {None: 1.0 - float(foreground), -1: float(foreground)} if foreground else {None: 1.0}


def class_voxels(label: np.ndarray, classes: Sequence[int | None], rng: np.random.Generator) -> dict:
    """For each class (-1: any label > 0), up to MAX_CLASS_VOXELS of its voxels' coordinates."""
    found = {}
    for c in classes:
        if c is None:
            continue
        mask = label > 0 if c == -1 else label == c
        coords = np.argwhere(mask)
        if len(coords) > MAX_CLASS_VOXELS:
            coords = coords[rng.choice(len(coords), MAX_CLASS_VOXELS, replace=False)]
        found[c] = coords.astype(np.int32)
    return found
