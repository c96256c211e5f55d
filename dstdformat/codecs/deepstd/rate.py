"""Rate control: pick the SPERR layer's bits per voxel so the whole file lands on a ratio or quality.

The wavelet coder hits a requested bits-per-voxel closely but not exactly, and outliers, stream
headers and the container add bytes of their own; so the ratio mode plans a budget, encodes,
measures the real total and corrects the rate (a few passes at most). The quality mode searches
each tile's rate by bisection until the tile reaches the asked PSNR.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .base_layers import bounded, sperr

#: Bits per voxel the search never leaves (below, SPERR's stream headers dominate; above, use
#: the lossless codec).
MIN_BPV, MAX_BPV = 1e-3, 8.0
#: Ratio mode stops correcting once the achieved total is this close to the budget.
RATIO_TOLERANCE = 0.03
MAX_PASSES = 4


def psnr(reference: np.ndarray, decoded: np.ndarray, peak: float, counted: np.ndarray | None = None) -> float:
    """PSNR over the voxels in ``counted`` (all when None)."""
    error = (reference - decoded) ** 2
    if counted is not None:
        if not counted.any():
            return math.inf
        error = error[counted]
    mse = float(np.mean(error))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def rate_for_quality(
    block: np.ndarray,
    target_db: float,
    peak: float,
    counted: np.ndarray | None = None,
    steps: int = 10,
    what: str = "a tile",
) -> tuple[float, bytes]:
    """The lowest rate (bisection in log space) at which ``block`` decodes at ``target_db`` or more.

    ``counted`` leaves out voxels stored exactly elsewhere (they do not reach the user from here).
    """

    def attempt(bpv: float) -> tuple[float, bytes]:
        payload = bounded.encode_sperr_rate(block, bpv, what)
        return psnr(block, sperr.decode(payload, block.shape, trusted=True), peak, counted), payload

    quality, payload = attempt(MAX_BPV)
    best = (MAX_BPV, payload)
    if quality < target_db:
        return best
    lo, hi = math.log(MIN_BPV), math.log(MAX_BPV)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        quality, payload = attempt(math.exp(mid))
        if quality >= target_db:
            hi, best = mid, (math.exp(mid), payload)
        else:
            lo = mid
    return best


def rate_for_budget(
    encode_all: Callable[[float], int],
    budget_bytes: float,
    first_bpv: float,
) -> tuple[float, int]:
    """Correct the rate until ``encode_all(bpv)`` (total bytes) is within tolerance of the budget.

    Returns the last rate and its size; the caller keeps what that pass produced.
    """
    bpv = min(max(first_bpv, MIN_BPV), MAX_BPV)
    size = encode_all(bpv)
    for _ in range(MAX_PASSES - 1):
        error = size / budget_bytes
        if abs(error - 1.0) <= RATIO_TOLERANCE:
            break
        new_bpv = min(max(bpv / error, MIN_BPV), MAX_BPV)
        if new_bpv == bpv:
            break
        bpv = new_bpv
        size = encode_all(bpv)
    return bpv, size
