"""Voxels outside the coding window, stored exactly and sparsely.

Padding outside the field of view (-2048 or -3024 HU) and metal (above 3071 HU) would cost the
base layer many bits and still come back wrong; they also ring into their neighbours. They are
clipped to the window before coding and stored here as runs (delta start, length in C order of
the tile) plus their exact values, each Blosc-compressed. Large padding regions become a few long
runs of one value, which compress to almost nothing.
"""

from __future__ import annotations

import struct

import numpy as np
from numcodecs import Blosc

from ...errors import CorruptSectionError
from ...tiling import SectionKind, TileGrid
from .._blosc import decode_checked
from ..base import Section

_HEADER = struct.Struct("<4sIII")  # magic, runs, values, bytes of the compressed runs
_MAGIC = b"DOL1"
_BLOSC = Blosc(cname="zstd", clevel=9, shuffle=Blosc.SHUFFLE)


def outlier_mask(block: np.ndarray, low: float, high: float) -> np.ndarray:
    return (block < low) | (block > high)


def payloads(array: np.ndarray, grid: TileGrid, low: float, high: float) -> dict[int, bytes]:
    """The outlier section of every tile of ``array`` that has voxels outside ``low..high``."""
    found: dict[int, bytes] = {}
    for tile in grid:
        raw = array[grid.tile_region(tile)]
        mask = outlier_mask(raw, low, high)
        if mask.any():
            found[tile] = encode(raw, mask)
    return found


def sections(payloads: dict[int, bytes]) -> list[Section]:
    """The outlier sections of a file, in tile order."""
    return [Section(SectionKind.OUTLIERS, tile, payloads[tile]) for tile in sorted(payloads)]


def encode(block: np.ndarray, mask: np.ndarray) -> bytes:
    """Runs and exact values of the voxels of ``block`` where ``mask`` is set."""
    flat = mask.ravel()
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flat.view(np.int8), [0]))))
    starts, stops = edges[0::2], edges[1::2]
    runs = np.empty((len(starts), 2), dtype="<u4")
    runs[:, 0] = starts - np.concatenate(([0], stops[:-1]))  # gap since the previous run ended
    runs[:, 1] = stops - starts
    values = np.ascontiguousarray(block.ravel()[flat], dtype=block.dtype.newbyteorder("<"))
    runs_blob = bytes(_BLOSC.encode(runs)) if len(runs) else b""
    values_blob = bytes(_BLOSC.encode(values)) if len(values) else b""
    return _HEADER.pack(_MAGIC, len(runs), len(values), len(runs_blob)) + runs_blob + values_blob


def count(payload: bytes) -> int:
    """How many voxels a section (from :func:`encode`) stores."""
    return _HEADER.unpack_from(payload)[2]


def decode(
    payload: bytes, tile_shape: tuple[int, ...], dtype: np.dtype, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(flat C-order indices in the tile, exact values) of the stored voxels, after checks."""
    size = int(np.prod(tile_shape))
    dtype = np.dtype(dtype)
    if len(payload) < _HEADER.size:
        raise CorruptSectionError(f"{what} is too short ({len(payload)} bytes)")
    magic, n_runs, n_values, runs_nbytes = _HEADER.unpack_from(payload)
    if magic != _MAGIC or n_values > size or n_runs > n_values or runs_nbytes > len(payload):
        raise CorruptSectionError(f"{what} has a bad header")
    if n_values == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=dtype)
    body = memoryview(payload)[_HEADER.size :]
    runs = decode_checked(body[:runs_nbytes], (n_runs, 2), "<u4", what)
    values = decode_checked(body[runs_nbytes:], (n_values,), dtype.newbyteorder("<"), what)
    lengths = runs[:, 1].astype(np.int64)
    starts = np.cumsum(runs[:, 0], dtype=np.int64) + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    stops = starts + lengths
    if (
        (lengths < 1).any()
        or (starts[1:] < stops[:-1]).any()
        or stops[-1] > size
        or lengths.sum() != n_values
    ):
        raise CorruptSectionError(f"{what}: runs overlap, leave the tile or miscount the values")
    index = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(n_values)
    return index, values.astype(dtype, copy=False)
