"""How the slices of a tile are predicted from each other, and the tile payload that records it.

Even slices are coded first (each on its own, or from the even slice two before), then odd slices
(on their own, from the slice before, or from the mean of the slices either side). Each slice takes
the mode whose plane codes smallest; the plane coder codes the slice minus its prediction. With a
bound ``near``, predictions come from the decoded slices, so each slice's error is its plane's.

Payload (little-endian): ``u8 version, u16 records``, then per record in coding order
``u8 slice, u8 mode, i32 low, u32 length``, then the plane streams. A plane is its stream decoded
plus ``low``; a stream of length 0 is a plane holding ``low`` everywhere.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ...errors import CodecError, CorruptSectionError
from .planes import PlaneCoder

PAYLOAD_VERSION = 1
_HEAD = struct.Struct("<BH")
_RECORD = struct.Struct("<BBiI")
_MAX_SPAN = 65535  # a plane coder takes at most 16-bit samples


class Mode(IntEnum):
    INTRA = 0  # the slice itself
    PREVIOUS = 1  # minus the slice two before (even slices) or the one before (odd slices)
    BETWEEN = 2  # minus the mean (floored) of the slices either side (odd slices)


def coding_order(depth: int) -> list[int]:
    return [*range(0, depth, 2), *range(1, depth, 2)]


def _prediction(mode: Mode, z: int, decoded: dict[int, np.ndarray], depth: int) -> np.ndarray | None:
    """The prediction of slice ``z`` in ``mode`` from slices already decoded (None: not possible)."""
    if mode == Mode.PREVIOUS:
        ref = z - (2 if z % 2 == 0 else 1)
        return decoded.get(ref)
    if mode == Mode.BETWEEN:
        if z % 2 == 0 or z + 1 >= depth or z - 1 not in decoded or z + 1 not in decoded:
            return None
        return (decoded[z - 1] + decoded[z + 1]) >> 1
    return None


@dataclass(frozen=True)
class SliceCoding:
    """The settings a tile is coded with."""

    coder: PlaneCoder
    near: int
    inter_slice: bool
    low: int  # the dtype's range: decoded values are clipped into it
    high: int


def _plane_dtype(span: int, near: int) -> type:
    return np.uint8 if span < 256 and near < 128 else np.uint16


def _code_plane(residual: np.ndarray, coding: SliceCoding) -> tuple[int, bytes] | None:
    low, high = int(residual.min()), int(residual.max())
    if high - low <= 2 * coding.near:
        return low + coding.near, b""
    if high - low > _MAX_SPAN:
        return None
    plane = (residual - low).astype(_plane_dtype(high - low, coding.near))
    return low, coding.coder.encode(plane, coding.near)


def encode_tile(block: np.ndarray, coding: SliceCoding, what: str) -> bytes:
    """The payload of a tile (``block``: int32, slices first)."""
    depth, rows, columns = block.shape
    decoded: dict[int, np.ndarray] = {}
    records, streams = [], []
    for z in coding_order(depth):
        target = block[z]
        best: tuple[Mode, int, bytes, np.ndarray] | None = None
        modes = (Mode.INTRA, Mode.PREVIOUS, Mode.BETWEEN) if coding.inter_slice else (Mode.INTRA,)
        for mode in modes:
            prediction = _prediction(mode, z, decoded, depth)
            if mode != Mode.INTRA and prediction is None:
                continue
            base = prediction if prediction is not None else 0
            coded = _code_plane(target - base, coding)
            if coded is not None and (best is None or len(coded[1]) < len(best[2])):
                best = (mode, coded[0], coded[1], base)
        if best is None:
            raise CodecError(f"{what}: slice {z} spans more than 16 bits")
        mode, low, stream, base = best
        plane = _decode_plane(coding.coder, stream, low, (rows, columns), f"{what} slice {z}")
        decoded[z] = np.clip(base + plane, coding.low, coding.high)
        error = int(np.abs(decoded[z] - target).max())
        if error > coding.near:  # never store what does not decode back within the bound
            raise CodecError(f"{what}: slice {z} decodes {error} away from the input (bound {coding.near})")
        records.append(_RECORD.pack(z, mode, low, len(stream)))
        streams.append(stream)
    return b"".join([_HEAD.pack(PAYLOAD_VERSION, depth), *records, *streams])


def _decode_plane(
    coder: PlaneCoder, stream: bytes, low: int, shape: tuple[int, int], what: str
) -> np.ndarray:
    if not stream:
        return np.full(shape, low, np.int32)
    return coder.decode(stream, shape, what).astype(np.int32) + low


def decode_tile(payload: bytes, extent: tuple[int, int, int], coding: SliceCoding, what: str) -> np.ndarray:
    """The int32 slices of a tile of ``extent`` from its payload, every record checked first."""
    depth, rows, columns = extent
    if len(payload) < _HEAD.size:
        raise CorruptSectionError(f"{what} is too short ({len(payload)} bytes)")
    version, count = _HEAD.unpack_from(payload)
    if version != PAYLOAD_VERSION or count != depth:
        raise CorruptSectionError(
            f"{what}: payload version {version} with {count} slices; expected "
            f"version {PAYLOAD_VERSION} with {depth}"
        )
    offset = _HEAD.size + count * _RECORD.size
    records = [_RECORD.unpack_from(payload, _HEAD.size + i * _RECORD.size) for i in range(count)]
    if offset > len(payload) or offset + sum(r[3] for r in records) != len(payload):
        raise CorruptSectionError(f"{what}: slice records do not add up to its {len(payload)} bytes")
    if sorted(r[0] for r in records) != list(range(depth)):
        raise CorruptSectionError(f"{what}: slice records do not name each of its {depth} slices once")
    out = np.empty(extent, np.int32)
    decoded: dict[int, np.ndarray] = {}
    for z, mode_value, low, length in records:
        stream = payload[offset : offset + length]
        offset += length
        try:
            mode = Mode(mode_value)
        except ValueError:
            raise CorruptSectionError(f"{what}: slice {z} has unknown mode {mode_value}") from None
        prediction = _prediction(mode, z, decoded, depth)
        if mode != Mode.INTRA and prediction is None:
            raise CorruptSectionError(f"{what}: slice {z} is predicted from slices not yet decoded")
        plane = _decode_plane(coding.coder, stream, low, (rows, columns), f"{what} slice {z}")
        if prediction is not None:
            plane += prediction
        decoded[z] = out[z] = np.clip(plane, coding.low, coding.high)
    return out
