"""The SPERR base layer under the contract: its knob is bits per voxel, which it hits closely.

Its ratio search plans the rate from the budget, encodes, measures the real total and corrects the
rate (a few passes at most); its quality search bisects each tile's rate in log space. It is the
only layer that bounds every voxel by itself (SPERR's point-wise error mode), and files record
nothing about it: every deepstd file from before there was a choice is SPERR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ....progress import track
from ....tiling import TileGrid
from . import bounded, sperr
from .contract import BaseLayerCoder, QualityOf, TileBlocks

#: Bits per voxel the searches never leave (below, SPERR's stream headers dominate; above, use
#: the lossless codec).
MIN_BPV, MAX_BPV = 1e-3, 8.0
#: The ratio search stops correcting once the achieved total is this close to the budget.
RATIO_TOLERANCE = 0.03
MAX_PASSES = 4
#: Bisection steps of the quality search.
QUALITY_STEPS = 10


class SperrLayer(BaseLayerCoder):
    """3D wavelets (CDF 9/7 + SPECK bit planes), one SPERR stream per tile."""

    layer_id = "sperr"
    label = "SPERR layer"
    modes = frozenset({"ratio", "quality", "max_error"})
    max_extent = sperr.MAX_EXTENT
    format_version = 2

    @classmethod
    def for_encoding(cls, window: tuple[float, float], preset: int | None = None) -> SperrLayer:
        return cls()

    @classmethod
    def from_record(cls, record: dict | None, n_tiles: int) -> SperrLayer:
        return cls()

    def record(self, knobs: Sequence[float]) -> None:
        return None

    def encode(self, block: np.ndarray, knob: float, what: str) -> bytes:
        return bounded.encode_sperr_rate(block, knob, what)

    def encode_bound(self, block: np.ndarray, tolerance: float, what: str) -> bytes:
        return bounded.encode_sperr_bound(block, tolerance, what)

    def decode(
        self,
        payload: bytes,
        shape: tuple[int, int, int],
        *,
        what: str,
        trusted: bool = False,
        dtype: np.dtype | type = np.float32,
        depth: int | None = None,
    ) -> np.ndarray:
        # A 3D wavelet stream has no early stop: every slice is decoded.
        return sperr.decode(payload, shape, what=what, trusted=trusted, dtype=dtype)

    def rate_of(self, stream: bytes, knob: float, shape: tuple[int, ...]) -> float:
        return float(knob)  # the asked rate, which the SPERR-trained network was told

    def code_budget(
        self, blocks: TileBlocks, grid: TileGrid, budget: float, ratio: float, clamp: bool, progress: bool
    ) -> tuple[list[bytes], list[float]]:
        tiles = list(grid)
        streams: list[bytes] = []
        voxels = sum(int(np.prod(sperr.padded_shape(grid.tile_extent(t)))) for t in tiles)
        passes = 0

        def encode_all(bits_per_voxel: float) -> int:
            nonlocal passes
            passes += 1
            streams.clear()
            desc = f"{self.label} (pass {passes})"
            for tile in track(tiles, enabled=progress, desc=desc, unit="tile", leave=False):
                streams.append(self.encode(blocks(tile), bits_per_voxel, f"tile {tile}"))
            return sum(map(len, streams))

        bits_per_voxel, _ = rate_for_budget(encode_all, budget, 8.0 * budget / voxels)
        return streams, [bits_per_voxel] * len(tiles)

    def code_quality(
        self, block: np.ndarray, target_db: float, quality_of: QualityOf, what: str
    ) -> tuple[bytes, float]:
        """Bisection in log space between MIN_BPV and MAX_BPV."""

        def attempt(bits_per_voxel: float) -> tuple[float, bytes]:
            payload = self.encode(block, bits_per_voxel, what)
            return quality_of(payload), payload

        quality, payload = attempt(MAX_BPV)
        best = (payload, MAX_BPV)
        if quality < target_db:
            return best
        lo, hi = math.log(MIN_BPV), math.log(MAX_BPV)
        for _ in range(QUALITY_STEPS):
            mid = 0.5 * (lo + hi)
            quality, payload = attempt(math.exp(mid))
            if quality >= target_db:
                hi, best = mid, (payload, math.exp(mid))
            else:
                lo = mid
        return best


def rate_for_budget(
    encode_all: Callable[[float], int], budget_bytes: float, first_bpv: float
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
