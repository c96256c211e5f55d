"""DeepSTDCodec as a zarr v3 serializer: plain and sharded arrays, fresh processes, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import ct_chunk

import dstdformat
from dstdformat import DeepSTDCodec
from dstdformat.errors import CodecError, InvalidInputError


@pytest.fixture
def volume() -> np.ndarray:
    return np.concatenate([ct_chunk(shape=(10, 48, 40), seed=s) for s in range(3)])


def test_v3_array_round_trip_and_metadata(tmp_path, volume):
    z = zarr.create_array(
        tmp_path / "a.zarr",
        shape=volume.shape,
        chunks=(10, 48, 40),
        dtype="int16",
        serializer=DeepSTDCodec(max_error=4),
        compressors=None,
    )
    z[:] = volume
    assert np.abs(z[:].astype(int) - volume).max() <= 4
    codec = z.metadata.codecs[0]
    assert isinstance(codec, DeepSTDCodec)
    assert DeepSTDCodec.from_dict(codec.to_dict()) == codec
    assert codec.to_dict()["configuration"]["max_error"] == 4.0


def test_sharded_array_and_regions(tmp_path, volume):
    z = zarr.create_array(
        tmp_path / "s.zarr",
        shape=volume.shape,
        chunks=(5, 24, 20),
        shards=(10, 48, 40),
        dtype="int16",
        serializer=DeepSTDCodec(max_error=3),
        compressors=None,
    )
    z[:] = volume
    np.testing.assert_array_equal(z[7:13, 5:30, 3], zarr.open_array(tmp_path / "s.zarr")[:][7:13, 5:30, 3])
    assert np.abs(z[:].astype(int) - volume).max() <= 3


def test_fresh_process_with_only_zarr(tmp_path, volume):
    store = tmp_path / "f.zarr"
    z = zarr.create_array(
        store,
        shape=volume.shape,
        chunks=(10, 48, 40),
        dtype="int16",
        serializer=DeepSTDCodec(quality=45, model=None),
        compressors=None,
    )
    z[:] = volume
    code = (
        "import zarr, sys; z = zarr.open(sys.argv[1], mode='r'); a = z[:]; "
        "print(a.shape, a.dtype, type(z.metadata.codecs[0]).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "(30, 48, 40) int16 DeepSTDCodec" in result.stdout


def test_bad_arrays_and_configs(tmp_path):
    with pytest.raises(CodecError, match="float64"):
        zarr.create_array(
            tmp_path / "f64.zarr",
            shape=(4, 8, 8),
            chunks=(4, 8, 8),
            dtype="float64",
            serializer=DeepSTDCodec(max_error=1),
            compressors=None,
        )
    with pytest.raises(CodecError, match="2D or 3D"):
        zarr.create_array(
            tmp_path / "1d.zarr",
            shape=(64,),
            chunks=(64,),
            dtype="int16",
            serializer=DeepSTDCodec(max_error=1),
            compressors=None,
        )
    with pytest.raises(CodecError, match="unknown model"):
        DeepSTDCodec.from_dict({"name": "deepstd", "configuration": {"ratio": 64.0, "model": "nope"}})
    with pytest.raises(InvalidInputError, match="at most one"):
        DeepSTDCodec(ratio=64, quality=40)
    assert dstdformat.DeepSTDCodec is DeepSTDCodec


def test_batched_decode_equals_chunk_by_chunk(tmp_path, volume, test_model, monkeypatch):
    from dstdformat.interop.numcodecs_deepstd import DeepSTD

    batches = []
    decode_many = DeepSTD.decode_many

    def counting(self, bufs, batch=None):
        batches.append(len(bufs))
        return decode_many(self, bufs, batch)

    monkeypatch.setattr(DeepSTD, "decode_many", counting)
    codec = DeepSTDCodec(ratio=6, model="test-refiner")
    z = zarr.create_array(
        tmp_path / "b.zarr",
        shape=volume.shape,
        chunks=(10, 48, 40),
        dtype="int16",
        serializer=codec,
        compressors=None,
    )
    z[:] = volume
    with zarr.config.set({"codec_pipeline.batch_size": 1}):
        one_by_one = zarr.open_array(tmp_path / "b.zarr", mode="r")[:]
    with zarr.config.set({"codec_pipeline.batch_size": 3}):
        batched = zarr.open_array(tmp_path / "b.zarr", mode="r")[:]
    # Same network, same crops; only the batch's float reduction order may differ.
    assert np.abs(batched.astype(int) - one_by_one).max() <= 1
    assert 3 in batches and 1 in batches  # zarr handed the codec 3 chunks at once, then 1
    chunks = [codec._inner.encode(volume[k : k + 10]) for k in (0, 10, 20)]
    together = codec._inner.decode_many(chunks)
    for k, chunk in zip((0, 10, 20), chunks):
        assert np.abs(together[k // 10].astype(int) - codec._inner.decode(chunk)).max() <= 1


def test_partial_decode_reads_only_the_selection(tmp_path, volume, monkeypatch):
    from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
    from dstdformat.codecs.deepstd.base_layers import sperr

    # Small wavelet tiles, so that one chunk holds 3 x 2 x 2 of them.
    monkeypatch.setattr(DeepSTDVolumeCodec, "preferred_tile_shape", (10, 24, 20))
    z = zarr.create_array(
        tmp_path / "p.zarr",
        shape=volume.shape,
        chunks=(30, 48, 40),
        dtype="int16",
        serializer=DeepSTDCodec(ratio=6, model=None),
        compressors=None,
    )
    z[:] = volume
    full = zarr.open_array(tmp_path / "p.zarr", mode="r")[:]
    regions = []
    plan_region = DeepSTDVolumeCodec.plan_region
    monkeypatch.setattr(
        DeepSTDVolumeCodec,
        "plan_region",
        lambda self, ctx, region, fetch: (
            regions.append([(r.start, r.stop) for r in region]) or plan_region(self, ctx, region, fetch)
        ),
    )
    decoded_tiles = []
    decode = sperr.decode
    monkeypatch.setattr(
        sperr,
        "decode",
        lambda payload, shape, **kw: decoded_tiles.append(shape) or decode(payload, shape, **kw),
    )
    reader = zarr.open_array(tmp_path / "p.zarr", mode="r")
    np.testing.assert_array_equal(reader[12, 5:30:4, -3], full[12, 5:30:4, -3])
    assert regions == [[(12, 13), (5, 30), (37, 38)]]
    assert len(decoded_tiles) == 2  # the 2 of 12 tiles under the selection
    np.testing.assert_array_equal(reader[[2, 7], :, 4], full[[2, 7], :, 4])  # fancy: whole chunk


def test_edge_chunks_and_partial_reads(tmp_path, volume):
    z = zarr.create_array(
        tmp_path / "e.zarr",
        shape=(27, 48, 37),
        chunks=(10, 32, 32),
        dtype="int16",
        serializer=DeepSTDCodec(max_error=3),
        compressors=None,
    )
    z[:] = volume[:27, :, :37]
    full = zarr.open_array(tmp_path / "e.zarr", mode="r")[:]
    assert np.abs(full.astype(int) - volume[:27, :, :37]).max() <= 3
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "e.zarr")[25, 40:, 33:], full[25, 40:, 33:])
