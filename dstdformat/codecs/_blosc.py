"""Blosc with the sizes checked before decompressing, shared by the codecs that store exact bytes."""

from __future__ import annotations

import struct

import numpy as np
from numcodecs import Blosc

from ..errors import CorruptSectionError

_HEADER = struct.Struct("<BBBBIII")  # version, versionlz, flags, typesize, nbytes, blocksize, cbytes


def decode_checked(payload: bytes | memoryview, out: np.ndarray, what: str) -> np.ndarray:
    """Decompress ``payload`` into ``out`` (C-contiguous) after checking Blosc's declared sizes.

    Blosc trusts the sizes in its header; checking them first means a damaged section can never
    make it allocate, read or write more than ``out`` holds.
    """
    if len(payload) < _HEADER.size:
        raise CorruptSectionError(f"{what} is too short for Blosc data ({len(payload)} bytes)")
    _, _, _, _, nbytes, _, cbytes = _HEADER.unpack_from(payload)
    if nbytes != out.nbytes or cbytes != len(payload):
        raise CorruptSectionError(
            f"{what} declares {nbytes} bytes ({cbytes} compressed); "
            f"expected {out.nbytes} bytes ({len(payload)} stored)"
        )
    try:
        Blosc().decode(payload, out=out)
    except RuntimeError as exc:
        raise CorruptSectionError(f"{what} does not decode: {exc}") from None
    return out
