"""Small helpers the benchmark scripts share."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

#: The shared CT collection beside the repository (benchmarks skip or ask for a scan without it).
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct"


def timed(fn):
    """(result, seconds) of calling ``fn``."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def mirror_slices(array: np.ndarray, slices: int) -> np.ndarray:
    """``array`` extended to ``slices`` slices by mirroring it along axis 0 (real anatomy, any
    length)."""
    parts, total = [], 0
    while total < slices:
        part = array if len(parts) % 2 == 0 else array[::-1]
        parts.append(part[: slices - total])
        total += len(parts[-1])
    return np.ascontiguousarray(np.concatenate(parts))
