"""CT quality metrics for judging lossy codecs: numpy and scipy only, bounded memory.

Conventions (fixed so numbers compare across runs and codecs):

* Intensities are in HU. PSNR and SSIM first clip both volumes to ``[-1024, 3071]`` and use a
  data range of 4095 HU.
* SSIM is 3D with a Gaussian window (sigma 1.5 voxels, truncated at 3.5 sigma), K1 = 0.01,
  K2 = 0.03 (Wang et al. 2004), averaged over every voxel. It is computed in slabs along axis 0
  with a halo, so memory stays bounded on a 512x512x300 volume.
* The downstream-task proxy (the paper reports organ Dice / HD95 after decoding) segments the
  original and the decoded volume the same way -- body, lungs and bone by thresholds and connected
  components (see :func:`ct_masks`) -- and compares the masks with Dice and HD95 in millimetres.
* HD95 is the larger of the two directed 95th-percentile surface distances (as MONAI computes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import InvalidInputError
from .metadata import HU_WINDOW

HU_CLIP = HU_WINDOW
DATA_RANGE = HU_CLIP[1] - HU_CLIP[0]
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
#: Slices per slab for the slab-wise computations (bounded memory).
SLAB = 32


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise InvalidInputError(f"volumes differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise InvalidInputError("volumes are empty")
    return a, b


def _slabs(n: int, step: int = SLAB):
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def mae(original: Any, decoded: Any) -> float:
    """Mean absolute error (HU)."""
    a, b = _pair(original, decoded)
    total = 0.0
    for s in _slabs(a.shape[0]):
        total += float(np.abs(a[s].astype(np.float64) - b[s]).sum())
    return total / a.size


def _exact_integers(a: np.ndarray, b: np.ndarray) -> type | None:
    """An integer type in which the differences of two integer volumes and the squares of their
    HU_CLIP-clipped differences are exact (int32 for up to 16-bit values, int64 for 32-bit ones;
    sums in int64), or None: float64 sums of them are exact too (below 2**53), so the error
    sums come out identical with less memory traffic."""
    if not (a.dtype.kind in "iu" and b.dtype.kind in "iu" and max(a.itemsize, b.itemsize) <= 4):
        return None
    if not all(float(v).is_integer() for v in HU_CLIP):
        return None
    return np.int32 if max(a.itemsize, b.itemsize) <= 2 else np.int64


def max_error(original: Any, decoded: Any) -> float:
    """Largest absolute error (HU)."""
    a, b = _pair(original, decoded)
    return max(float(np.abs(a[s].astype(np.float64) - b[s]).max()) for s in _slabs(a.shape[0]))


def error_summary(
    original: np.ndarray, decoded: np.ndarray, slope: float = 1.0, intercept: float = 0.0
) -> dict[str, Any]:
    """MAE, largest error (HU) and PSNR (dB, clipped to :data:`HU_CLIP`, range 4095) of stored
    values under ``value * slope + intercept``, in one slab-wise pass; what a lossy file records
    about itself (``stats.error``). PSNR is None for identical volumes."""
    a, b = _pair(original, decoded)
    total = largest = squares = 0.0
    exact = _exact_integers(a, b) if (slope, intercept) == (1.0, 0.0) else None
    low, high = (int(v) for v in HU_CLIP) if exact is not None else HU_CLIP
    sums = None if exact is None else np.int64  # exact integer sums; float64 ones otherwise
    for s in _slabs(a.shape[0]):
        if exact is not None:  # integers: the same sums, exactly, in a third of the time
            x, y = a[s].astype(exact), b[s].astype(exact)
        else:
            x = a[s].astype(np.float64) * slope + intercept
            y = b[s].astype(np.float64) * slope + intercept
        difference = np.abs(x - y)
        total += float(difference.sum(dtype=sums))
        largest = max(largest, float(difference.max()))
        np.clip(x, low, high, out=x)
        np.clip(y, low, high, out=y)
        x -= y
        np.square(x, out=x)
        squares += float(x.sum(dtype=sums))
    mse = squares / a.size
    return {
        "mae_hu": round(total / a.size, 4),
        "max_error_hu": round(largest, 4),
        "psnr_db": None if mse == 0 else round(float(10 * np.log10(DATA_RANGE**2 / mse)), 4),
        "psnr_window_hu": list(HU_CLIP),
    }


def psnr(
    original: Any, decoded: Any, data_range: float = DATA_RANGE, clip: tuple[float, float] | None = HU_CLIP
) -> float:
    """Peak signal-to-noise ratio in dB after clipping; ``inf`` for identical volumes."""
    a, b = _pair(original, decoded)
    sq = 0.0
    for s in _slabs(a.shape[0]):
        x, y = a[s].astype(np.float64), b[s].astype(np.float64)
        if clip is not None:
            x, y = np.clip(x, *clip), np.clip(y, *clip)
        sq += float(np.square(x - y).sum())
    mse = sq / a.size
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(
    original: Any, decoded: Any, data_range: float = DATA_RANGE, clip: tuple[float, float] | None = HU_CLIP
) -> float:
    """Mean 3D structural similarity (Gaussian window, see module docstring)."""
    a, b = _pair(original, decoded)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    halo = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    n = a.shape[0]
    total = 0.0

    def blur(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    for s in _slabs(n):
        lo, hi = max(0, s.start - halo), min(n, s.stop + halo)
        x, y = a[lo:hi].astype(np.float64), b[lo:hi].astype(np.float64)
        if clip is not None:
            np.clip(x, *clip, out=x)
            np.clip(y, *clip, out=y)
        # reflect at the true volume edges only: pad the slab where it touches them
        pad = (halo if lo == 0 else 0, halo if hi == n else 0)
        if any(pad):
            x = np.pad(x, (pad, (0, 0), (0, 0)), mode="symmetric")
            y = np.pad(y, (pad, (0, 0), (0, 0)), mode="symmetric")
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        inner = slice(s.start - lo + pad[0], s.stop - lo + pad[0])
        total += float(smap[inner].sum())
    return total / a.size


def dice(mask_a: Any, mask_b: Any) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty."""
    a, b = _pair(mask_a, mask_b)
    a, b = a.astype(bool), b.astype(bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(mask_a: Any, mask_b: Any, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th-percentile Hausdorff distance (mm) between mask surfaces.

    0 when both masks are empty; ``inf`` when exactly one is.
    """
    a, b = _pair(mask_a, mask_b)
    a, b = a.astype(bool), b.astype(bool)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("inf")
    # Work inside the bounding box of both masks (plus one voxel) to keep the EDT small.
    union = ndimage.find_objects((a | b).astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(union, a.shape))
    a, b = a[box], b[box]
    if np.array_equal(a, b):
        return 0.0
    scale = np.asarray(spacing, dtype=np.float64)
    pa = np.argwhere(_surface(a)) * scale
    pb = np.argwhere(_surface(b)) * scale
    # Nearest-surface-point distances through k-d trees: exact, and far cheaper than two
    # Euclidean distance transforms over the bounding box.
    d_ab = cKDTree(pb).query(pa, workers=-1)[0]
    d_ba = cKDTree(pa).query(pb, workers=-1)[0]
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def _largest_components(mask: np.ndarray, keep: int = 1, min_fraction: float = 0.0) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [i + 1 for i in order if sizes[i] >= min_fraction * sizes[order[0]]]
    return np.isin(labels, chosen)


def ct_masks(volume: Any) -> dict[str, np.ndarray]:
    """Body, lung and bone masks by thresholds and connected components (HU input).

    * body: voxels above -500 HU, largest connected component, holes filled slice by slice.
    * lungs: voxels below -400 HU inside the body, in the (up to) two largest components of at
      least 10% the size of the largest (air in the bowel is smaller and dropped).
    * bone: voxels above 250 HU inside the body, components of at least 1% of the largest.
    """
    v = np.asarray(volume)
    body = _largest_components(v > -500)
    for z in range(body.shape[0]):
        body[z] = ndimage.binary_fill_holes(body[z])
    lungs = _largest_components((v < -400) & body, keep=2, min_fraction=0.1)
    bone = _largest_components((v > 250) & body, keep=1000, min_fraction=0.01)
    return {"body": body, "lungs": lungs, "bone": bone}


def all_metrics(original: Any, decoded: Any, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Every metric above; mask metrics as ``dice_<mask>`` and ``hd95_<mask>`` (mm)."""
    a, b = _pair(original, decoded)
    out = {"mae": mae(a, b), "max_error": max_error(a, b), "psnr": psnr(a, b), "ssim": ssim(a, b)}
    masks_a, masks_b = ct_masks(a), ct_masks(b)
    for name in masks_a:
        out[f"dice_{name}"] = dice(masks_a[name], masks_b[name])
        out[f"hd95_{name}"] = hd95(masks_a[name], masks_b[name], spacing)
    return out
