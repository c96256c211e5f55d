"""The tile payload of the predictive codec: which slices each plane stream holds, and how.

A tile's slices are stored in *groups*: a group is one plane stream holding the planes of one or
more slices stacked along the rows, each slice with its prediction mode and offset ``low``.
Stacking pays where slices are small: JPEG-LS adapts its contexts over a plane and restarts per
plane, so eight 126x120 slices code 3-6 % smaller and decode ~1.7x faster as one 1008x120 plane.

Version 2 (written; little-endian): ``u8 version, u16 slice count, u16 group count``, then per
group ``u8 n, u8 flags`` (bits 0-2 coder, 3: 8-bit samples, 4: bare stream, whose headers the
coder rebuilds, 5: stored transposed) and the stream's length as a LEB128 varint, then the
group's n entries ``u8 slice, u8 mode`` and ``low`` (zigzag LEB128); then the streams in group
order. Version 1 (read only): ``u8 version, u16 records``, per record ``u8 slice, u8 mode,
u8 coder, i32 low, u32 length`` (one slice a stream, whole streams), then the streams.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...errors import CorruptSectionError

PAYLOAD_VERSION = 2
HEAD_V1 = struct.Struct("<BH")
HEAD = struct.Struct("<BHH")
RECORD_V1 = struct.Struct("<BBBiI")
_EIGHT_BITS, _BARE, _TRANSPOSED, _KNOWN = 1 << 3, 1 << 4, 1 << 5, (1 << 6) - 1


@dataclass(frozen=True)
class Entry:
    """One slice of a group: where its plane sits, how it is predicted, its offset."""

    slice: int
    mode: int
    low: int


@dataclass(frozen=True)
class Group:
    """One plane stream and the slices it holds, stacked along the rows in entry order."""

    entries: tuple[Entry, ...]
    coder: int
    length: int
    bits: int = 16  # the stacked plane's sample bits (8 or 16): what a bare stream's headers say
    bare: bool = False
    transposed: bool = False  # stored as its transpose: JPEG XL codes some planes smaller so

    def pack(self) -> bytes:
        flags = self.coder | (_EIGHT_BITS if self.bits == 8 else 0) | (_BARE if self.bare else 0)
        flags |= _TRANSPOSED if self.transposed else 0
        out = bytearray([len(self.entries), flags]) + _varint(self.length)
        for e in self.entries:
            out += bytes([e.slice, e.mode]) + _varint(e.low * 2 if e.low >= 0 else -e.low * 2 - 1)
        return bytes(out)


def pack_payload(depth: int, groups: list[tuple[Group, bytes]]) -> bytes:
    """A tile payload of ``depth`` slices from its groups and their streams."""
    head = HEAD.pack(PAYLOAD_VERSION, depth, len(groups))
    return b"".join([head, *(g.pack() for g, _ in groups), *(s for _, s in groups)])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _read_varint(payload: bytes, offset: int, what: str) -> tuple[int, int]:
    value = shift = 0
    while offset < len(payload) and shift <= 35:
        byte = payload[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            return value, offset
        shift += 7
    raise CorruptSectionError(f"{what}: a slice record is cut short or overlong")


def read_groups(payload: bytes, depth: int, what: str) -> tuple[list[Group], int]:
    """The groups of a tile payload of either version, and where its streams start; the
    lengths checked against the payload and every slice named once."""
    if len(payload) < HEAD_V1.size:
        raise CorruptSectionError(f"{what} is too short ({len(payload)} bytes)")
    version, count = HEAD_V1.unpack_from(payload)
    if version not in (1, PAYLOAD_VERSION) or count != depth:
        raise CorruptSectionError(
            f"{what}: payload version {version} with {count} slices; expected version 1 or "
            f"{PAYLOAD_VERSION} with {depth}"
        )
    groups, offset = (_groups_v1 if version == 1 else _groups_v2)(payload, count, what)
    if offset + sum(g.length for g in groups) != len(payload):
        raise CorruptSectionError(f"{what}: slice records do not add up to its {len(payload)} bytes")
    if sorted(e.slice for g in groups for e in g.entries) != list(range(depth)):
        raise CorruptSectionError(f"{what}: slice records do not name each of its {depth} slices once")
    return groups, offset


def _groups_v1(payload: bytes, count: int, what: str) -> tuple[list[Group], int]:
    offset = HEAD_V1.size
    if offset + count * RECORD_V1.size > len(payload):
        raise CorruptSectionError(f"{what} is too short for its {count} slice records")
    groups = []
    for i in range(count):
        z, mode, coder, low, length = RECORD_V1.unpack_from(payload, offset + i * RECORD_V1.size)
        groups.append(Group((Entry(z, mode, low),), coder, length))
    return groups, offset + count * RECORD_V1.size


def _groups_v2(payload: bytes, count: int, what: str) -> tuple[list[Group], int]:
    if len(payload) < HEAD.size:
        raise CorruptSectionError(f"{what} is too short ({len(payload)} bytes)")
    n_groups = HEAD.unpack_from(payload)[2]
    if not 1 <= n_groups <= count:
        raise CorruptSectionError(f"{what}: {n_groups} groups for {count} slices")
    offset, groups = HEAD.size, []
    for _ in range(n_groups):
        if offset + 2 > len(payload):
            raise CorruptSectionError(f"{what} is too short for its slice records")
        n, flags = payload[offset], payload[offset + 1]
        if not n or flags & ~_KNOWN:
            raise CorruptSectionError(f"{what}: a group of {n} slices with flags {flags:#x}")
        length, offset = _read_varint(payload, offset + 2, what)
        entries = []
        for _ in range(n):
            if offset + 2 > len(payload):
                raise CorruptSectionError(f"{what} is too short for its slice records")
            z, mode = payload[offset], payload[offset + 1]
            zigzag, offset = _read_varint(payload, offset + 2, what)
            entries.append(Entry(z, mode, zigzag >> 1 if not zigzag & 1 else -(zigzag >> 1) - 1))
        bits = 8 if flags & _EIGHT_BITS else 16
        groups.append(
            Group(tuple(entries), flags & 7, length, bits, bool(flags & _BARE), bool(flags & _TRANSPOSED))
        )
    return groups, offset
