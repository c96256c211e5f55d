"""Shared test helpers (as numcodecs does): round trips, file surgery for corruption tests."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

import dstdformat
from dstdformat.container.format import (
    FOOTER_SIZE,
    INDEX_RECORD_SIZE,
    PREAMBLE_SIZE,
    Footer,
    Preamble,
    SectionEntry,
    crc32,
    pack_index,
)
from dstdformat.container.header import pack_header, unpack_header

REPO = Path(__file__).resolve().parents[1]
SHARED_CT = REPO.parent / "shared" / "data" / "ct"
BUNDLED_CT = REPO / "dstdformat" / "data" / "totalseg_abdomen_3mm.nii.gz"


def check_roundtrip(array: np.ndarray, path: Path, **save_kwargs) -> dstdformat.Volume:
    """Save, reopen, and check the full read and a few regions against numpy exactly."""
    dstdformat.save(array, path, **save_kwargs)
    volume = dstdformat.open(path)
    decoded = volume.read()
    assert decoded.dtype == array.dtype.newbyteorder("=")
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    mid = tuple(s // 2 for s in array.shape)
    for key in [mid[0], (slice(None), mid[1]), (Ellipsis, mid[2]), (slice(None, None, -2),)]:
        np.testing.assert_array_equal(volume[key], array[key])
    return volume


def file_parts(path: Path) -> dict[str, tuple[int, int]]:
    """Byte ranges of the structures in a file: preamble, header, each section, index, footer."""
    data = path.read_bytes()
    preamble = Preamble.unpack(data[:PREAMBLE_SIZE], len(data))
    h_end = PREAMBLE_SIZE + preamble.header_length
    footer = Footer.unpack(data[-FOOTER_SIZE:], len(data), h_end)
    parts = {
        "preamble": (0, PREAMBLE_SIZE),
        "header": (PREAMBLE_SIZE, h_end),
        "index": (footer.index_offset, footer.index_offset + footer.index_length),
        "footer": (len(data) - FOOTER_SIZE, len(data)),
    }
    for n, entry in enumerate(read_index(path)):
        parts[f"section{n}"] = (entry.offset, entry.offset + entry.length)
    return parts


def read_index(path: Path) -> list[SectionEntry]:
    data = path.read_bytes()
    i_off, i_len = struct.unpack_from("<qq", data, len(data) - FOOTER_SIZE)
    entries = []
    for n in range(i_len // INDEX_RECORD_SIZE):
        kind, flags, tile, off, length, crc, _ = struct.unpack_from(
            "<HHIqqII", data, i_off + n * INDEX_RECORD_SIZE
        )
        entries.append(SectionEntry(kind, tile, off, length, crc, flags))
    return entries


def rewrite_index(path: Path, mutate: Callable[[list[SectionEntry]], list[SectionEntry]]) -> None:
    """Replace the index with ``mutate(entries)``, with valid index and footer checksums, so that
    only the structural checks can catch the change."""
    data = path.read_bytes()
    i_off = struct.unpack_from("<q", data, len(data) - FOOTER_SIZE)[0]
    index = pack_index(mutate(read_index(path)))
    body = data[:i_off] + index
    path.write_bytes(body + Footer(i_off, len(index), crc32(index)).pack())


def rewrite_header(
    path: Path, mutate: Callable[[dict], dict], *, raw: bytes | None = None, major: int | None = None
) -> None:
    """Replace the header (re-checksummed, offsets shifted) to test header validation: ``mutate``
    edits the JSON object as stored (packed again as the file's major version packs it), ``raw``
    replaces the stored bytes."""
    data = path.read_bytes()
    pre = Preamble.unpack(data[:PREAMBLE_SIZE], len(data))
    h_end = PREAMBLE_SIZE + pre.header_length
    if raw is not None:
        header = raw
    else:
        stored = unpack_header(data[PREAMBLE_SIZE:h_end], pre.major)
        header = pack_header(mutate(stored), major if major is not None else pre.major)
    shift = len(header) - pre.header_length
    footer = Footer.unpack(data[-FOOTER_SIZE:], len(data), h_end)
    entries = [
        SectionEntry(e.kind, e.tile, e.offset + shift, e.length, e.crc32, e.flags) for e in read_index(path)
    ]
    index = pack_index(entries)
    new_pre = Preamble(
        major if major is not None else pre.major,
        pre.minor,
        pre.flags,
        PREAMBLE_SIZE,
        len(header),
        crc32(header),
    )
    sections = data[h_end : footer.index_offset]
    out = new_pre.pack() + header + sections
    out += index + Footer(len(out), len(index), crc32(index)).pack()
    path.write_bytes(out)


def make_model(folder: Path, model_id: str = "test-refiner", seed: int = 0) -> Path:
    """A small refinement network with non-trivial weights (the identity would hide mistakes)."""
    import torch

    from dstdformat.model.refine import Refiner, RefinerConfig
    from dstdformat.zoo.weights import save_state

    torch.manual_seed(seed)
    refiner = Refiner(RefinerConfig(channels=8, blocks=1))
    with torch.no_grad():
        refiner.tail.weight.normal_(0, 0.05)
    weights = folder / f"{model_id}.safetensors"
    save_state(weights, refiner)
    (folder / f"{model_id}.json").write_text(
        json.dumps({"id": model_id, "kind": "deepstd-refiner", "architecture": refiner.config.to_json()})
    )
    return weights


def ct_volume(shape=(24, 72, 80), seed=0) -> np.ndarray:
    """Air, a body with soft-tissue texture, bone, and -2048 padding outside a circular field."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    cy, cx = shape[1] / 2, shape[2] / 2
    body = ((y - cy) / (shape[1] * 0.35)) ** 2 + ((x - cx) / (shape[2] * 0.4)) ** 2 < 1
    vol = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, size=shape)
    bone = body & ((x - cx) ** 2 + (y - cy) ** 2 < 40)
    vol[bone] = 700 + 50 * np.sin(z[bone])
    fov = ((y - cy) ** 2 + (x - cx) ** 2) < (min(shape[1:]) / 2) ** 2
    vol[~fov] = -2048
    return vol.astype(np.int16)


def ct_chunk(shape=(16, 48, 40), seed=0) -> np.ndarray:
    """A small int16 CT-like chunk: air, an elliptic body, bony stripes and noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    body = ((y - shape[1] / 2) / (shape[1] * 0.4)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.4)) ** 2 < 1
    return (np.where(body, 40.0, -1000.0) + 300 * (x % 9 == 0) * body + rng.normal(0, 10, shape)).astype(
        np.int16
    )


def phantom_hu(
    shape=(24, 40, 40), spacing=(4.0, 3.0, 3.0), centre_mm=(0.0, 0.0, 0.0), scale: float = 1.0
) -> np.ndarray:
    """A body (40 HU ellipsoid) with a bone and a lung, in HU, centred at ``centre_mm`` and
    ``scale`` times the size."""
    k, j, i = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    k, j, i = ((a - c) / scale for a, c in zip((k, j, i), centre_mm))
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[(k / 40) ** 2 + (j / 50) ** 2 + (i / 45) ** 2 < 1] = 40.0
    hu[(k / 30) ** 2 + ((j - 15) / 15) ** 2 + ((i + 15) / 12) ** 2 < 1] = -850.0
    hu[(k / 35) ** 2 + ((j + 20) / 8) ** 2 + ((i - 10) / 8) ** 2 < 1] = 900.0
    return hu


def assert_matches_golden_reference(array: np.ndarray, golden: Path) -> None:
    """A golden file decoded through a network equals its reference within the manifest's
    tolerance (the rule spec/conformance.py applies: float reductions in another order may move
    a rare voxel by one unit)."""
    manifest = json.loads((golden.parent / "manifest.json").read_text())
    (item,) = [i for i in manifest["valid"] if i["file"] == golden.name]
    tolerance = item["tolerance"]
    reference = np.load(golden.parent / tolerance["reference"], allow_pickle=False)
    assert array.shape == reference.shape and array.dtype == reference.dtype
    difference = np.abs(array.astype(np.int64) - reference.astype(np.int64))
    assert difference.max() <= tolerance["max_abs"], f"{golden.name}: max {difference.max()}"
    assert np.count_nonzero(difference) <= tolerance["max_differing_fraction"] * array.size, (
        f"{golden.name}: {np.count_nonzero(difference)} voxels differ"
    )
