"""The reader's fuzz target and the seeds it starts from (the mutator: ``mutator.py`` beside it).

The contract under test: whatever bytes it is given, the reader either returns the data that was
stored or raises a :class:`~dstdformat.errors.DstdError`; it never crashes with another exception,
hangs, or allocates without bound.

Random byte damage mostly stops at the first checksum, so half of the mutations *reseal* the file:
they change the JSON header, a section's payload, the section index or the file's structure and
then recompute every checksum, which is what a hostile writer would do. Those inputs reach header
validation, the codecs' stream parsers and the entropy decoders. Inputs damaged without resealing
carry a stronger promise: if one is accepted, it must decode to exactly the seed's data.

``fuzz/fuzz_reader.py`` drives this for hundreds of thousands of inputs; the tests run a short
sample through hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dstdformat.container.format import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    PREAMBLE_SIZE,
    Footer,
    Preamble,
    SectionEntry,
    SectionKind,
    crc32,
    pack_index,
)
from dstdformat.container.header import deflate_header, inflate_header
from dstdformat.errors import DstdError
from dstdformat.storage.sources import MemorySource

#: Volumes that decode to more than this are read one corner tile at a time by the target.
TARGET_FULL_READ_BYTES = 64 * 1024 * 1024


@dataclass
class FileParts:
    """A valid file taken apart: the pieces a resealing mutation edits before re-assembly.
    ``header`` is the header's JSON text; a format 2 file stores it deflated, which ``assemble``
    does unless ``stored_header`` gives the stored bytes themselves (damage to the packing)."""

    header: bytes
    sections: list[tuple[SectionEntry, bytes]]
    major: int = FORMAT_MAJOR
    minor: int = FORMAT_MINOR
    flags: int = 0
    stored_header: bytes | None = None

    @classmethod
    def parse(cls, data: bytes) -> FileParts:
        from dstdformat.container.reader import DstdReader

        reader = DstdReader(MemorySource(data))
        p = reader.preamble
        stored = data[p.header_offset : p.header_offset + p.header_length]
        text = inflate_header(stored) if p.major >= 2 else stored
        entries = sorted(reader.sections.values(), key=lambda e: e.offset)
        return cls(
            text, [(e, data[e.offset : e.offset + e.length]) for e in entries], p.major, p.minor, p.flags
        )

    def packed_header(self) -> bytes:
        """The header bytes as the file stores them."""
        if self.stored_header is not None:
            return self.stored_header
        return self.header if self.major < 2 else deflate_header(self.header)

    def assemble(self, edit_index: Callable[[list[list[int]]], None] | None = None) -> bytes:
        """The file with every checksum recomputed; ``edit_index`` may change the index rows
        ``[kind, flags, tile, offset, length, crc32]`` after layout."""
        header = self.packed_header()
        data_start = PREAMBLE_SIZE + len(header)
        rows, offset = [], data_start
        for entry, payload in self.sections:
            rows.append([entry.kind, entry.flags, entry.tile, offset, len(payload), crc32(payload)])
            offset += len(payload)
        if edit_index is not None:
            edit_index(rows)
        index = pack_index([SectionEntry(k, t, o, n, c, f) for k, f, t, o, n, c in rows])
        preamble = Preamble(self.major, self.minor, self.flags, PREAMBLE_SIZE, len(header), crc32(header))
        footer = Footer(offset, len(index), crc32(index))
        return b"".join([preamble.pack(), header, *(p for _, p in self.sections), index, footer.pack()])


@dataclass
class Seed:
    """A valid file with what reading it gives: the reference a damaged copy is held to."""

    name: str
    data: bytes
    parts: FileParts
    header: dict[str, Any]
    voxels: np.ndarray | None

    @property
    def runs_a_network(self) -> bool:
        """Whether reading it runs the refinement network or the shape decoder."""
        has_shape = any(e.kind == SectionKind.SHAPE for e, _ in self.parts.sections)
        return self.header["codec"].get("model") is not None or has_shape

    @classmethod
    def load(cls, name: str, data: bytes) -> Seed:
        voxels, header = read_untrusted(data)
        return cls(name, data, FileParts.parse(data), header, voxels)


@dataclass
class Mutation:
    """One fuzz input: its bytes, how it was made, and whether its checksums were recomputed."""

    data: bytes
    seed: Seed
    how: str
    resealed: bool


def read_untrusted(
    data: bytes, full_read_bytes: int = TARGET_FULL_READ_BYTES
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Everything a user does with a file: open it, describe it, verify the checksums and read
    voxels (the whole volume when it is small, one corner tile otherwise)."""
    from dstdformat.container.inspect import summarize, verify
    from dstdformat.container.volume import Volume

    with Volume(MemorySource(data)) as volume:
        repr(volume)
        summarize(volume)
        volume.metadata.to_json()
        report = verify(volume, decode=False)
        if not report.ok:
            raise _Rejected(report.problems[0])
        if volume.nbytes <= full_read_bytes:
            voxels = volume.read()
        else:
            t0, t1, t2 = volume.tile_shape
            voxels = volume[:t0, :t1, :t2]
        return voxels, volume.header


class _Rejected(DstdError):
    """``verify`` found a problem (it reports problems instead of raising)."""


@dataclass
class Verdict:
    """How the reader handled one input."""

    #: "accepted", "rejected", "crash", "wrong-data", or "legacy-splice" (a splice of two files
    #: written before headers bound their index: accepted, and reported as such)
    outcome: str
    detail: str = ""

    @property
    def is_finding(self) -> bool:
        return self.outcome in ("crash", "wrong-data")


def judge(mutation: Mutation) -> Verdict:
    """Run the target on one input and hold the result to the contract."""
    try:
        voxels, header = read_untrusted(mutation.data)
    except DstdError as exc:
        return Verdict("rejected", type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - anything else escaping is the finding
        return Verdict("crash", f"{type(exc).__name__}: {exc}"[:500])
    if not mutation.resealed:
        seed = mutation.seed
        same = header == seed.header and (
            (voxels is None and seed.voxels is None)
            or (
                voxels is not None
                and seed.voxels is not None
                and voxels.shape == seed.voxels.shape
                and voxels.dtype == seed.voxels.dtype
                and np.array_equal(voxels, seed.voxels, equal_nan=voxels.dtype.kind == "f")
            )
        )
        if not same:
            if mutation.how.startswith("spliced") and "index_crc32" not in header.get("stats", {}):
                # Files written before headers recorded their index's CRC cannot tell a header
                # from one file and sections from another (SPEC: stats.index_crc32). Counted
                # apart, not hidden: the fuzz summary reports them.
                return Verdict("legacy-splice", f"{seed.name} ({mutation.how})")
            return Verdict(
                "wrong-data",
                f"damaged copy of {seed.name} ({mutation.how}) was accepted with different contents",
            )
    return Verdict("accepted")


def load_seeds(paths: Sequence[str | Path]) -> list[Seed]:
    """Read valid ``.dstd`` files as seeds (each must decode cleanly)."""
    return [Seed.load(Path(p).name, Path(p).read_bytes()) for p in paths]


def default_seed_paths(root: str | Path) -> list[Path]:
    """The valid golden files of the specification under ``root`` (the repository's ``spec``)."""
    found = [p for p in sorted(Path(root).glob("golden/*/*.dstd"))]
    return [p for p in found if p.stat().st_size <= 80_000]


__all__ = [
    "FileParts",
    "Mutation",
    "Seed",
    "Verdict",
    "default_seed_paths",
    "judge",
    "load_seeds",
    "read_untrusted",
]
