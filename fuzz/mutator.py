"""The structure-aware mutator of valid ``.dstd`` files (see :mod:`.fuzzing` for the target)."""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fuzzing import FileParts, Mutation, Seed

from dstdformat.container.format import (
    SectionEntry,
)

# Values that break naive parsers: boundaries of the integer widths the format and numpy use,
# non-finite and extreme floats, wrong types.
_INTERESTING_NUMBERS: tuple[Any, ...] = (
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    255,
    256,
    65535,
    65536,
    2**24,
    2**24 + 1,
    2**31 - 1,
    2**31,
    2**32,
    2**32 + 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64,
    10**30,
    0.5,
    -0.5,
    1e-300,
    1e308,
    -1e308,
    math.inf,
    -math.inf,
    math.nan,
)
_INTERESTING_VALUES: tuple[Any, ...] = _INTERESTING_NUMBERS + (
    None,
    True,
    False,
    "",
    "x" * 4096,
    "int16",
    "float64",
    "bool",
    "lossless",
    "deepstd",
    "wavelet",
    "../../etc/passwd",
    [],
    {},
    [0, 0, 0],
    [1, 1, 1],
    [-1, 1, 1],
    [2**24, 2**24, 2**24],
    [1, 2],
    [1, 2, 3, 4],
    [[0, 0, 0, 1]] * 4,
    {"a": 1},
)
_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x20, 0x22, 0x5C, 0x7B, 0x5B)


@dataclass
class Mutator:
    """Makes fuzz inputs from seeds; every input is a pure function of the ``random.Random``."""

    seeds: Sequence[Seed]
    #: Seeds that run a network (the refinement or the shape decoder: about a second per read,
    #: against milliseconds) are picked this much less often, so that they do not take all the
    #: time from the parsers' cheap paths. A fixed weight, not a timing, keeps inputs reproducible.
    costly_seed_weight: float = 0.03
    _strategies: list[tuple[float, Callable[[random.Random, Seed], Mutation]]] = field(init=False)

    def __post_init__(self) -> None:
        self._strategies = [
            (0.30, self._raw_bytes),
            (0.05, self._raw_truncate_or_extend),
            (0.05, self._raw_splice),
            (0.20, self._sealed_header_value),
            (0.05, self._sealed_header_text),
            (0.20, self._sealed_payload),
            (0.10, self._sealed_index),
            (0.05, self._sealed_structure),
        ]
        self._seed_weights = [self.costly_seed_weight if s.runs_a_network else 1.0 for s in self.seeds]

    def mutate(self, rng: random.Random) -> Mutation:
        (seed,) = rng.choices(self.seeds, weights=self._seed_weights)
        weights = [w for w, _ in self._strategies]
        ((_, strategy),) = rng.choices(self._strategies, weights=weights)
        return strategy(rng, seed)

    # -- damage without resealing: the checksums must catch it or it must change nothing --------
    def _raw_bytes(self, rng: random.Random, seed: Seed) -> Mutation:
        data = bytearray(seed.data)
        changes = []
        for _ in range(rng.choice((1, 1, 1, 2, 4, 16))):
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[at] ^= 1 << rng.randrange(8)
            else:
                data[at] = rng.choice(_INTERESTING_BYTES)
            changes.append(at)
        return Mutation(bytes(data), seed, f"bytes changed at {changes[:4]}", resealed=False)

    def _raw_truncate_or_extend(self, rng: random.Random, seed: Seed) -> Mutation:
        data = seed.data
        roll = rng.random()
        if roll < 0.5:
            cut = rng.randrange(len(data))
            return Mutation(data[:cut], seed, f"truncated to {cut} bytes", resealed=False)
        if roll < 0.75:
            extra = rng.randbytes(rng.choice((1, 7, 32, 1000)))
            return Mutation(data + extra, seed, f"{len(extra)} bytes appended", resealed=False)
        start = rng.randrange(len(data))
        stop = min(len(data), start + rng.randrange(1, 256))
        return Mutation(data[:start] + data[stop:], seed, f"bytes {start}..{stop} removed", resealed=False)

    def _raw_splice(self, rng: random.Random, seed: Seed) -> Mutation:
        other = rng.choice(self.seeds)
        at = rng.randrange(len(seed.data))
        if seed.data[:at] == other.data[:at]:
            seed = other  # the splice is the other file, whole: hold it to that one
        return Mutation(seed.data[:at] + other.data[at:], seed, f"spliced at {at}", resealed=False)

    # -- resealed damage: every checksum recomputed, so deeper checks must hold -------------------
    def _sealed_header_value(self, rng: random.Random, seed: Seed) -> Mutation:
        header = json.loads(seed.parts.header)
        how = _mutate_json(header, rng)
        text = json.dumps(header, allow_nan=True).encode()
        return self._reseal(seed, f"header {how}", header=text)

    def _sealed_header_text(self, rng: random.Random, seed: Seed) -> Mutation:
        if seed.parts.major >= 2 and rng.random() < 0.3:  # the deflated bytes themselves
            packed = bytearray(seed.parts.packed_header())
            for _ in range(rng.choice((1, 2, 8))):
                packed[rng.randrange(len(packed))] = rng.choice(_INTERESTING_BYTES)
            return self._reseal(seed, "packed header bytes changed", stored_header=bytes(packed))
        text = bytearray(seed.parts.header)
        roll = rng.random()
        if roll < 0.6:
            for _ in range(rng.choice((1, 2, 8))):
                text[rng.randrange(len(text))] = rng.choice(_INTERESTING_BYTES)
            how = "header bytes changed"
        elif roll < 0.8:
            text = bytearray(b"[" * rng.choice((100, 10_000, 1_000_000)))
            how = "header nested deeply"
        else:
            text = text[: rng.randrange(len(text))]
            how = "header cut short"
        return self._reseal(seed, how, header=bytes(text))

    def _sealed_payload(self, rng: random.Random, seed: Seed) -> Mutation:
        if not seed.parts.sections:
            return self._sealed_header_value(rng, seed)
        n = rng.randrange(len(seed.parts.sections))
        entry, payload = seed.parts.sections[n]
        data = bytearray(payload)
        roll = rng.random()
        if roll < 0.15 and len(data) > 1:
            data = data[: rng.randrange(len(data))]
            how = "cut short"
        elif roll < 0.25:
            data += rng.randbytes(rng.choice((1, 4, 64)))
            how = "extended"
        elif roll < 0.35:
            data = bytearray(rng.randbytes(len(data)))
            how = "replaced by noise"
        else:
            # Stream headers sit at the start of a payload: aim half the changes there.
            for _ in range(rng.choice((1, 1, 2, 4))):
                span = min(len(data), 64) if rng.random() < 0.5 else len(data)
                if not span:
                    break
                at = rng.randrange(span)
                if rng.random() < 0.3 and at + 4 <= len(data):
                    value = rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, len(data), 1 << 20))
                    data[at : at + 4] = struct.pack("<I", value)
                else:
                    data[at] = (
                        rng.choice(_INTERESTING_BYTES)
                        if rng.random() < 0.5
                        else data[at] ^ (1 << rng.randrange(8))
                    )
            how = "bytes changed"
        sections = list(seed.parts.sections)
        sections[n] = (entry, bytes(data))
        return self._reseal(seed, f"{entry.label} {how}", sections=sections)

    def _sealed_index(self, rng: random.Random, seed: Seed) -> Mutation:
        if not seed.parts.sections:
            return self._sealed_header_value(rng, seed)
        row_n = rng.randrange(len(seed.parts.sections))
        column = rng.randrange(6)
        names = ("kind", "flags", "tile", "offset", "length", "crc32")
        limits = (0xFFFF, 0xFFFF, 0xFFFFFFFF, 2**63 - 1, 2**63 - 1, 0xFFFFFFFF)
        choice = rng.random()

        def edit(rows: list[list[int]]) -> None:
            row = rows[row_n]
            if choice < 0.3:
                row[column] = rng.choice((0, 1, 2, 3, 4, 5, limits[column]))
            elif choice < 0.7 and column >= 3:
                row[column] = max(0, min(limits[column], row[column] + rng.randint(-64, 64)))
            else:
                row[column] = rng.randint(0, limits[column])

        data = seed.parts.assemble(edit)
        return Mutation(data, seed, f"index row {row_n} {names[column]} changed", resealed=True)

    def _sealed_structure(self, rng: random.Random, seed: Seed) -> Mutation:
        parts = seed.parts
        sections = list(parts.sections)
        roll = rng.random()
        major, minor, flags = parts.major, parts.minor, parts.flags
        if roll < 0.25 and sections:
            n = rng.randrange(len(sections))
            del sections[n]
            how = f"section {n} dropped"
        elif roll < 0.45 and len(sections) > 1:
            a, b = rng.sample(range(len(sections)), 2)
            (ea, pa), (eb, pb) = sections[a], sections[b]
            sections[a], sections[b] = (ea, pb), (eb, pa)
            how = f"payloads of sections {a} and {b} swapped"
        elif roll < 0.6 and sections:
            entry, payload = rng.choice(sections)
            # (tile + 10,000 wraps: file-wide sections carry the u32 NO_TILE, 0xFFFFFFFF)
            tile = rng.choice(((entry.tile + 10_000) % 0xFFFFFFFF, 0xFFFFFFFE))
            sections.append((SectionEntry(entry.kind, tile, 0, 0, 0, entry.flags), payload))
            how = "section copied under another tile number"
        elif roll < 0.75:
            kind = rng.choice((0, 3, 5, 99, 0xFFFF))
            sections.append((SectionEntry(kind, 0, 0, 0, 0), rng.randbytes(rng.choice((0, 9, 100)))))
            how = f"section of kind {kind} added"
        else:
            major = rng.choice((major, 0, 1, 3))
            minor = rng.choice((minor, 1, 0xFFFF))
            flags = rng.choice((flags, 1, 0xFFFFFFFF))
            how = f"version {major}.{minor} flags {flags}"
        mutated = FileParts(parts.header, sections, major, minor, flags)
        return Mutation(mutated.assemble(), seed, how, resealed=True)

    def _reseal(
        self,
        seed: Seed,
        how: str,
        *,
        header: bytes | None = None,
        sections: list[tuple[SectionEntry, bytes]] | None = None,
        stored_header: bytes | None = None,
    ) -> Mutation:
        parts = seed.parts
        mutated = FileParts(
            header if header is not None else parts.header,
            sections if sections is not None else parts.sections,
            parts.major,
            parts.minor,
            parts.flags,
            stored_header,
        )
        return Mutation(mutated.assemble(), seed, how, resealed=True)


def _mutate_json(document: dict[str, Any], rng: random.Random) -> str:
    """Change one node of a JSON document in place; returns what was done."""
    paths: list[tuple[Any, Any, str]] = []

    def walk(node: Any, where: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            paths.append((node, key, f"{where}.{key}"))
            if isinstance(value, (dict, list)):
                walk(value, f"{where}.{key}")

    walk(document, "")
    parent, key, where = rng.choice(paths)
    value = parent[key]
    roll = rng.random()
    if roll < 0.1 and isinstance(parent, dict):
        del parent[key]
        return f"{where} deleted"
    if roll < 0.35 and isinstance(value, (int, float)) and not isinstance(value, bool):
        parent[key] = rng.choice((value + 1, value - 1, -value, value * 2, value * 1000, float(value) + 0.5))
        return f"{where} nudged"
    if roll < 0.45 and isinstance(value, list):
        if value and rng.random() < 0.5:
            value.pop(rng.randrange(len(value)))
        else:
            value.append(rng.choice(value) if value else 0)
        return f"{where} resized"
    if roll < 0.5 and isinstance(value, dict):
        value[rng.choice(("extra", "", "\u0000", "id"))] = rng.choice(_INTERESTING_VALUES)
        return f"{where} gained a key"
    parent[key] = rng.choice(_INTERESTING_VALUES)
    return f"{where} replaced"
