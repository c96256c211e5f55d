"""DeepSTD as a numcodecs codec, tested the way numcodecs tests its own codecs."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from helpers import ct_chunk

import dstdformat
from dstdformat import DeepSTD
from dstdformat.errors import CodecError, InvalidInputError

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "deepstd_chunks"


def check_encode_decode(codec, chunk, max_abs=None, mean_abs=None):
    """encode/decode through bytes, a memoryview and ``out=``; the shape and dtype come back."""
    encoded = codec.encode(chunk)
    for buf in (encoded, memoryview(encoded), np.frombuffer(encoded, dtype="u1")):
        decoded = codec.decode(buf)
        assert decoded.shape == chunk.shape and decoded.dtype == chunk.dtype
    out = np.empty_like(chunk)
    assert codec.decode(encoded, out=out) is out
    np.testing.assert_array_equal(out, decoded)
    error = np.abs(decoded.astype(np.float64) - chunk)
    if max_abs is not None:
        assert error.max() <= max_abs
    if mean_abs is not None:
        assert error.mean() <= mean_abs
    return encoded


def check_config(codec):
    config = codec.get_config()
    assert json.loads(json.dumps(config)) == config
    again = numcodecs.get_codec(config)
    assert again == codec and again.get_config() == config
    assert "DeepSTD(" in repr(codec)


@pytest.mark.parametrize(
    "dtype,meta",
    [
        ("int16", {}),
        ("uint16", {"intercept": -1024.0}),
        ("float32", {}),
        ("uint8", {"slope": 4.0, "intercept": -1024.0}),
    ],
)
def test_dtypes_round_trip_within_the_bound(dtype, meta):
    chunk = ct_chunk().astype(np.float64)
    chunk = (chunk - meta.get("intercept", 0.0)) / meta.get("slope", 1.0)
    chunk = np.clip(chunk, 0, 255) if dtype == "uint8" else chunk
    chunk = chunk.astype(dtype)
    codec = DeepSTD(max_error=3, **meta)
    check_encode_decode(codec, chunk, max_abs=3)
    check_config(codec)


def test_ratio_mode_with_a_model_and_pinned_hash(test_model):
    codec = DeepSTD(ratio=8, model="test-refiner")
    assert codec.get_config()["model_sha256"] == dstdformat.zoo.registry.file_sha256(test_model)
    encoded = check_encode_decode(codec, ct_chunk(shape=(24, 64, 64)))  # random weights: no bound
    assert dstdformat.open(encoded).header["codec"]["model"]["id"] == "test-refiner"
    check_config(codec)
    with pytest.raises(CodecError, match="differ"):
        DeepSTD(ratio=8, model="test-refiner", model_sha256="0" * 64)


def test_non_contiguous_odd_shapes_and_single_slices():
    codec = DeepSTD(max_error=2)
    base = ct_chunk(shape=(20, 50, 44))
    for chunk in (base[::2], base[:, ::3, 1:], np.asfortranarray(base), base[7], base[3:4]):
        check_encode_decode(codec, chunk, max_abs=2)


def test_pickles():
    codec = DeepSTD(quality=42, model=None)
    again = pickle.loads(pickle.dumps(codec))
    assert again == codec
    chunk = ct_chunk()
    assert again.encode(chunk) == codec.encode(chunk)


@pytest.mark.parametrize(
    "chunk,message",
    [
        (np.zeros((4, 4, 4)), "float64"),
        (np.zeros((4, 4, 4), dtype=bool), "bool"),
        (np.zeros(16, dtype=np.int16), "2D or 3D"),
        (np.zeros((2, 2, 2, 2), dtype=np.int16), "2D or 3D"),
    ],
)
def test_bad_chunks(chunk, message):
    with pytest.raises(InvalidInputError, match=message):
        DeepSTD(max_error=2).encode(chunk)


def test_bad_configs():
    with pytest.raises(CodecError, match="unknown model 'nope'"):
        numcodecs.get_codec({"id": "deepstd", "ratio": 64, "model": "nope"})
    with pytest.raises(InvalidInputError, match="at most one"):
        DeepSTD(ratio=64, max_error=3)


def test_backwards_compatibility_fixtures():
    """Chunks encoded by earlier versions must keep decoding to what they decoded to then."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    assert manifest["fixtures"]
    for item in manifest["fixtures"]:
        codec = numcodecs.get_codec(item["config"])
        decoded = codec.decode((FIXTURES / item["file"]).read_bytes())
        expected = np.load(FIXTURES / item["expected"], allow_pickle=False)
        if item["config"].get("model") is None:
            np.testing.assert_array_equal(decoded, expected)
        else:  # the refinement is floating point: other hardware may move a voxel by one unit
            assert decoded.shape == expected.shape and decoded.dtype == expected.dtype
            assert np.abs(decoded.astype(int) - expected).max() <= 1


def test_zarr_v2_array_reads_back_in_a_fresh_process(tmp_path):
    store = tmp_path / "ct.zarr"
    data = np.concatenate([ct_chunk(seed=s) for s in range(3)])
    z = zarr.open(
        str(store),
        mode="w",
        shape=data.shape,
        chunks=(16, 48, 40),
        dtype="int16",
        compressor=DeepSTD(max_error=4),
        zarr_format=2,
    )
    z[:] = data
    code = (
        "import zarr, numpy as np, sys; z = zarr.open(sys.argv[1], mode='r'); "
        "a = z[:]; print(a.shape, a.dtype, 'dstdformat' in sys.modules); np.save(sys.argv[2], a)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(store), str(tmp_path / "a.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "(48, 48, 40) int16 True" in result.stdout
    decoded = np.load(tmp_path / "a.npy")
    assert np.abs(decoded.astype(int) - data).max() <= 4


def regenerate_fixtures() -> None:  # pragma: no cover - run by hand when adding a fixture
    """python -c 'import tests.interop.test_numcodecs_deepstd as t; t.regenerate_fixtures()'"""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    cases = {
        "max_error_int16": (DeepSTD(max_error=5), ct_chunk()),
        "ratio8_no_model_2d": (DeepSTD(ratio=8, model=None), ct_chunk(shape=(1, 96, 96))[0]),
        "quality40_uint16": (
            DeepSTD(quality=40, model=None, intercept=-1024.0),
            (ct_chunk().astype(np.int32) + 1024).astype(np.uint16),
        ),
        "ratio16_refined": (DeepSTD(ratio=16), ct_chunk(shape=(24, 64, 64), seed=3)),
    }
    items = []
    for name, (codec, chunk) in cases.items():
        encoded = codec.encode(chunk)
        (FIXTURES / f"{name}.bin").write_bytes(encoded)
        np.save(FIXTURES / f"{name}.expected.npy", codec.decode(encoded), allow_pickle=False)
        items.append(
            {
                "file": f"{name}.bin",
                "expected": f"{name}.expected.npy",
                "config": codec.get_config(),
                "written_by": f"dstdformat {dstdformat.__version__}",
            }
        )
    (FIXTURES / "manifest.json").write_text(json.dumps({"fixtures": items}, indent=1) + "\n")


def test_padded_edge_chunks_spend_the_rate_on_real_voxels():
    """zarr pads edge chunks with the fill value; that padding is stored as one number."""
    real = ct_chunk(shape=(13, 48, 40))
    padded = np.zeros((32, 48, 48), dtype=np.int16)
    padded[:13, :, :40] = real
    codec = DeepSTD(ratio=16, model=None)
    encoded = codec.encode(padded)
    assert abs(real.nbytes / len(encoded) / 16 - 1) < 0.25  # the ratio is that of the real part
    decoded = codec.decode(encoded)
    assert decoded.shape == padded.shape
    assert (decoded[13:] == 0).all() and (decoded[:, :, 40:] == 0).all()
    assert np.abs(decoded[:13, :, :40].astype(int) - real).mean() < 40


def test_a_model_given_by_path_keeps_working(tmp_path):
    from helpers import make_model

    weights = make_model(tmp_path, "path-model")
    codec = DeepSTD(ratio=6, model=str(weights))
    assert codec.get_config()["model"] == str(weights)
    chunk = ct_chunk(shape=(16, 48, 40))
    assert codec.decode(codec.encode(chunk)).shape == chunk.shape


@pytest.mark.parametrize("base", ["av1", "sperr"])
def test_the_base_layer_can_be_chosen_and_is_recorded(base):
    codec = DeepSTD(ratio=8, model=None, base=base)
    check_config(codec)
    assert codec.get_config()["base"] == base and "base" not in DeepSTD(ratio=8).get_config()
    chunk = ct_chunk()
    encoded = check_encode_decode(codec, chunk, mean_abs=40)
    from dstdformat.container.reader import DstdReader
    from dstdformat.storage.sources import MemorySource

    state = DstdReader(MemorySource(bytes(encoded))).header.codec_state
    assert state.get("base", {"codec": "sperr"})["codec"] == base


def test_numcodecs_own_checks_that_apply_to_a_ct_codec():
    """numcodecs' shared helpers (numcodecs.tests.common): object arrays are a TypeError both
    ways, the config round-trips through the registry; the repr rebuilds the same codec."""
    from numcodecs.tests.common import check_config, check_err_encode_object_buffer

    codec = DeepSTD(ratio=16, model=None)
    check_err_encode_object_buffer(codec)
    check_config(codec)
    rebuilt = eval(repr(codec), {"DeepSTD": DeepSTD})
    assert rebuilt == codec and rebuilt.model is None and repr(rebuilt) == repr(codec)
    encoded = codec.encode(ct_chunk())
    with pytest.raises(TypeError):
        codec.decode(encoded, out=np.empty(ct_chunk().shape, dtype=object))
