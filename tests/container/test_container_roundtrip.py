from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import check_roundtrip

import dstdformat
from dstdformat import InvalidInputError, Scan, ScanMetadata

DTYPES = ["int16", "uint16", "uint8", "float32", "int8", "int32", "uint32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_roundtrip_every_dtype(tmp_path, dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info:
        array = rng.integers(info.min, info.max, size=(9, 20, 31), endpoint=True, dtype=dtype)
    else:
        array = rng.normal(0, 500, size=(9, 20, 31)).astype(dtype)
    check_roundtrip(array, tmp_path / "a.dstd", tile_shape=(4, 8, 16))


@pytest.mark.parametrize("shape", [(1, 33, 47), (17, 130, 129), (3, 3, 3), (1, 1, 1), (300, 2, 5)])
def test_roundtrip_odd_shapes(tmp_path, ct_like, shape):
    array = np.resize(ct_like, shape)
    volume = check_roundtrip(array, tmp_path / "odd.dstd")
    assert volume.shape == shape


def test_volume_smaller_than_one_tile_is_one_tile(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    volume = check_roundtrip(array, tmp_path / "tiny.dstd")
    assert volume.tile_shape == (2, 3, 4)
    assert volume.header["tiles"]["grid"] == [1, 1, 1]


def test_float_specials_are_exact(tmp_path):
    array = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38] * 4, dtype=np.float32)
    array = array.reshape(2, 3, 4)
    decoded = dstdformat.save(array, tmp_path / "f.dstd") and dstdformat.open(tmp_path / "f.dstd")
    assert decoded.read().tobytes() == array.tobytes()


def test_non_contiguous_and_big_endian_inputs(tmp_path, ct_like):
    view = ct_like[:, ::2, ::-3]
    check_roundtrip(view, tmp_path / "view.dstd")
    big = ct_like.astype(">i2")
    volume = check_roundtrip(big, tmp_path / "big.dstd")
    assert volume.dtype == np.dtype("int16")


def test_metadata_is_kept(tmp_path, ct_like):
    affine = np.array([[0, 0, -0.8, 120.5], [0, 0.8, 0, -80.0], [2.5, 0, 0, -300.25], [0, 0, 0, 1]])
    attributes = {"study": "phantom ü", "nested": {"a": [1, 2.5, None]}}
    dstdformat.save(
        ct_like,
        tmp_path / "m.dstd",
        affine=affine,
        slope=1.0,
        intercept=-1024.0,
        modality="CT",
        attributes=attributes,
    )
    volume = dstdformat.open(tmp_path / "m.dstd")
    np.testing.assert_array_equal(volume.affine, affine)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.8))
    meta = volume.metadata
    assert (meta.slope, meta.intercept, meta.modality) == (1.0, -1024.0, "CT")
    assert meta.original_dtype == "int16"
    assert meta.attributes == attributes


def test_scan_and_volume_inputs_carry_metadata(tmp_path, ct_like):
    scan = Scan(ct_like, ScanMetadata(spacing=(3, 1, 1), modality="CT"))
    dstdformat.save(scan, tmp_path / "s.dstd")
    first = dstdformat.open(tmp_path / "s.dstd")
    dstdformat.save(first, tmp_path / "copy.dstd", attributes={"copied": True})
    second = dstdformat.open(tmp_path / "copy.dstd")
    assert second.spacing == (3, 1, 1) and second.metadata.modality == "CT"
    assert second.metadata.attributes == {"copied": True}
    np.testing.assert_array_equal(second.read(), ct_like)


def test_spacing_override_keeps_orientation(tmp_path, ct_like):
    affine = np.array([[0, 0, -1, 10], [0, 1, 0, 20], [2, 0, 0, 30], [0, 0, 0, 1.0]])
    scan = Scan(ct_like, ScanMetadata(affine=affine))
    dstdformat.save(scan, tmp_path / "s.dstd", spacing=(4, 0.5, 0.5))
    volume = dstdformat.open(tmp_path / "s.dstd")
    np.testing.assert_allclose(volume.affine[:3, :3], [[0, 0, -0.5], [0, 0.5, 0], [4, 0, 0]])
    np.testing.assert_allclose(volume.affine[:3, 3], [10, 20, 30])


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (np.zeros((4, 4)), {}, "3D volume"),
        (np.zeros((2, 2, 2, 2)), {}, "3D volume"),
        (np.zeros((0, 4, 4)), {}, "empty"),
        (np.zeros((2, 2, 2), dtype=bool), {}, "dtype bool"),
        (np.zeros((2, 2, 2), dtype=np.complex64), {}, "dtype complex64"),
        (np.zeros((2, 2, 2), dtype=np.int16), {"spacing": (1, 0, 1)}, "spacing"),
        (
            np.zeros((2, 2, 2), dtype=np.int16),
            {"spacing": (1, 1, 1), "affine": np.diag([2.0, 2, 2, 1])},
            "disagrees",
        ),
        (np.zeros((2, 2, 2), dtype=np.int16), {"affine": np.ones((3, 3))}, "4x4"),
        (np.zeros((2, 2, 2), dtype=np.int16), {"slope": float("nan")}, "slope"),
        (np.zeros((2, 2, 2), dtype=np.int16), {"patient_name": "x"}, "unknown metadata"),
        (np.zeros((2, 2, 2), dtype=np.int16), {"attributes": {"x": object()}}, "JSON"),
        (np.zeros((2, 2, 2), dtype=np.int16), {"tile_shape": (0, 1, 1)}, "tile"),
        (np.zeros((2, 2, 2), dtype=np.int16), {"codec": "nope"}, "unknown codec 'nope'"),
        (
            np.zeros((2, 2, 2), dtype=np.int16),
            {"codec": "lossless", "codec_options": {"clevel": 12}},
            "clevel",
        ),
    ],
)
def test_bad_input_is_refused_clearly(tmp_path, data, kwargs, message):
    with pytest.raises(dstdformat.DstdError, match=message):
        dstdformat.save(data, tmp_path / "bad.dstd", **kwargs)
    assert not (tmp_path / "bad.dstd").exists()
    assert os.listdir(tmp_path) == []


def test_bad_input_errors_are_value_errors(tmp_path):
    with pytest.raises(ValueError):
        dstdformat.save(np.zeros((2, 2)), tmp_path / "x.dstd")
    assert issubclass(InvalidInputError, dstdformat.DstdError)


def test_write_is_atomic_and_replaces(tmp_path, ct_like, monkeypatch):
    target = tmp_path / "scan.dstd"
    dstdformat.save(ct_like, target, codec="lossless")
    before = target.read_bytes()

    from dstdformat.codecs.lossless import LosslessCodec

    def failing_encode(self, array, grid, *, progress=False, metadata=None, costs=None):
        raise RuntimeError("encoder crashed midway")

    monkeypatch.setattr(LosslessCodec, "encode", failing_encode)
    with pytest.raises(RuntimeError, match="midway"):
        dstdformat.save(ct_like + 1, target, codec="lossless")
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["scan.dstd"]
    monkeypatch.undo()
    dstdformat.save(ct_like + 1, target)
    np.testing.assert_array_equal(dstdformat.open(target).read(), ct_like + 1)


def test_fsspec_memory_url_roundtrip(ct_like):
    url = "memory://dstd-tests/roundtrip.dstd"
    dstdformat.save(ct_like, url, spacing=(2, 1, 1))
    volume = dstdformat.open(url)
    np.testing.assert_array_equal(volume[3:9, 10, :], ct_like[3:9, 10, :])
    assert volume.spacing == (2, 1, 1)


def test_open_costs_at_most_two_small_requests(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=(64, 128, 128), dtype=np.int16)  # ~2 MB compressed
    dstdformat.save(array, tmp_path / "big.dstd")
    volume = dstdformat.open(tmp_path / "big.dstd")
    assert volume.file_size > 4 * 64 * 1024
    assert volume.io_stats.requests <= 2
    assert volume.io_stats.bytes_fetched <= 2 * 64 * 1024
    volume.io_stats.reset()
    np.testing.assert_array_equal(volume[10], array[10])
    assert volume.io_stats.bytes_fetched < volume.file_size / 4


def test_slice_read_fetches_only_its_tiles(tmp_path, ct_like):
    array = np.resize(ct_like, (64, 45, 67))
    dstdformat.save(array, tmp_path / "s.dstd", tile_shape=(8, 45, 67))
    volume = dstdformat.open(tmp_path / "s.dstd")
    texture = [e for e in volume.reader.sections.values()]
    volume.io_stats.reset()
    volume[20]
    one_tile = max(e.length for e in texture)
    assert volume.io_stats.bytes_fetched <= one_tile
    assert volume.io_stats.requests == 1


def test_importing_and_reading_never_imports_torch(tmp_path, ct_like):
    path = tmp_path / "t.dstd"
    dstdformat.save(ct_like, path)
    code = (
        "import sys, dstdformat, dstdformat.container\n"
        f"v = dstdformat.open({str(path)!r}); v.read(); v[0]\n"
        "from dstdformat.container.inspect import verify; assert verify(v).ok\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_in_memory_stream_round_trip(ct_like):
    from dstdformat.codecs.registry import get_codec
    from dstdformat.container.writer import encode_volume

    stream = encode_volume(ct_like, codec=get_codec("lossless"), tile_shape=(8, 16, 16))
    volume = dstdformat.open(stream)
    np.testing.assert_array_equal(volume.read(), ct_like)
    np.testing.assert_array_equal(volume[3, 5:20], ct_like[3, 5:20])
    with pytest.raises(dstdformat.TruncatedFileError):
        dstdformat.open(stream[:-10])


def test_lossy_files_record_the_error_a_reader_gets(tmp_path):
    from helpers import ct_volume

    from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
    from dstdformat.metrics import mae, max_error, psnr

    array = ((ct_volume(seed=3).astype(np.float64) + 1024) / 2).astype(np.int16)  # HU = 2v - 1024
    path = tmp_path / "lossy.dstd"
    result = dstdformat.save(
        array, path, codec=DeepSTDVolumeCodec(ratio=32, model=None), slope=2.0, intercept=-1024.0
    )
    error = result.header["stats"]["error"]
    with dstdformat.open(path) as volume:
        assert volume.header["stats"]["error"] == error
        decoded = volume.read()
    hu, decoded_hu = array * 2.0 - 1024.0, decoded * 2.0 - 1024.0  # in value units, not stored
    assert error["mae_hu"] == pytest.approx(mae(hu, decoded_hu), abs=1e-3) and error["mae_hu"] > 0
    assert error["max_error_hu"] == pytest.approx(max_error(hu, decoded_hu))
    assert error["psnr_db"] == pytest.approx(psnr(hu, decoded_hu), abs=1e-3)
    exact = dstdformat.save(array, tmp_path / "exact.dstd")
    assert "error" not in exact.header["stats"]  # lossless files say nothing
