"""How the slices of a tile are predicted from each other and stored as plane streams.

Even slices are coded first (each on its own, or from the even slice two before), then odd slices
(on their own, from the slice before, or from the mean of the slices either side). Each slice is
stored in the mode whose plane the first plane coder codes smallest; the other plane coders (those
that take the bound) code that plane and the slice itself, as it is and transposed, and the
smallest stream is kept. With a bound ``near``, predictions come from the decoded slices, so each
slice's error is its plane's. The tile is then also coded *stacked* (payload.py): lossless, every
slice's chosen plane in one stream; with a bound, the even slices on their own in one stream and
the odd ones, predicted from them, in another; the smaller way is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np

from ...errors import CodecError, CorruptSectionError
from .payload import Entry, Group, pack_payload, read_groups
from .planes import PlaneCoder

_MAX_SPAN = 65535  # a plane coder takes at most 16-bit samples
_MAX_ROWS = 65535  # JPEG-LS frames hold at most this many rows: taller stacks are not tried


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
    samples = _samples(residual, low, high, near)
    return None if samples is None else (low, samples)


def _offset(residual: np.ndarray, near: int) -> tuple[int, np.ndarray | None]:
    """(low, residual - low) for stacking (a constant plane too), samples None where the
    residual spans more than 16 bits."""
    low, high = int(residual.min()), int(residual.max())
    return low, _samples(residual, low, high, near)


def _samples(residual: np.ndarray, low: int, high: int, near: int) -> np.ndarray | None:
    """``residual - low`` in the narrowest dtype a plane coder takes at ``near`` (JPEG-LS holds
    NEAR >= 128 in 16-bit planes only), None beyond 16 bits."""
    if high - low > _MAX_SPAN:
        return None
    return (residual - low).astype(np.uint8 if high - low < 256 and near < 128 else np.uint16)


def encode_tile(block: np.ndarray, coding: SliceCoding, what: str) -> bytes:
    """The payload of a tile (``block``: int32, slices first): the smaller of its slices coded one
    by one and coded stacked, checked to decode back within the bound."""
    depth = block.shape[0]
    singles, planes = _code_slices(block, coding, what)
    candidates = [singles]
    if depth > 1 and depth * block.shape[1] <= _MAX_ROWS:
        candidates.append(
            _stacked_lossless(block, coding, singles, planes)
            if coding.near == 0
            else _stacked_bounded(block, coding)
        )
    best = min(candidates, key=lambda groups: sum(len(g.pack()) + len(s) for g, s in groups))
    payload = pack_payload(depth, best)
    if best is not singles:  # the singles were checked slice by slice as they were coded
        error = int(np.abs(decode_tile(payload, block.shape, coding, what) - block).max())
        if error > coding.near:
            raise CodecError(f"{what}: the stacked planes decode {error} away (bound {coding.near})")
    return payload


def _code_slices(block: np.ndarray, coding: SliceCoding, what: str):
    """Each slice in its own stream: the groups, and the plane each slice's entry stands for
    (None for a constant one)."""
    depth, rows, columns = block.shape
    first = coding.coders[0]
    others = [(i, c) for i, c in enumerate(coding.coders) if i and c.max_near >= coding.near]
    modes = (Mode.INTRA, Mode.PREVIOUS, Mode.BETWEEN) if coding.inter_slice else (Mode.INTRA,)
    decoded: dict[int, np.ndarray] = {}
    groups, planes = [], []
    for z in coding_order(depth):
        tried = []  # (stream, mode, coder, low, samples, prediction, transposed), intra first
        for mode in modes:
            prediction = _prediction(mode, z, decoded, depth)
            plane = _plane(block[z] if prediction is None else block[z] - prediction, coding.near)
            if plane is not None and (mode == Mode.INTRA or prediction is not None):
                low, samples = plane
                stream = b"" if samples is None else first.encode(samples, coding.near)
                tried.append((stream, mode, 0, low, samples, prediction, False))
        if not tried:
            raise CodecError(f"{what}: slice {z} spans more than 16 bits")
        best = min(tried, key=lambda t: len(t[0]))
        # The other coders code the chosen plane and the slice itself, as they are and transposed:
        # no slice ends up larger than any one coder makes it. (Trying them on every mode gained
        # nothing measurable; transposed, JPEG XL e3 codes 0.1-0.45 % less on 512x512 scans.)
        for candidate in {id(t): t for t in (best, tried[0])}.values():
            for index, coder in others if candidate[4] is not None else ():
                for transposed in (False, True):
                    samples = np.ascontiguousarray(candidate[4].T) if transposed else candidate[4]
                    stream = coder.encode(samples, coding.near)
                    if len(stream) < len(best[0]):
                        best = (stream, candidate[1], index, *candidate[3:6], transposed)
        stream, mode, coder, low, samples, prediction, transposed = best
        group, stream = _stored(coding, (Entry(z, int(mode), low),), coder, stream, samples, transposed)
        values = _decode_group(coding, group, stream, (rows, columns), f"{what} slice {z}")[0]
        _reconstruct(values, prediction, coding)
        error = int(np.abs(values - block[z]).max())
        if error > coding.near:  # never store what does not decode back within the bound
            raise CodecError(f"{what}: slice {z} decodes {error} away from the input (bound {coding.near})")
        decoded[z] = values
        groups.append((group, stream))
        planes.append(samples)
    return groups, planes


def _stored(coding: SliceCoding, entries, coder: int, stream: bytes, samples, transposed: bool):
    """The group of ``entries`` whose plane ``samples`` coded to ``stream``, and what is stored:
    the stream bare where its coder rebuilds the headers byte for byte."""
    bits = 8 if getattr(samples, "dtype", None) == np.uint8 else 16
    group = Group(tuple(entries), coder, len(stream), bits, transposed=transposed)
    if stream:
        shape = samples.shape[::-1] if transposed else samples.shape
        bare = coding.coders[coder].strip(stream, shape, bits, coding.near)
        if bare is not None:
            return replace(group, length=len(bare), bare=True), bare
    return group, stream


def _best_stream(coding: SliceCoding, plane: np.ndarray, entries) -> tuple[Group, bytes]:
    """``plane`` (slices stacked) coded by every coder that takes the bound, the first as it is,
    the others also transposed; the smallest kept."""
    found = []
    for index, coder in enumerate(coding.coders):
        if coder.max_near < coding.near:
            continue
        for transposed in (False, True) if index else (False,):
            samples = np.ascontiguousarray(plane.T) if transposed else plane
            found.append((coder.encode(samples, coding.near), index, transposed))
    stream, index, transposed = min(found, key=lambda f: len(f[0]))
    return _stored(coding, entries, index, stream, plane, transposed)


def _stack(planes: list[np.ndarray | None], rows: int, columns: int) -> np.ndarray:
    """Planes on top of each other (a constant slice's plane is zeros), in the widest dtype."""
    dtype = np.uint16 if any(p is not None and p.dtype == np.uint16 for p in planes) else np.uint8
    return np.concatenate(
        [np.zeros((rows, columns), dtype) if p is None else p.astype(dtype) for p in planes]
    )


def _stacked_lossless(block: np.ndarray, coding: SliceCoding, singles, planes):
    """Every slice's plane, in the mode the slice-by-slice pass chose, in one stream (exact
    coding: the predictions are the input's own slices)."""
    _, rows, columns = block.shape
    entries = [e for group, _ in singles for e in group.entries]
    return [_best_stream(coding, _stack(planes, rows, columns), entries)]


def _stacked_bounded(block: np.ndarray, coding: SliceCoding):
    """Even slices on their own in one stream; odd ones, each in the mode that codes its plane
    smallest from the decoded even slices (on their own too without ``inter_slice``), in another."""
    depth, rows, columns = block.shape
    first, near = coding.coders[0], coding.near
    evens = list(range(0, depth, 2))
    lows_planes = [_offset(block[z], near) for z in evens]
    even_group = _best_stream(
        coding,
        _stack([p for _, p in lows_planes], rows, columns),
        [Entry(z, int(Mode.INTRA), low) for z, (low, _) in zip(evens, lows_planes)],
    )
    values = _decode_group(coding, *even_group, (rows, columns), "stacked even slices")
    decoded = {z: _reconstruct(value, None, coding) for z, value in zip(evens, values)}
    entries, planes = [], []
    for z in range(1, depth, 2):
        options = []
        for mode in (Mode.INTRA, Mode.PREVIOUS, Mode.BETWEEN) if coding.inter_slice else (Mode.INTRA,):
            prediction = _prediction(mode, z, decoded, depth)
            if mode == Mode.INTRA or prediction is not None:
                low, plane = _offset(block[z] if prediction is None else block[z] - prediction, near)
                if plane is not None:
                    options.append((len(first.encode(plane, near)), mode, low, plane))
        size, mode, low, plane = min(options, key=lambda o: o[0])
        entries.append(Entry(z, int(mode), low))
        planes.append(plane)
    if not entries:
        return [even_group]
    return [even_group, _best_stream(coding, _stack(planes, rows, columns), entries)]


def _decode_group(coding: SliceCoding, group: Group, stream: bytes, shape, what: str) -> np.ndarray:
    """The group's slices without their predictions: its stacked plane decoded plus each
    slice's ``low`` (int32, one slice per entry)."""
    n, (rows, columns) = len(group.entries), shape
    stored = (columns, n * rows) if group.transposed else (n * rows, columns)
    if group.coder >= len(coding.coders):
        raise CorruptSectionError(
            f"{what} names plane coder {group.coder}; the codec has {len(coding.coders)}"
        )
    coder = coding.coders[group.coder]
    if group.bare:
        stream = coder.dress(stream, stored, group.bits, coding.near, what)
    if not stream:
        values = np.zeros((n, rows, columns), np.int32)
    else:
        plane = coder.decode(stream, stored, what)
        plane = plane.T if group.transposed else plane
        values = np.ascontiguousarray(plane, dtype=np.int32).reshape(n, rows, columns)
    values += np.array([e.low for e in group.entries], np.int32)[:, None, None]
    return values


def _reconstruct(values: np.ndarray, prediction: np.ndarray | None, coding: SliceCoding) -> np.ndarray:
    """A slice's values, in place: its plane plus ``low`` (``values``) plus its prediction,
    clipped into the dtype, as the encoder checks them and the decoder returns them."""
    if prediction is not None:
        values += prediction
    return np.clip(values, coding.low, coding.high, out=values)


def decode_tile(payload: bytes, extent: tuple[int, int, int], coding: SliceCoding, what: str) -> np.ndarray:
    """The int32 slices of a tile of ``extent`` from its payload, every record checked first."""
    depth, rows, columns = extent
    groups, offset = read_groups(payload, depth, what)
    for group in groups:
        if any(e.mode not in Mode._value2member_map_ for e in group.entries):
            raise CorruptSectionError(f"{what}: a slice has an unknown prediction mode")
    out = np.empty(extent, np.int32)
    decoded: dict[int, np.ndarray] = {}
    for group in groups:
        stream = payload[offset : offset + group.length]
        offset += group.length
        where = f"{what} slice {group.entries[0].slice}"
        values = _decode_group(coding, group, stream, (rows, columns), where)
        for entry, value in zip(group.entries, values):
            z, mode = entry.slice, Mode(entry.mode)
            prediction = _prediction(mode, z, decoded, depth)
            if mode != Mode.INTRA and prediction is None:
                raise CorruptSectionError(f"{what}: slice {z} is predicted from slices not yet decoded")
            out[z] = _reconstruct(value, prediction, coding)
            decoded[z] = out[z]
    return out
