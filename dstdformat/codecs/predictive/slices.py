"""How the slices of a tile are predicted from each other, and the tile payload that records it.

Even slices are coded first (each on its own, or from the even slice two before), then odd slices
(on their own, from the slice before, or from the mean of the slices either side). Each slice is
stored in the mode whose plane the first plane coder codes smallest; the other plane coders (those
that take the bound) code that plane and the slice itself, and the smallest stream is kept. With a
bound ``near``, predictions come from the decoded slices, so each slice's error is its plane's.

Payload (little-endian): ``u8 version, u16 records``, then per record in coding order
``u8 slice, u8 mode, u8 coder, i32 low, u32 length``, then the plane streams. ``coder`` indexes
the codec's ``plane_coders``. A plane is its stream decoded plus ``low``; a stream of length 0 is
a plane holding ``low`` everywhere.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ...errors import CodecError, CorruptSectionError
from .planes import PlaneCoder

PAYLOAD_VERSION = 1
HEAD = struct.Struct("<BH")
RECORD = struct.Struct("<BBBiI")
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
        return decoded.get(z - (2 if z % 2 == 0 else 1))
    if mode == Mode.BETWEEN:
        if z % 2 == 0 or z - 1 not in decoded or z + 1 not in decoded:
            return None
        return (decoded[z - 1] + decoded[z + 1]) >> 1
    return None


@dataclass(frozen=True)
class SliceCoding:
    """The settings a tile is coded with."""

    coders: tuple[PlaneCoder, ...]
    near: int
    inter_slice: bool
    low: int  # the dtype's range: decoded values are clipped into it
    high: int


def _plane(residual: np.ndarray, near: int) -> tuple[int, np.ndarray | None] | None:
    """(low, samples to code) of a residual; samples None for a constant plane, None when the
    residual spans more than a plane coder takes."""
    low, high = int(residual.min()), int(residual.max())
    if high - low <= 2 * near:
        return low + near, None
    if high - low > _MAX_SPAN:
        return None
    dtype = np.uint8 if high - low < 256 and near < 128 else np.uint16
    return low, (residual - low).astype(dtype)


def encode_tile(block: np.ndarray, coding: SliceCoding, what: str) -> bytes:
    """The payload of a tile (``block``: int32, slices first)."""
    depth, rows, columns = block.shape
    first = coding.coders[0]
    others = [(i, c) for i, c in enumerate(coding.coders) if i and c.max_near >= coding.near]
    modes = (Mode.INTRA, Mode.PREVIOUS, Mode.BETWEEN) if coding.inter_slice else (Mode.INTRA,)
    decoded: dict[int, np.ndarray] = {}
    records, streams = [], []
    for z in coding_order(depth):
        tried = []  # (stream, mode, coder, low, samples, prediction), the slice itself first
        for mode in modes:
            prediction = _prediction(mode, z, decoded, depth)
            plane = _plane(block[z] if prediction is None else block[z] - prediction, coding.near)
            if plane is not None and (mode == Mode.INTRA or prediction is not None):
                low, samples = plane
                stream = b"" if samples is None else first.encode(samples, coding.near)
                tried.append((stream, mode, 0, low, samples, prediction))
        if not tried:
            raise CodecError(f"{what}: slice {z} spans more than 16 bits")
        best = min(tried, key=lambda t: len(t[0]))
        # The other coders code the chosen plane and the slice itself: no slice ends up larger
        # than any one coder makes it. (Trying them on every mode gained nothing measurable.)
        for candidate in {id(t): t for t in (best, tried[0])}.values():
            for index, coder in others if candidate[4] is not None else ():
                stream = coder.encode(candidate[4], coding.near)
                if len(stream) < len(best[0]):
                    best = (stream, candidate[1], index, *candidate[3:])
        stream, mode, coder, low, _, prediction = best
        values = _decode_plane(coding, coder, stream, low, prediction, (rows, columns), f"{what} slice {z}")
        error = int(np.abs(values - block[z]).max())
        if error > coding.near:  # never store what does not decode back within the bound
            raise CodecError(f"{what}: slice {z} decodes {error} away from the input (bound {coding.near})")
        decoded[z] = values
        records.append(RECORD.pack(z, mode, coder, low, len(stream)))
        streams.append(stream)
    return b"".join([HEAD.pack(PAYLOAD_VERSION, depth), *records, *streams])


def _decode_plane(coding: SliceCoding, coder: int, stream: bytes, low: int, prediction, shape, what: str):
    """Slice values: the plane (stream + low) plus its prediction, clipped into the dtype."""
    if not stream:
        values = np.full(shape, low, np.int32)
    else:
        values = coding.coders[coder].decode(stream, shape, what).astype(np.int32)
        values += low
    if prediction is not None:
        values += prediction
    return np.clip(values, coding.low, coding.high, out=values)


def decode_tile(payload: bytes, extent: tuple[int, int, int], coding: SliceCoding, what: str) -> np.ndarray:
    """The int32 slices of a tile of ``extent`` from its payload, every record checked first."""
    depth, rows, columns = extent
    if len(payload) < HEAD.size:
        raise CorruptSectionError(f"{what} is too short ({len(payload)} bytes)")
    version, count = HEAD.unpack_from(payload)
    if version != PAYLOAD_VERSION or count != depth:
        raise CorruptSectionError(
            f"{what}: payload version {version} with {count} slices; expected version "
            f"{PAYLOAD_VERSION} with {depth}"
        )
    offset = HEAD.size + count * RECORD.size
    if offset > len(payload):
        raise CorruptSectionError(f"{what} is too short for its {count} slice records")
    records = [RECORD.unpack_from(payload, HEAD.size + i * RECORD.size) for i in range(count)]
    if offset + sum(r[4] for r in records) != len(payload):
        raise CorruptSectionError(f"{what}: slice records do not add up to its {len(payload)} bytes")
    if sorted(r[0] for r in records) != list(range(depth)):
        raise CorruptSectionError(f"{what}: slice records do not name each of its {depth} slices once")
    out = np.empty(extent, np.int32)
    decoded: dict[int, np.ndarray] = {}
    for z, mode_value, coder, low, length in records:
        stream = payload[offset : offset + length]
        offset += length
        if mode_value not in Mode._value2member_map_ or coder >= len(coding.coders):
            raise CorruptSectionError(f"{what}: slice {z} has unknown mode {mode_value} or coder {coder}")
        mode = Mode(mode_value)
        prediction = _prediction(mode, z, decoded, depth)
        if mode != Mode.INTRA and prediction is None:
            raise CorruptSectionError(f"{what}: slice {z} is predicted from slices not yet decoded")
        out[z] = _decode_plane(coding, coder, stream, low, prediction, (rows, columns), f"{what} slice {z}")
        decoded[z] = out[z]
    return out
