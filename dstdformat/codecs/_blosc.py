"""Blosc with the sizes checked before decompressing, shared by the codecs that store exact bytes."""

from __future__ import annotations

import struct

import numpy as np
from numcodecs import Blosc

from ..errors import CorruptSectionError

_HEADER = struct.Struct("<BBBBIII")  # version, versionlz, flags, typesize, nbytes, blocksize, cbytes


def decode_checked(
    payload: bytes | memoryview, shape: tuple[int, ...], dtype: np.dtype | str, what: str
) -> np.ndarray:
    """Decompress ``payload`` into a new array of ``shape`` and ``dtype`` after checking Blosc's
    declared sizes against it.

    Blosc trusts the sizes in its header; checking them first, and allocating only afterwards,
    means a damaged or forged section can never make it allocate, read or write more than the
    container says the array holds.
    """
    dtype = np.dtype(dtype)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(payload) < _HEADER.size:
        raise CorruptSectionError(f"{what} is too short for Blosc data ({len(payload)} bytes)")
    _, _, _, _, nbytes, _, cbytes = _HEADER.unpack_from(payload)
    if nbytes != expected or cbytes != len(payload):
        raise CorruptSectionError(
            f"{what} declares {nbytes} bytes ({cbytes} compressed); "
            f"expected {expected} bytes ({len(payload)} stored)"
        )
    out = np.empty(shape, dtype=dtype)
    try:
        Blosc().decode(payload, out=out)
    except RuntimeError as exc:
        raise CorruptSectionError(f"{what} does not decode: {exc}") from None
    return out
