"""Summaries and integrity checks of ``.dstd`` files, for ``dstd info`` / ``dstd verify`` and users."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import DstdError
from ..progress import track
from .format import SectionKind
from .volume import Volume

#: Sections are checksummed in batches of about this many bytes to bound memory.
VERIFY_BATCH_BYTES = 64 * 1024 * 1024


def summarize(volume: Volume) -> dict[str, Any]:
    """A JSON-friendly description of an open volume: header plus section and size figures."""
    reader = volume.reader
    kinds: Counter[str] = Counter()
    kind_bytes: Counter[str] = Counter()
    for entry in reader.sections.values():
        name = SectionKind.name_of(entry.kind)
        kinds[name] += 1
        kind_bytes[name] += entry.length
    p = reader.preamble
    return {
        "format_version": f"{p.major}.{p.minor}",
        "file_size": volume.file_size,
        "raw_nbytes": volume.nbytes,
        "ratio": volume.ratio,
        "tier": dataclasses.asdict(volume.codec.guarantee()),
        "sections": {k: {"count": kinds[k], "bytes": kind_bytes[k]} for k in sorted(kinds)},
        "header_bytes": p.header_length,
        "header": volume.header,
    }


@dataclass
class VerifyReport:
    """What ``verify`` checked and what it found wrong (empty ``problems`` = the file is sound)."""

    sections_checked: int = 0
    bytes_checked: int = 0
    decoded: bool = False
    content_hash_matches: bool | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(volume: Volume, *, decode: bool = True, progress: bool = False) -> VerifyReport:
    """Check every section's checksum, decode every tile, and for exact codecs compare the decoded
    volume's sha256 with the original's recorded at write time."""
    report = VerifyReport()
    reader = volume.reader
    entries = sorted(reader.sections.values(), key=lambda e: e.offset)
    batches: list[list] = [[]]
    size = 0
    for entry in entries:
        if size > VERIFY_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(entry.key)
        size += entry.length
    for batch in track(batches, enabled=progress, desc="checksums", unit="batch"):
        try:
            blobs = reader.read_sections(batch)
        except DstdError as exc:
            report.problems.append(str(exc))
            continue
        report.sections_checked += len(blobs)
        report.bytes_checked += sum(len(b) for b in blobs.values())
    if not decode or report.problems:
        return report

    digest = hashlib.sha256()
    try:
        slabs = list(volume.slabs())
        for region in track(slabs, enabled=progress, desc="decoding", total=len(slabs), unit="slab"):
            slab = volume.read_region(region)
            digest.update(slab.astype(slab.dtype.newbyteorder("<"), copy=False).tobytes())
    except DstdError as exc:
        report.problems.append(f"decoding failed: {exc}")
        return report
    report.decoded = True
    expected = reader.header.original_sha256
    if volume.codec.exact and expected:
        report.content_hash_matches = digest.hexdigest() == expected
        if not report.content_hash_matches:
            report.problems.append(
                "decoded voxels differ from the original (sha256 mismatch) although the codec is lossless"
            )
    return report
