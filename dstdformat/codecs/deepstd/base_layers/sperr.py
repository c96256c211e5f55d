"""SPERR base layer: one SPERR stream (CDF 9/7 wavelets + SPECK bit planes) per tile.

SPERR is the strongest classical 3D codec on our CT benchmark, so the learned codec builds on it
rather than competing with it. Two of its sharp edges are handled here, not by callers: blocks
with an axis shorter than :data:`MIN_EXTENT` crash the library (they are padded by edge
replication), and its stream header is checked against the tile the container expects before the
library sees the bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from ....errors import CorruptSectionError, InvalidInputError

#: SPERR aborts the process on blocks with an axis of 1 voxel; 4 is safe and cheap.
MIN_EXTENT = 4
#: Largest tile edge we allow (a 512^3 float64 block is 1 GiB while coding); up to here SPERR
#: writes one chunk, so its header has the fixed size checked below.
MAX_EXTENT = 512
_HEADER = struct.Struct("<BBIIII")  # version, flags, nx, ny, nz, length of the single chunk
_VERSION = 0
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def padded_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return tuple(max(MIN_EXTENT, int(s)) for s in shape)  # type: ignore[return-value]


def _pad(block: np.ndarray) -> np.ndarray:
    pads = [(0, p - s) for s, p in zip(block.shape, padded_shape(block.shape))]
    return np.pad(block, pads, mode="edge") if any(p for _, p in pads) else block


def encode_bits_per_voxel(block: np.ndarray, bits_per_voxel: float) -> bytes:
    """Code a float block at a fixed rate (bits per voxel of the padded block)."""
    import imagecodecs

    check_block(block)
    return _checked(
        bytes(
            imagecodecs.sperr_encode(
                np.ascontiguousarray(_pad(block), dtype=np.float64),
                float(bits_per_voxel),
                "bpp",
                numthreads=1,
            )
        ),
        block.shape,
    )


def encode_max_error(block: np.ndarray, tolerance: float) -> bytes:
    """Code a float block so that every voxel is within ``tolerance`` of the input."""
    import imagecodecs

    check_block(block)
    return _checked(
        bytes(
            imagecodecs.sperr_encode(
                np.ascontiguousarray(_pad(block), dtype=np.float64), float(tolerance), "pwe", numthreads=1
            )
        ),
        block.shape,
    )


def _header_problem(payload: bytes, shape: tuple[int, ...]) -> str | None:
    padded = padded_shape(shape)
    if len(payload) < _HEADER.size:
        return f"too short for a SPERR stream ({len(payload)} bytes)"
    version, _flags, nx, ny, nz, chunk = _HEADER.unpack_from(payload)
    if version != _VERSION or (nz, ny, nx) != padded or chunk != len(payload) - _HEADER.size:
        return (
            f"SPERR stream header (version {version}, block {(nz, ny, nx)}, {chunk} bytes) "
            f"does not match the expected block {padded} of {len(payload)} bytes"
        )
    return None


def _checked(payload: bytes, shape: tuple[int, ...]) -> bytes:
    """What the encoder wrote must pass the decoder's checks (one chunk, this block)."""
    problem = _header_problem(payload, shape)
    if problem is not None:
        raise InvalidInputError(f"the SPERR coder wrote a stream this format cannot store: {problem}")
    return payload


def decode(
    payload: bytes,
    shape: tuple[int, int, int],
    *,
    what: str = "texture section",
    trusted: bool = False,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Decode a stream of a block of ``shape`` as ``dtype`` (float64 or float32), after checking
    its header.

    Streams from files go to an isolated helper process (see :mod:`.isolated`), which answers in
    ``dtype``: float32, the codec's working precision, moves half the bytes. ``trusted`` streams,
    which this process just encoded, are decoded here.
    """
    from . import isolated

    padded = padded_shape(shape)
    problem = _header_problem(payload, shape)
    if problem is not None:
        raise CorruptSectionError(f"{what}: {problem}")
    if not trusted and isolated.isolation_enabled():
        out = isolated.decode_isolated(payload, padded, what, dtype=dtype)
    else:
        import imagecodecs

        try:
            out = imagecodecs.sperr_decode(payload, numthreads=1)
        except Exception as exc:  # the library raises several unrelated types
            raise CorruptSectionError(f"{what} does not decode: {exc}") from None
    if out.shape != padded:
        raise CorruptSectionError(f"{what} decoded to {out.shape}, expected {padded}")
    peak = np.abs(out).max()
    if not peak <= _FLOAT32_MAX:  # NaN, infinity or beyond float32: the stream was tampered with
        raise CorruptSectionError(f"{what} decoded to non-finite or out-of-range values")
    return out[: shape[0], : shape[1], : shape[2]].astype(dtype, copy=False)


def check_block(block: np.ndarray) -> None:
    if block.ndim != 3 or any(s > MAX_EXTENT for s in block.shape):
        raise InvalidInputError(
            f"SPERR blocks must be 3D with edges of at most {MAX_EXTENT} voxels, got {block.shape}"
        )
