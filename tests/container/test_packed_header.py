"""Format 2 headers: deflated JSON from a preset dictionary (SPEC section 5.1)."""

from __future__ import annotations

import hashlib

import numpy as np
from helpers import BUNDLED_CT, REPO

import dstdformat
from dstdformat.container.format import PREAMBLE_SIZE, Preamble
from dstdformat.container.header import DERIVED_STATS, unpack_header
from dstdformat.container.header_dictionary import HEADER_DICTIONARY
from dstdformat.container.inspect import summarize
from dstdformat.io import read_scan
from dstdformat.tiling import SectionKind

GOLDEN = REPO / "spec" / "golden"


def _stored_header(path) -> tuple[Preamble, dict]:
    data = path.read_bytes()
    pre = Preamble.unpack(data[:PREAMBLE_SIZE], len(data))
    return pre, unpack_header(data[PREAMBLE_SIZE : PREAMBLE_SIZE + pre.header_length], pre.major)


def test_the_dictionary_is_the_one_spec_names():
    """The dictionary is part of the format: the package's bytes, the spec's file and the SHA-256
    in SPEC.md are one and the same."""
    assert (REPO / "spec" / "header_dictionary.txt").read_bytes() == HEADER_DICTIONARY
    spec = (REPO / "SPEC.md").read_text()
    assert hashlib.sha256(HEADER_DICTIONARY).hexdigest() in spec
    assert f"the {len(HEADER_DICTIONARY)} bytes of" in spec


def test_a_one_tile_scan_header_is_a_few_hundred_bytes(tmp_path):
    """A NIfTI scan with its full geometry and provenance, in the headline codec: the header the
    issue measured at ~1.7 KB as JSON stays under 300 bytes packed."""
    scan = read_scan(BUNDLED_CT)
    crop = scan.array[:24, :64, :64]
    path = tmp_path / "one.dstd"
    dstdformat.save(crop, path, codec="deepstd", codec_options={"ratio": 64}, **scan.metadata.to_json())
    pre, stored = _stored_header(path)
    with dstdformat.open(path) as volume:
        assert sum(kind == SectionKind.TEXTURE for kind, _ in volume.reader.sections) == 1
        full = volume.header
    assert pre.major == 2 and pre.header_length < 300, pre.header_length
    assert "format" not in stored and "format_version" not in stored
    assert not set(DERIVED_STATS) & set(stored["stats"]) and "order" not in stored["array"]
    assert full["format"] == "dstd" and full["format_version"] == [2, 0]
    assert full["array"]["byte_order"] == "little" and full["array"]["order"] == "C"


def test_readers_show_the_same_header_for_both_versions():
    """The golden int16 crop of format 1.0 and of 2.0 hold the same voxels and header: a reader
    shows the same complete object for both, sizes derived from the 2.0 file's index."""
    with dstdformat.open(GOLDEN / "v1.0" / "int16_ct_crop.dstd") as old:
        old_header, old_voxels, old_summary = old.header, old.read(), summarize(old)
    with dstdformat.open(GOLDEN / "v2.0" / "int16_ct_crop.dstd") as new:
        new_header, new_voxels, new_summary = new.header, new.read(), summarize(new)
        file_size = new.file_size
    np.testing.assert_array_equal(old_voxels, new_voxels)
    for member in ("array", "metadata", "codec", "tiles", "original_sha256"):
        assert old_header[member] == new_header[member], member
    assert list(old_header) == list(new_header)  # the same members, in the same order
    old_stats, new_stats = old_header["stats"], new_header["stats"]
    assert set(old_stats) < set(new_stats)  # the 1.0 set predates file_nbytes and index_crc32
    for member in ("raw_nbytes", "payload_nbytes", "payload_ratio"):
        assert old_stats[member] == new_stats[member], member
    assert new_stats["file_nbytes"] == file_size
    assert new_stats["file_ratio"] == round(new_stats["raw_nbytes"] / file_size, 4)
    assert (old_summary["format_version"], new_summary["format_version"]) == ("1.0", "2.0")
    assert new_summary["header_bytes"] < old_summary["header_bytes"] / 2
    assert old_summary["sections"] == new_summary["sections"]


def test_derived_members_a_file_carries_are_ignored(tmp_path, ct_like):
    """A reader uses what it derives, whatever a (non-conforming) 2.0 header claims."""
    from helpers import rewrite_header

    path = tmp_path / "a.dstd"
    dstdformat.save(ct_like, path, codec="lossless")
    rewrite_header(
        path,
        lambda h: {**h, "format": "other", "stats": {**h["stats"], "file_nbytes": 1, "payload_nbytes": 2}},
    )
    with dstdformat.open(path) as volume:
        assert volume.header["format"] == "dstd"
        assert volume.header["stats"]["file_nbytes"] == path.stat().st_size
        assert volume.header["stats"]["payload_nbytes"] > 2
        np.testing.assert_array_equal(volume.read(), ct_like)
