"""Reading the structure of a ``.dstd`` file: at most two small requests, then verified sections."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import ChecksumError, CorruptHeaderError, CorruptIndexError
from ..storage.sources import ByteSource
from .format import (
    FOOTER_SIZE,
    PREAMBLE_SIZE,
    Footer,
    Preamble,
    SectionEntry,
    crc32,
    relative_index_crc32,
    unpack_index,
)
from .header import MAX_DECLARED_RATIO, ParsedHeader, parse_header

#: Bytes fetched from each end of the file when opening: the preamble, the JSON header and the
#: footer with the section index of typical files (headers of 1-4 KB, 32 bytes per section). A
#: file whose header or index reaches further costs one more round trip, which fetches exactly
#: what is missing of both. Small, so that opening a remote file moves little of it.
PROBE_SIZE = 8 * 1024

SectionKey = tuple[int, int]


class DstdReader:
    """Parses preamble, header, footer and index; hands out checksum-verified section bytes."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        head, tail = source.read_ends(PROBE_SIZE)
        if source.size is None:  # a remote source read a suffix: the footer says how long it is
            implied = Footer.implied_file_size(tail[-FOOTER_SIZE:]) if len(tail) >= FOOTER_SIZE else len(tail)
            if implied < len(tail):
                raise CorruptIndexError(
                    f"the footer implies a {implied}-byte file, but its last {len(tail)} bytes were read"
                )
            source.size = implied
        size = source.size
        self.preamble = Preamble.unpack(head[:PREAMBLE_SIZE], size)
        p = self.preamble
        h_end = p.header_offset + p.header_length
        self.footer = Footer.unpack(tail[-FOOTER_SIZE:], size, h_end)
        f = self.footer
        tail_start = size - len(tail)
        # What the probe missed of the header and of the index, in one more round trip: only
        # the bytes between what the head and the tail already hold.
        i_end = f.index_offset + f.index_length
        header_gap = (max(p.header_offset, len(head)), h_end)
        index_gap = (f.index_offset, min(i_end, tail_start))
        missing = [gap for gap in (header_gap, index_gap) if gap[0] < gap[1]]
        fetched = dict(zip(missing, source.read_ranges(missing))) if missing else {}
        header_bytes = head[p.header_offset : h_end] + fetched.get(header_gap, b"")
        if crc32(header_bytes) != p.header_crc32:
            raise ChecksumError("header checksum mismatch: the JSON header is damaged")
        self.header: ParsedHeader = parse_header(header_bytes, p.major, p.minor)
        if self.header.raw_nbytes > size * MAX_DECLARED_RATIO:
            raise CorruptHeaderError(
                f"header declares {self.header.raw_nbytes} bytes of voxels in a file of {size} "
                f"bytes, more than {MAX_DECLARED_RATIO}:1 (corrupt or forged file)"
            )

        index_bytes = (
            fetched.get(index_gap, b"")
            + tail[max(f.index_offset - tail_start, 0) : max(i_end - tail_start, 0)]
        )
        if crc32(index_bytes) != f.index_crc32:
            raise ChecksumError("section index checksum mismatch: the index is damaged")
        entries = unpack_index(index_bytes, h_end, f.index_offset)
        recorded = self.header.index_crc32
        if recorded is not None and relative_index_crc32(entries, h_end) != recorded:
            raise CorruptIndexError(
                "the section index does not belong to this header (a file spliced from two "
                "files, or a damaged one)"
            )
        self.sections: dict[SectionKey, SectionEntry] = {e.key: e for e in entries}
        if p.major >= 2:
            self.header.derive_sizes(sum(e.length for e in entries), size)

    @property
    def file_size(self) -> int:
        return self.source.size

    def entry(self, key: SectionKey) -> SectionEntry:
        try:
            return self.sections[key]
        except KeyError:
            from .format import NO_TILE, SectionKind

            kind, tile = key
            what = SectionKind.name_of(kind) + ("" if tile == NO_TILE else f" section of tile {tile}")
            raise CorruptIndexError(f"the file has no {what} (missing from the section index)") from None

    def read_sections(self, keys: Iterable[SectionKey]) -> Mapping[SectionKey, bytes]:
        """Fetch sections in one coalesced request batch; every one is checksum-verified."""
        entries = [self.entry(k) for k in dict.fromkeys(keys)]
        blobs = self.source.read_ranges([(e.offset, e.offset + e.length) for e in entries])
        out = {}
        for entry, blob in zip(entries, blobs):
            if crc32(blob) != entry.crc32:
                raise ChecksumError(
                    f"checksum mismatch in the {entry.label}: the file is damaged, "
                    "or it changed after it was opened"
                )
            out[entry.key] = blob
        return out
