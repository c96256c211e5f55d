"""The shape policy's comparison: how close a candidate encoding decodes to the original."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ... import metrics
from ...progress import track
from ...tiling import Region
from ..base import DecodeContext, Encoded, Fetch


def decoded_mae(
    decode_region: Callable[[DecodeContext, Region, Fetch], np.ndarray],
    ctx: DecodeContext,
    array: np.ndarray,
    encoded: Encoded,
    slope: float,
    progress: bool,
) -> float:
    """MAE (physical units) of what ``encoded`` (described by ``ctx``) decodes to, a tile row at
    a time; ``encoded.sections`` stays readable."""
    sections = list(encoded.sections)
    encoded.sections = iter(sections)
    payloads = {(sec.kind, sec.tile): sec.payload for sec in sections}

    def fetch(keys):
        return {k: payloads[k] for k in keys}

    decoded = np.empty_like(array)
    label = "shape: comparing" if "texture" in encoded.state else "texture only: comparing"
    rows = ctx.grid.tile_shape[0]
    for k in track(range(0, array.shape[0], rows), enabled=progress, desc=label, unit="tile row"):
        region = (slice(k, min(k + rows, array.shape[0])), slice(0, array.shape[1]), slice(0, array.shape[2]))
        decoded[region] = decode_region(ctx, region, fetch)
    return metrics.mae(array, decoded) * abs(slope)
