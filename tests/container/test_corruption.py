"""Every kind of damage gives a specific DstdError naming the problem -- never wrong data."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from helpers import file_parts, rewrite_header, rewrite_index

import dstdformat
from dstdformat import (
    ChecksumError,
    CorruptHeaderError,
    CorruptIndexError,
    CorruptSectionError,
    DstdError,
    NotADstdFileError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from dstdformat.container.format import PREAMBLE_SIZE, Preamble, crc32
from dstdformat.container.header import deflate_header


@pytest.fixture
def stored(tmp_path, ct_like):
    path = tmp_path / "good.dstd"
    dstdformat.save(ct_like, path, tile_shape=(8, 32, 32), spacing=(2, 1, 1))
    return path, ct_like


def _read_all(path):
    volume = dstdformat.open(path)
    return volume.read()


@pytest.mark.parametrize("cut", [0, 5, 40, 100, 0.5, -40, -1])
def test_truncated_file(stored, cut):
    path, _ = stored
    data = path.read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else cut % len(data) if cut < 0 else cut
    path.write_bytes(data[:end])
    with pytest.raises((TruncatedFileError, NotADstdFileError, CorruptIndexError)) as info:
        _read_all(path)
    assert isinstance(info.value, DstdError)


def test_every_single_flipped_byte_is_caught(stored):
    """Flip one byte in every structure (and in every section): each read fails loudly."""
    path, _ = stored
    original = path.read_bytes()
    parts = file_parts(path)
    assert sum(name.startswith("section") for name in parts) == 3 * 2 * 3
    for name, (start, end) in parts.items():
        for position in {start, (start + end) // 2, end - 1}:
            corrupted = bytearray(original)
            corrupted[position] ^= 0x5A
            path.write_bytes(bytes(corrupted))
            with pytest.raises(DstdError) as info:
                _read_all(path)
            assert isinstance(
                info.value,
                (ChecksumError, NotADstdFileError, TruncatedFileError, CorruptIndexError, CorruptHeaderError),
            ), (name, info)
            if name.startswith("section"):
                assert isinstance(info.value, ChecksumError)
                assert "tile" in str(info.value)
    path.write_bytes(original)
    _read_all(path)


def test_wrong_magic(stored):
    path, _ = stored
    data = bytearray(path.read_bytes())
    data[1:5] = b"NIFT"
    path.write_bytes(bytes(data))
    with pytest.raises(NotADstdFileError, match="magic"):
        dstdformat.open(path)


def test_other_files_are_not_dstd(tmp_path):
    (tmp_path / "text.dstd").write_text("hello, this is not a dstd file at all" * 10)
    with pytest.raises(NotADstdFileError):
        dstdformat.open(tmp_path / "text.dstd")
    (tmp_path / "empty.dstd").write_bytes(b"")
    with pytest.raises(NotADstdFileError):
        dstdformat.open(tmp_path / "empty.dstd")


def test_unknown_major_version_is_refused(stored):
    path, _ = stored
    rewrite_header(path, lambda h: h, major=3)
    with pytest.raises(UnsupportedVersionError, match="version 3.0.*major versions 1, 2"):
        dstdformat.open(path)


def test_newer_minor_version_and_unknown_fields_are_read(stored):
    path, array = stored
    data = bytearray(path.read_bytes())
    pre = Preamble.unpack(bytes(data[:PREAMBLE_SIZE]), len(data))
    newer = dataclasses.replace(pre, minor=7)
    data[:PREAMBLE_SIZE] = newer.pack()
    path.write_bytes(bytes(data))
    rewrite_header(path, lambda h: {**h, "future_member": {"x": 1}})
    volume = dstdformat.open(path)
    assert volume.reader.preamble.minor == 7
    np.testing.assert_array_equal(volume.read(), array)


@pytest.mark.parametrize("length", [0, 2**40, 2**62])
def test_absurd_header_length(stored, length):
    path, _ = stored
    data = bytearray(path.read_bytes())
    struct.pack_into("<q", data, 24, length)
    struct.pack_into("<I", data, 60, crc32(bytes(data[:60])))
    path.write_bytes(bytes(data))
    with pytest.raises((CorruptHeaderError, TruncatedFileError), match="header length"):
        dstdformat.open(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda es: [dataclasses.replace(es[0], offset=-5), *es[1:]], "negative"),
        (lambda es: [dataclasses.replace(es[0], length=-1), *es[1:]], "negative"),
        (lambda es: [es[0], dataclasses.replace(es[1], offset=es[0].offset), *es[2:]], "overlap"),
        (lambda es: [dataclasses.replace(es[0], offset=3), *es[1:]], "outside the data area"),
        (lambda es: [dataclasses.replace(es[0], length=10**12), *es[1:]], "outside the data area"),
        (lambda es: [es[0], es[0], *es[2:]], "overlap|twice"),
        (lambda es: es[1:], "missing|does not belong to this header"),
    ],
)
def test_bad_index_entries(stored, mutate, message):
    path, _ = stored
    rewrite_index(path, mutate)
    with pytest.raises(CorruptIndexError, match=message):
        _read_all(path)


def test_section_swapped_between_tiles_is_caught(stored):
    """Two tiles' entries exchanged (checksums valid): decoding notices the size mismatch or the
    data is of the same size -- so the index checksum and crc per entry must not be the only line
    of defence; edge tiles of different extents are rejected by the codec's size check."""
    path, _ = stored
    entries_first_last = []

    def swap(es):
        first, last = es[0], es[-1]
        entries_first_last.extend([first, last])
        return [
            dataclasses.replace(first, tile=last.tile),
            *es[1:-1],
            dataclasses.replace(last, tile=first.tile),
        ]

    rewrite_index(path, swap)
    with pytest.raises(CorruptIndexError, match="does not belong to this header"):
        _read_all(path)

    # Files without the header's index CRC (written before it existed) still meet the codec's
    # size check.
    def drop_index_crc(header):
        header["stats"].pop("index_crc32")
        return header

    rewrite_header(path, drop_index_crc)
    # lossless: "declares"; predictive (the default for this int16 scan): the slice count
    with pytest.raises(CorruptSectionError, match=r"declares|expected version [0-9 or]+ with \d+"):
        _read_all(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h: {**h, "array": {**h["array"], "shape": [1, 2]}}, "array.shape"),
        (lambda h: {**h, "array": {**h["array"], "shape": [0, 2, 2]}}, "array.shape"),
        (lambda h: {**h, "array": {**h["array"], "shape": [2**24, 2**24, 2**24]}}, "implausibly large"),
        (lambda h: {**h, "array": {**h["array"], "dtype": "object"}}, "array.dtype"),
        (lambda h: {**h, "tiles": {**h["tiles"], "grid": [1, 1, 1]}}, "tiles.grid"),
        (lambda h: {k: v for k, v in h.items() if k != "codec"}, "missing codec"),
        (lambda h: {**h, "metadata": {**h["metadata"], "spacing": [1, -1, 1]}}, "metadata"),
    ],
)
def test_invalid_header_contents(stored, mutate, message):
    path, _ = stored
    rewrite_header(path, mutate)
    with pytest.raises(CorruptHeaderError, match=message):
        dstdformat.open(path)


def test_a_version_1_header_must_name_the_format(stored):
    """Format 1 headers state ``format`` (format 2 leaves it to the reader)."""
    path, _ = stored
    rewrite_header(path, lambda h: {"format": "other", **h}, major=1)
    with pytest.raises(CorruptHeaderError, match="format"):
        dstdformat.open(path)
    rewrite_header(path, lambda h: {**h, "format": "dstd", "format_version": [1, 0]}, major=1)
    with dstdformat.open(path) as volume:
        assert volume.reader.preamble.major == 1 and volume.header["format"] == "dstd"


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\xff\xfe", "UTF-8"), (b"{not json", "JSON"), (b"[1, 2]", "not an object"), (b"[" * 100000, "JSON")],
)
def test_malformed_header_json(stored, raw, message):
    path, _ = stored
    rewrite_header(path, lambda h: h, raw=deflate_header(raw))
    with pytest.raises(CorruptHeaderError, match=message):
        dstdformat.open(path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda packed: b"{" + packed, "does not inflate"),  # a JSON header in a format 2 file
        (lambda packed: packed[:-3], "does not end where the header ends"),  # cut short
        (lambda packed: packed + b"\x00junk", "does not end where the header ends"),
        (lambda packed: deflate_header(b" " * (17 << 20)), "inflates to more than"),  # 17 MiB from 17 KB
    ],
    ids=["json", "truncated", "trailing", "bomb"],
)
def test_damaged_packed_header_is_refused(stored, damage, message):
    """A format 2 header is DEFLATE from the preset dictionary: bytes that do not inflate, stop
    early, carry more, inflate without bound or need another dictionary are a corrupt header."""
    path, _ = stored
    data = path.read_bytes()
    pre = Preamble.unpack(data[:PREAMBLE_SIZE], len(data))
    assert pre.major == 2
    rewrite_header(path, lambda h: h, raw=damage(data[PREAMBLE_SIZE : PREAMBLE_SIZE + pre.header_length]))
    with pytest.raises(CorruptHeaderError, match=message):
        dstdformat.open(path)


def test_unknown_codec_in_file(stored):
    path, _ = stored
    rewrite_header(path, lambda h: {**h, "codec": {**h["codec"], "id": "martian"}})
    volume = dstdformat.open(path)  # the header alone is readable
    assert volume.codec_id == "martian"
    with pytest.raises(dstdformat.UnknownCodecError, match="martian"):
        volume[0]


def test_codec_parameters_from_file_are_validated(stored):
    path, _ = stored
    rewrite_header(path, lambda h: {**h, "codec": {**h["codec"], "params": {"cname": "pickle"}}})
    with pytest.raises(dstdformat.CodecError, match="cname"):
        dstdformat.open(path)[0]


def test_header_and_sections_from_two_files_are_refused(tmp_path, ct_like):
    """A splice of two valid files (the header of one, the sections and index of the other) has
    consistent checksums everywhere; the index CRC recorded in the header catches it."""
    from fuzzing import FileParts

    from dstdformat.errors import CorruptIndexError

    first, second = tmp_path / "a.dstd", tmp_path / "b.dstd"
    dstdformat.save(ct_like, first)
    changed = ct_like.copy()
    changed[3] += 1
    dstdformat.save(changed, second)
    spliced = FileParts.parse(second.read_bytes())
    spliced.header = FileParts.parse(first.read_bytes()).header
    with pytest.raises(CorruptIndexError, match="does not belong to this header"):
        dstdformat.open(spliced.assemble())
    with dstdformat.open(first) as volume:  # the check passes on the real thing
        assert isinstance(volume.header["stats"]["index_crc32"], int)
        np.testing.assert_array_equal(volume.read(), ct_like)
