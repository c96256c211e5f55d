"""Binary layout of formats 1 and 2 (the same; 2 packs the header, see header.py): magic,
preamble, footer and section-index records (see SPEC.md).

Everything here is fixed-size and little-endian so that a reader can plan range requests from the
first and last few KiB of a file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import (
    ChecksumError,
    CorruptHeaderError,
    CorruptIndexError,
    NotADstdFileError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from ..tiling import NO_TILE, SectionKind  # noqa: F401  (part of the format's vocabulary)

MAGIC = b"\x89DSTD\r\n\x1a"
FOOTER_MAGIC = b"DSTDEND\n"
#: The version this writer writes.
FORMAT_MAJOR = 2
FORMAT_MINOR = 0
#: The major versions this reader reads.
READABLE_MAJORS = (1, 2)

PREAMBLE_SIZE = 64
FOOTER_SIZE = 32
INDEX_RECORD_SIZE = 32

#: Hard caps that keep a hostile file from making us allocate or loop without bound.
MAX_HEADER_LENGTH = 16 * 1024 * 1024
MAX_SECTIONS = 1 << 24

# magic, major, minor, flags, header_offset, header_length, header_crc32; then reserved zero
# bytes up to offset 60, then the CRC-32 of bytes 0..60.
_PREAMBLE = struct.Struct("<8sHHIqqI")
_PREAMBLE_CRC_AT = PREAMBLE_SIZE - 4
# index_offset, index_length, index_crc32, footer_crc32, magic
_FOOTER = struct.Struct("<qqII8s")
# kind, flags, tile, offset, length, crc32, reserved
_RECORD = struct.Struct("<HHIqqII")
assert _PREAMBLE.size <= PREAMBLE_SIZE and _FOOTER.size == FOOTER_SIZE
assert _RECORD.size == INDEX_RECORD_SIZE


def crc32(data: bytes | memoryview) -> int:
    """CRC-32 (ISO-HDLC, as zlib and PNG compute it) of ``data``."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Preamble:
    major: int
    minor: int
    flags: int
    header_offset: int
    header_length: int
    header_crc32: int

    def pack(self) -> bytes:
        body = _PREAMBLE.pack(
            MAGIC,
            self.major,
            self.minor,
            self.flags,
            self.header_offset,
            self.header_length,
            self.header_crc32,
        )
        body += bytes(_PREAMBLE_CRC_AT - len(body))
        return body + struct.pack("<I", crc32(body))

    @classmethod
    def unpack(cls, data: bytes, file_size: int) -> Preamble:
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            raise NotADstdFileError("not a .dstd file: the first bytes are not the .dstd magic number")
        if len(data) < PREAMBLE_SIZE or file_size < PREAMBLE_SIZE + FOOTER_SIZE:
            raise TruncatedFileError(
                f"file is truncated: {file_size} bytes is shorter than the fixed preamble and footer"
            )
        magic, major, minor, flags, h_off, h_len, h_crc = _PREAMBLE.unpack_from(data)
        (p_crc,) = struct.unpack_from("<I", data, _PREAMBLE_CRC_AT)
        # The version is read before the preamble checksum so that a future major version with a
        # different preamble layout gets the accurate "unsupported version" message.
        if major not in READABLE_MAJORS:
            raise UnsupportedVersionError(
                f"file is .dstd format version {major}.{minor}; this reader supports major "
                f"versions {', '.join(map(str, READABLE_MAJORS))} (upgrade dstdformat to read it)"
            )
        if crc32(data[:_PREAMBLE_CRC_AT]) != p_crc:
            raise ChecksumError("preamble checksum mismatch: the first 64 bytes are damaged")
        if h_off != PREAMBLE_SIZE:
            raise CorruptHeaderError(f"header offset {h_off} is not {PREAMBLE_SIZE}")
        if h_len <= 0 or h_len > MAX_HEADER_LENGTH:
            raise CorruptHeaderError(
                f"header length {h_len} is outside the allowed range 1..{MAX_HEADER_LENGTH}"
            )
        if h_off + h_len + FOOTER_SIZE > file_size:
            raise TruncatedFileError(
                f"header length {h_len} does not fit in a file of {file_size} bytes "
                "(truncated or corrupt file)"
            )
        return cls(major, minor, flags, h_off, h_len, h_crc)


@dataclass(frozen=True)
class Footer:
    index_offset: int
    index_length: int
    index_crc32: int

    def pack(self) -> bytes:
        body = struct.pack("<qqI", self.index_offset, self.index_length, self.index_crc32)
        return body + struct.pack("<I", crc32(body)) + FOOTER_MAGIC

    @staticmethod
    def _fields(data: bytes) -> tuple[int, int, int]:
        if len(data) != FOOTER_SIZE or data[-len(FOOTER_MAGIC) :] != FOOTER_MAGIC:
            raise TruncatedFileError(
                "file is truncated or damaged: the footer at the end of the file is missing"
            )
        i_off, i_len, i_crc, f_crc, _ = _FOOTER.unpack(data)
        if crc32(data[:20]) != f_crc:
            raise ChecksumError("footer checksum mismatch: the last 32 bytes are damaged")
        return i_off, i_len, i_crc

    @classmethod
    def implied_file_size(cls, data: bytes) -> int:
        """The file size the footer implies (the index ends where the footer starts): lets a
        remote reader open a file from a suffix range without asking for its size."""
        i_off, i_len, _ = cls._fields(data)
        if i_off < 0 or i_len < 0:
            raise CorruptIndexError(f"section index at {i_off} (+{i_len}) is invalid")
        return i_off + i_len + FOOTER_SIZE

    @classmethod
    def unpack(cls, data: bytes, file_size: int, data_start: int) -> Footer:
        i_off, i_len, i_crc = cls._fields(data)
        if i_len < 0 or i_len % INDEX_RECORD_SIZE or i_len // INDEX_RECORD_SIZE > MAX_SECTIONS:
            raise CorruptIndexError(f"section index length {i_len} is invalid")
        if i_off < data_start or i_off + i_len != file_size - FOOTER_SIZE:
            raise CorruptIndexError(
                f"section index at {i_off} (+{i_len}) does not end where the footer starts "
                f"({file_size - FOOTER_SIZE})"
            )
        return cls(i_off, i_len, i_crc)


@dataclass(frozen=True)
class SectionEntry:
    """One row of the section index: where a section lies and how to check it."""

    kind: int
    tile: int  # tile number in C order of the tile grid, or NO_TILE for global sections
    offset: int
    length: int
    crc32: int
    flags: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return (self.kind, self.tile)

    @property
    def label(self) -> str:
        name = SectionKind.name_of(self.kind)
        return name if self.tile == NO_TILE else f"{name} section of tile {self.tile}"

    def pack(self) -> bytes:
        return _RECORD.pack(self.kind, self.flags, self.tile, self.offset, self.length, self.crc32, 0)


def pack_index(entries: list[SectionEntry]) -> bytes:
    return b"".join(e.pack() for e in entries)


def unpack_index(data: bytes, data_start: int, data_end: int) -> list[SectionEntry]:
    """Parse and bound-check the index: offsets inside [data_start, data_end), no overlaps."""
    entries = []
    for n, (kind, flags, tile, off, length, crc, _) in enumerate(_RECORD.iter_unpack(data)):
        where = f"index entry {n} ({SectionKind.name_of(kind)})"
        if off < 0 or length < 0:
            raise CorruptIndexError(f"{where} has a negative offset or length ({off}, {length})")
        if off < data_start or off + length > data_end:
            raise CorruptIndexError(
                f"{where} spans bytes {off}..{off + length}, outside the data area {data_start}..{data_end}"
            )
        entries.append(SectionEntry(kind, tile, off, length, crc, flags))
    ordered = sorted(entries, key=lambda e: e.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.length > b.offset:
            raise CorruptIndexError(f"{a.label} and {b.label} overlap in the file")
    keys = set()
    for e in entries:
        if e.key in keys:
            raise CorruptIndexError(f"{e.label} appears twice in the section index")
        keys.add(e.key)
    return entries


def relative_index_crc32(entries: list[SectionEntry], data_start: int = 0) -> int:
    """CRC-32 of the index packed with offsets counted from the end of the header: the header
    records it (``stats.index_crc32``) so that a header and an index from different files do not
    pass for one file."""
    return crc32(
        pack_index(
            [SectionEntry(e.kind, e.tile, e.offset - data_start, e.length, e.crc32, e.flags) for e in entries]
        )
    )
