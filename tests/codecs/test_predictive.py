"""The predictive codec (archive tiers): exact or within max_error on every voxel, on every
integer dtype it takes, with slices predicted from their neighbours where that codes smaller."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from helpers import BUNDLED_CT, check_roundtrip, read_index

import dstdformat
from dstdformat.codecs import get_codec
from dstdformat.codecs.predictive.payload import RECORD_V1, _varint, pack_payload, read_groups
from dstdformat.codecs.predictive.slices import Mode, _code_slices, decode_tile, encode_tile
from dstdformat.container.inspect import verify
from dstdformat.errors import CorruptSectionError, InvalidInputError

BOUNDS = (1, 2, 4, 8, 16)


@pytest.fixture(scope="module")
def scan_crop() -> np.ndarray:
    scan = dstdformat.io.read_scan(BUNDLED_CT)
    return np.ascontiguousarray(scan.array[10:30, 10:90, 20:110]).astype(np.int16)


def _hard_cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Noise, metal spikes, constant tiles and the int16 extremes side by side."""
    noise = rng.integers(-2000, 3000, (12, 40, 36)).astype(np.int16)
    spikes = np.full((12, 40, 36), -1000, np.int16)
    spikes[rng.random(spikes.shape) < 0.01] = 30000
    extremes = np.where(rng.random((12, 40, 36)) < 0.5, -32768, 32767).astype(np.int16)
    constant = np.full((12, 40, 36), 17, np.int16)
    return {"noise": noise, "spikes": spikes, "extremes": extremes, "constant": constant}


def _tile_records(path) -> list[tuple[int, int, int, int, int]]:
    """(slice, mode, coder, low, slices in its stream) of every slice of every tile of a file."""
    data = path.read_bytes()
    records = []
    for entry in read_index(path):
        payload = data[entry.offset : entry.offset + entry.length]
        groups, _ = read_groups(payload, struct.unpack_from("<BH", payload)[1], "a tile")
        records += [(e.slice, e.mode, g.coder, e.low, len(g.entries)) for g in groups for e in g.entries]
    return records


def _singles(block, coding) -> bytes:
    """The tile payload of ``block`` with every slice in its own stream (what encode_tile keeps
    where stacking does not pay)."""
    return pack_payload(block.shape[0], _code_slices(block, coding, "tile 0")[0])


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
@pytest.mark.parametrize("inter_slice", [True, False])
def test_lossless_on_every_dtype(tmp_path, ct_like, dtype, inter_slice):
    info = np.iinfo(dtype)
    array = np.clip(ct_like // (1 if info.bits == 16 else 16), info.min, info.max).astype(dtype)
    array[0, 0, :4] = [info.min, info.max, info.min, info.max]
    volume = check_roundtrip(
        array, tmp_path / "p.dstd", codec="predictive", codec_options={"inter_slice": inter_slice}
    )
    assert volume.codec.exact and volume.header["codec"]["params"]["max_error"] == 0
    coders = volume.header["codec"]["state"]["plane_coders"]
    assert coders["jpegls"]["libraries"]["charls"] and coders["jpegxl"]["settings"] == {"effort": 3}


@pytest.mark.parametrize("name", ["noise", "spikes", "extremes", "constant"])
def test_lossless_on_hard_inputs(tmp_path, name):
    array = _hard_cases(np.random.default_rng(3))[name]
    check_roundtrip(array, tmp_path / "h.dstd", codec="predictive", tile_shape=(5, 24, 24))


@pytest.mark.parametrize("bound", BOUNDS)
def test_the_bound_holds_on_every_voxel(tmp_path, scan_crop, bound):
    cases = {"scan": scan_crop, **_hard_cases(np.random.default_rng(bound))}
    for name, array in cases.items():
        path = tmp_path / f"{name}.dstd"
        dstdformat.save(
            array, path, codec="predictive", codec_options={"max_error": bound}, tile_shape=(6, 64, 64)
        )
        volume = dstdformat.open(path)
        decoded = volume.read().astype(np.int32)
        error = np.abs(decoded - array)
        assert error.max() <= bound, name
        assert not volume.codec.exact
        if name == "scan":  # the bound is used, not coded losslessly
            assert error.max() == bound and error.mean() > bound / 4
        region = (slice(2, 9), slice(5, 30), slice(7, 33))
        np.testing.assert_array_equal(volume[region], decoded[region])


def test_bounds_buy_size_and_lossless_matches_the_input_hash(tmp_path, scan_crop):
    sizes = {}
    for bound in (0, *BOUNDS):
        result = dstdformat.save(
            scan_crop, tmp_path / f"{bound}.dstd", codec="predictive", codec_options={"max_error": bound}
        )
        sizes[bound] = result.file_size
    assert all(sizes[a] > sizes[b] for a, b in zip((0, *BOUNDS), BOUNDS)), sizes
    report = verify(dstdformat.open(tmp_path / "0.dstd"))
    assert report.ok and report.content_hash_matches


def test_smaller_than_jpegls_and_jpegxl_slice_by_slice_and_predicts_across_slices(tmp_path, scan_crop):
    import imagecodecs

    shifted = (scan_crop.astype(np.int32) - scan_crop.min()).astype(np.uint16)
    jpegls = [len(imagecodecs.jpegls_encode(s)) for s in shifted]
    jpegxl = [len(imagecodecs.jpegxl_encode(s, lossless=True, effort=3, bitspersample=12)) for s in shifted]
    best_alone = sum(map(min, jpegls, jpegxl))
    path = tmp_path / "s.dstd"
    dstdformat.save(scan_crop, path, codec="predictive")
    stored = sum(e.length for e in read_index(path))
    records = _tile_records(path)
    assert stored < best_alone <= min(sum(jpegls), sum(jpegxl)), (stored, best_alone)
    assert {r[1] for r in records} & {Mode.BETWEEN, Mode.PREVIOUS}  # predicted across slices
    assert 1 in {r[2] for r in records}  # JPEG XL wins slices
    flat = tmp_path / "flat.dstd"
    dstdformat.save(scan_crop, flat, codec="predictive", codec_options={"inter_slice": False})
    assert {r[1] for r in _tile_records(flat)} == {Mode.INTRA}
    bounded = tmp_path / "flat4.dstd"  # stacked or not, no slice is predicted from another
    dstdformat.save(
        scan_crop, bounded, codec="predictive", codec_options={"inter_slice": False, "max_error": 4}
    )
    assert {r[1] for r in _tile_records(bounded)} == {Mode.INTRA} and max(
        r[4] for r in _tile_records(bounded)
    ) > 1
    assert stored < sum(e.length for e in read_index(flat))


def test_slices_alike_are_coded_from_each_other(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.integers(-1000, 2000, (1, 48, 48))
    array = (base + rng.integers(-2, 3, (8, 48, 48))).astype(np.int16)
    path = tmp_path / "alike.dstd"
    check_roundtrip(array, path, codec="predictive")
    modes = [record[1] for record in _tile_records(path)]
    assert modes.count(Mode.INTRA) == 1, modes


@pytest.mark.parametrize(
    "options",
    [
        {"max_error": 0.5},
        {"max_error": -1},
        {"max_error": 300},
        {"max_error": True},
        {"plane_coders": ["gif"]},
        {"plane_coders": []},
        {"plane_coders": ["jpegxl"], "max_error": 2},
        {"inter_slice": "yes"},
        {"ratio": 10},
    ],
)
def test_bad_options(options):
    with pytest.raises(InvalidInputError):
        get_codec("predictive", **options)


def test_a_float_volume_is_refused_naming_the_alternatives(tmp_path):
    array = np.zeros((4, 8, 8), np.float32)
    array[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="'lossless'.*'deepstd' with max_error"):
        dstdformat.save(array, tmp_path / "f.dstd", codec="predictive", codec_options={"max_error": 2})
    assert not (tmp_path / "f.dstd").exists()


def _as_version_1(payload: bytes, coding, extent) -> bytes:
    """A one-slice-a-stream tile payload in the records of version 1: whole streams, 11 bytes a
    record."""
    groups, offset = read_groups(payload, extent[0], "tile")
    assert all(len(g.entries) == 1 for g in groups)
    streams = []
    for g in groups:
        stream = payload[offset : offset + g.length]
        offset += g.length
        shape = extent[1:][::-1] if g.transposed else extent[1:]
        streams.append(
            coding.coders[g.coder].dress(stream, shape, g.bits, coding.near, "t") if g.bare else stream
        )
    head = struct.pack("<BH", 1, len(groups))
    packed = [
        RECORD_V1.pack(g.entries[0].slice, g.entries[0].mode, g.coder, g.entries[0].low, len(t))
        for g, t in zip(groups, streams)
    ]
    return head + b"".join(packed) + b"".join(streams)


@pytest.mark.parametrize("near", [127, 128, 255])
def test_bounds_of_128_and_more_code_8_bit_range_planes_as_16_bit(tmp_path, near):
    """JPEG-LS takes NEAR >= 128 in 16-bit planes only: planes whose range fits 8 bits are still
    coded as 16-bit there, stacked or not (the stacked path once coded them as 8-bit)."""
    array = np.random.default_rng(0).integers(0, 200, (8, 40, 48)).astype(np.int16)
    dstdformat.save(array, tmp_path / "n.dstd", codec="predictive", codec_options={"max_error": near})
    decoded = dstdformat.open(tmp_path / "n.dstd").read()
    assert np.abs(decoded.astype(np.int32) - array).max() <= near


def test_planes_are_stored_transposed_where_that_codes_smaller(scan_crop):
    """JPEG XL's predictor is not symmetric in rows and columns: on CT some slices code smaller
    transposed; those are stored so (a flag) and decode back exactly."""
    coding = get_codec("predictive").slice_coding(np.dtype("int16"))
    block = np.ascontiguousarray(scan_crop[:8]).astype(np.int32)
    payload = _singles(block, coding)
    groups, _ = read_groups(payload, 8, "tile 0")
    assert {g.transposed for g in groups} == {False, True}
    np.testing.assert_array_equal(decode_tile(payload, block.shape, coding, "tile 0"), block)
    flat = get_codec("predictive", inter_slice=False).slice_coding(np.dtype("int16"))
    intra, _ = read_groups(_singles(block, flat), 8, "tile 0")
    jpegxl = flat.coders[1]
    for group in (g for g in intra if g.coder == 1):  # JPEG XL's: the smaller way round
        plane = block[group.entries[0].slice]
        shifted = np.ascontiguousarray(plane - plane.min()).astype(np.uint16)
        sizes = [len(jpegxl.encode(p, 0)) for p in (shifted, np.ascontiguousarray(shifted.T))]
        assert group.length == min(sizes) and group.transposed == (sizes[1] < sizes[0])


@pytest.mark.parametrize("near", [0, 4])
def test_small_slices_are_stacked_into_one_plane_where_that_codes_smaller(near):
    """JPEG-LS restarts its context statistics with every plane: eight 126x120-like slices code
    several percent smaller as one tall plane. The stacked payload is kept only where smaller,
    and decodes exactly (or within the bound) as the slice-by-slice one does."""
    scan = dstdformat.io.read_scan(BUNDLED_CT).array
    block = np.ascontiguousarray(scan[40:48, 10:70, 10:90]).astype(np.int32)
    coding = get_codec("predictive", max_error=near).slice_coding(np.dtype("int16"))
    payload, singles = encode_tile(block, coding, "tile 0"), _singles(block, coding)
    groups, _ = read_groups(payload, 8, "tile 0")
    assert len(groups) == (1 if near == 0 else 2) and len(payload) < 0.99 * len(singles), (
        len(payload),
        len(singles),
    )
    if near:  # even slices alone, then the odd ones predicted from them
        assert [e.slice for e in groups[0].entries] == [0, 2, 4, 6] and {
            e.mode for e in groups[0].entries
        } == {0}
        assert {e.mode for e in groups[1].entries} & {Mode.PREVIOUS, Mode.BETWEEN}
    decoded = decode_tile(payload, block.shape, coding, "tile 0")
    assert np.abs(decoded - block).max() <= near
    flat = np.zeros((8, 60, 80), np.int32) + np.arange(8)[:, None, None] * 7  # constant slices
    assert np.abs(decode_tile(encode_tile(flat, coding, "t"), flat.shape, coding, "t") - flat).max() <= near


def test_version_1_payloads_decode_the_same(scan_crop):
    """Files of codec version 1 stored whole streams in 11-byte records: they decode as before."""
    for near in (0, 3):
        codec = get_codec("predictive", max_error=near, plane_coders=["jpegls"])
        coding = codec.slice_coding(np.dtype("int16"))
        block = scan_crop[:8].astype(np.int32)
        payload = _singles(block, coding)
        groups, _ = read_groups(payload, 8, "tile 0")
        assert any(g.bare for g in groups) and payload[0] == 2
        old = _as_version_1(payload, coding, block.shape)
        assert len(old) - len(payload) >= 8 * (4 + 60)  # records and CharLS's headers
        np.testing.assert_array_equal(
            decode_tile(old, block.shape, coding, "tile 0"),
            decode_tile(payload, block.shape, coding, "tile 0"),
        )


@pytest.mark.parametrize(
    ("coder", "damage"),
    [("jpegls", d) for d in ("flip", "forged-size", "record-length", "mode", "short")]
    + [("jpegxl", d) for d in ("flip", "forged-size", "short")],
)
def test_damaged_planes_raise_a_library_error(scan_crop, coder, damage):
    """Damage a tile payload the way a bug or a forger could (the container's checksums would
    catch it on disk): the codec's own checks must catch it, never a bare library error or an
    allocation of a forged size."""
    coding = get_codec("predictive", plane_coders=[coder], inter_slice=False).slice_coding(np.dtype("int16"))
    block = scan_crop[:8].astype(np.int32)
    data = bytearray(_singles(block, coding))
    np.testing.assert_array_equal(decode_tile(bytes(data), block.shape, coding, "tile 0"), block)
    groups, stream = read_groups(bytes(data), 8, "tile 0")  # stream: the first slice's plane
    if damage == "flip":
        for i in range(stream + 40, len(data), 61):
            data[i] ^= 0x5A
    elif damage == "forged-size" and coder == "jpegls":  # only whole streams have a frame header
        data = bytearray(_as_version_1(bytes(data), coding, block.shape))
        frame = data.index(b"\xff\xf7")
        data[frame + 5 : frame + 9] = struct.pack(">HH", 60000, 60000)
    elif damage == "forged-size":  # a SizeHeader of 2**30 rows, 2**31 columns
        data[stream + 2 : stream + 8] = b"\xfe\xff\xff\xff\xff\xff"
    elif damage == "record-length":
        groups[0] = dataclasses.replace(groups[0], length=groups[0].length + 1)
        data = bytearray(data[:5] + b"".join(g.pack() for g in groups) + data[stream:])
    elif damage == "mode":
        data[5 + 2 + len(_varint(groups[0].length)) + 1] = 3  # the first entry's mode: none
    else:
        del data[-100:]
    with pytest.raises(CorruptSectionError, match="tile 0"):
        decode_tile(bytes(data), block.shape, coding, "tile 0")


def test_cli_compresses_with_a_bound(tmp_path, capsys):
    from dstdformat.cli.main import main

    out = tmp_path / "c.dstd"
    assert (
        main(["compress", str(BUNDLED_CT), str(out), "--codec", "predictive", "--max-error", "2", "--quiet"])
        == 0
    )
    scan = dstdformat.io.read_scan(BUNDLED_CT)
    with dstdformat.open(out) as volume:
        assert np.abs(volume.read().astype(np.int32) - scan.array).max() <= 2


@pytest.mark.parametrize(
    ("codec", "options", "tier", "text"),
    [
        ("predictive", {}, {"tier": "lossless", "max_error": None}, "lossless: every voxel exact"),
        ("predictive", {"max_error": 3}, {"tier": "bounded", "max_error": 3}, "<= 3 on every voxel (1.5 in"),
        ("lossless", {}, {"tier": "lossless", "max_error": None}, "lossless: every voxel exact"),
    ],
)
def test_info_names_the_tier(tmp_path, ct_like, capsys, codec, options, tier, text):
    import json

    from dstdformat.cli.main import main

    path = tmp_path / "t.dstd"
    dstdformat.save(ct_like, path, codec=codec, codec_options=options, slope=0.5)
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tier"] == tier
    assert main(["info", str(path)]) == 0
    assert text in capsys.readouterr().out


def test_deepstd_states_its_tier_by_mode():
    from dstdformat.codecs.base import Guarantee

    assert get_codec("deepstd", max_error=2.5).guarantee() == Guarantee("bounded", 2.5)
    assert get_codec("deepstd", ratio=64).guarantee() == Guarantee("lossy")


def test_a_header_naming_a_dtype_the_codec_cannot_hold_is_corrupt(tmp_path, ct_like):
    """Found by the fuzzer (seed 31, input 2114): a resealed header with dtype float32 reached
    numpy's iinfo, a ValueError."""
    from helpers import rewrite_header

    path = tmp_path / "d.dstd"
    dstdformat.save(ct_like, path, codec="predictive")
    rewrite_header(path, lambda h: {**h, "array": {**h["array"], "dtype": "float32"}})
    with pytest.raises(dstdformat.DstdError):
        dstdformat.open(path).read()


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("int16", "predictive"), ("uint8", "predictive"), ("float32", "lossless"), ("int32", "lossless")],
)
def test_save_without_a_codec_stores_losslessly_with_the_best_codec_for_the_dtype(tmp_path, dtype, expected):
    array = (np.arange(4 * 40 * 48).reshape(4, 40, 48) % 251 - 100).astype(dtype)
    dstdformat.save(array, tmp_path / "d.dstd")
    volume = dstdformat.open(tmp_path / "d.dstd")
    assert volume.codec_id == expected
    assert np.array_equal(volume.read(), array) and volume.read().dtype == array.dtype


def test_codec_options_without_a_codec_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="codec_options only apply when codec is given by id"):
        dstdformat.save(np.zeros((2, 8, 8), np.int16), tmp_path / "x.dstd", codec_options={"max_error": 2})


@pytest.mark.parametrize(
    ("codec", "option", "expected"),
    [
        (None, "max_error", "predictive"),
        ("predictive", "max_error", "predictive"),
        ("deepstd", "ratio", "deepstd"),
    ],
)
def test_codec_options_given_as_metadata_say_where_they_go(tmp_path, codec, option, expected):
    """``save(scan, path, codec="predictive", max_error=4)`` reads naturally; keywords are
    metadata, so the error names the codec_options it meant, not "unknown metadata field"."""
    with pytest.raises(InvalidInputError, match=rf"codec={expected!r}, codec_options={{{option!r}: 4}}"):
        dstdformat.save(np.zeros((2, 8, 8), np.int16), tmp_path / "x.dstd", codec=codec, **{option: 4})
    assert not (tmp_path / "x.dstd").exists()


def test_an_empty_selection_reads_as_numpy_does(tmp_path):
    """Found when predictive became the default: a key selecting nothing asked for 0 threads."""
    array = (np.arange(8 * 16 * 16).reshape(8, 16, 16) % 300).astype(np.int16)
    dstdformat.save(array, tmp_path / "e.dstd", codec="predictive")
    volume = dstdformat.open(tmp_path / "e.dstd")
    for key in (np.s_[3:3], np.s_[:, 5:2], np.s_[..., 16:]):
        assert volume[key].shape == array[key].shape
