"""The deepstd codec: rate control, exact outliers, bounds, region reads, model checks, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import ct_volume, make_model

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec as Codec
from dstdformat.errors import CodecError, InvalidInputError
from dstdformat.zoo.registry import MODEL_PATH_ENV, file_sha256


def file_ratio(path, array) -> float:
    return array.nbytes / path.stat().st_size


def test_ratio_mode_lands_within_ten_percent(tmp_path):
    vol = ct_volume()
    for ratio in (32, 64):
        path = tmp_path / f"r{ratio}.dstd"
        dstdformat.save(vol, path, codec=Codec(ratio=ratio, model=None))
        assert abs(file_ratio(path, vol) / ratio - 1) < 0.10
        volume = dstdformat.open(path)
        assert volume.header["codec"]["state"]["target_ratio"] == ratio


def test_outliers_come_back_exactly_and_do_not_wreck_neighbours(tmp_path):
    dirty = ct_volume()  # -2048 padding outside the field of view
    dirty[10, 30:33, 40:43] = 6000  # metal, above the window
    clean = np.where(dirty == -2048, -1000, dirty).astype(np.int16)
    clean[10, 30:33, 40:43] = 700
    outside = (dirty < -1024 - 128) | (dirty > 3071 + 128)  # far outside the window: stored exactly
    mae = {}
    for name, vol in (("clean", clean), ("dirty", dirty)):
        path = tmp_path / f"{name}.dstd"
        dstdformat.save(vol, path, codec=Codec(ratio=16, model=None))
        assert abs(file_ratio(path, vol) / 16 - 1) < 0.10
        out = dstdformat.open(path).read()
        mae[name] = np.abs(out[~outside].astype(float) - vol[~outside]).mean()
        if name == "dirty":
            np.testing.assert_array_equal(out[outside], vol[outside])
            state = dstdformat.open(path).header["codec"]["state"]
            assert state["outlier_voxels"] == int(outside.sum())
    # The exact voxels cost some bytes, but the rest keeps nearly the quality of a clean scan.
    assert mae["dirty"] <= 1.15 * mae["clean"], mae


@pytest.mark.parametrize("dtype,bound", [("int16", 10), ("int16", 37.6), ("float32", 5.5), ("uint16", 20)])
def test_max_error_is_a_guarantee(tmp_path, dtype, bound):
    vol = ct_volume(seed=3).astype(np.float64)
    if dtype == "uint16":
        vol = vol + 1024  # stored = HU + 1024
    vol = vol.astype(dtype)
    if dtype == "float32":
        vol += np.random.default_rng(0).uniform(-0.5, 0.5, vol.shape).astype(np.float32)
    meta = {"intercept": -1024.0} if dtype == "uint16" else {}
    path = tmp_path / "m.dstd"
    dstdformat.save(vol, path, codec=Codec(max_error=bound), tile_shape=(16, 40, 40), **meta)
    out = dstdformat.open(path).read()
    assert out.dtype == vol.dtype
    assert np.abs(out.astype(np.float64) - vol.astype(np.float64)).max() <= bound
    assert dstdformat.open(path).header["codec"]["model"] is None


def test_quality_mode_reaches_the_asked_psnr(tmp_path):
    vol = ct_volume(seed=5)
    path = tmp_path / "q.dstd"
    dstdformat.save(vol, path, codec=Codec(quality=50, model=None))
    out = dstdformat.open(path).read().astype(np.float64)
    inside = (vol >= -1024) & (vol <= 3071)
    mse = np.mean((out[inside] - vol[inside]) ** 2)
    assert 10 * math.log10(4095**2 / mse) >= 50 - 0.5
    lower = tmp_path / "q40.dstd"
    dstdformat.save(vol, lower, codec=Codec(quality=40, model=None))
    assert lower.stat().st_size < path.stat().st_size


@pytest.mark.parametrize("layout", ["tile", "volume"])
def test_region_reads_equal_the_full_read_with_refinement(tmp_path, test_model, monkeypatch, layout):
    from dstdformat.codecs.deepstd import codec as codec_module
    from dstdformat.codecs.deepstd.decoding import Blocks

    # Small refinement blocks (in the "volume" layout of older files they straddle the wavelet
    # tiles, so halos cross both kinds of seam), with every kind of gain (0 skips the network).
    monkeypatch.setattr(codec_module, "REFINE_BLOCK", (6, 20, 28))
    monkeypatch.setattr(codec_module, "REFINE_LAYOUT", layout)

    def gains(self, array, grid, *rest):
        count = Blocks(array.shape, grid, (6, 20, 28), codec_module.HALO, layout).count
        return [(5 * n) % 17 for n in range(count)]

    monkeypatch.setattr(codec_module.DeepSTDVolumeCodec, "_choose_gains", gains)
    vol = ct_volume(shape=(20, 50, 60), seed=7)
    path = tmp_path / "reg.dstd"
    dstdformat.save(vol, path, codec=Codec(ratio=8, model="test-refiner"), tile_shape=(8, 16, 24))
    volume = dstdformat.open(path)
    full = volume.read()
    unrefined = dstdformat.open(path)
    assert volume.header["codec"]["model"] == {"id": "test-refiner", "sha256": file_sha256(test_model)}
    assert volume.header["codec"]["state"]["refine_block"] == [6, 20, 28]
    assert volume.header["codec"]["state"]["refine_gain"][:4] == [0, 5, 10, 15]
    assert volume.header["codec"]["state"]["refine_layout"] == layout
    for key in [np.s_[7], np.s_[3:11, 10:40, 5:55], np.s_[:, 17], np.s_[..., 59], np.s_[19, 49, 59]]:
        np.testing.assert_array_equal(volume[key], full[key])
    # The refinement does something (so the equality above is not trivial).
    base = Codec(ratio=8, model=None)
    ctx = unrefined._ctx
    everything = tuple(slice(0, s) for s in vol.shape)
    no_refine = base.decode_region(ctx, everything, unrefined._reader.read_sections)
    assert np.abs(no_refine.astype(int) - full).max() > 0
    # Tile layout: a region inside one tile fetches that tile's sections only.
    fresh = dstdformat.open(path)
    fresh.io_stats.reset()
    fresh[9:15, 20:30, 30:40]  # inside tile (1, 1, 1) of the 8x16x24 grid
    tile_bytes = fresh.reader.sections[(2, 1 * 12 + 1 * 3 + 1)].length
    if layout == "tile":
        assert fresh.io_stats.requests == 1 and fresh.io_stats.bytes_fetched <= tile_bytes + 4096
    else:
        assert fresh.io_stats.bytes_fetched > tile_bytes


def test_volumes_smaller_than_one_tile_and_degenerate_shapes(tmp_path):
    for shape in [(1, 1, 1), (1, 5, 7), (3, 1, 9), (2, 64, 64)]:
        vol = np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16)
        path = tmp_path / f"s{'x'.join(map(str, shape))}.dstd"
        dstdformat.save(vol, path, codec=Codec(max_error=4))
        out = dstdformat.open(path).read()
        assert out.shape == shape
        assert np.abs(out.astype(int) - vol).max() <= 4


def test_config_round_trip_and_registry():
    codec = dstdformat.codecs.registry.get_codec("deepstd", ratio=128, model=None)
    assert isinstance(codec, Codec)
    again = Codec.from_config(json.loads(json.dumps(codec.get_config())))
    assert again == codec and again.get_config() == {
        "ratio": 128.0,
        "window": [-1024.0, 3071.0],
        "model": None,
        "base": "av1",
    }
    assert Codec(model=None).get_config()["ratio"] == 256.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"ratio": 64, "quality": 40}, "at most one"),
        ({"ratio": 0.5}, "ratio must be in"),
        ({"quality": float("nan")}, "finite"),
        ({"max_error": -1}, "max_error must be in"),
        ({"window": (100, -100)}, "low < high"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        Codec(**kwargs)


def test_bad_input(tmp_path):
    vol = ct_volume().astype(np.float32)
    vol[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        dstdformat.save(vol, tmp_path / "nan.dstd", codec=Codec(model=None))
    with pytest.raises(InvalidInputError, match="float64"):
        dstdformat.save(np.zeros((4, 4, 4)), tmp_path / "f64.dstd", codec=Codec(model=None))
    with pytest.raises(InvalidInputError, match="3D"):
        dstdformat.save(np.zeros((4, 4), np.int16), tmp_path / "2d.dstd", codec=Codec(model=None))
    with pytest.raises(InvalidInputError, match="out of reach"):
        dstdformat.save(ct_volume(), tmp_path / "far.dstd", codec=Codec(ratio=50000, model=None))
    assert not list(tmp_path.glob("*.dstd"))


def test_unknown_and_mismatched_models(tmp_path, test_model, monkeypatch):
    with pytest.raises(CodecError, match="unknown model 'no-such-model'"):
        dstdformat.save(ct_volume(), tmp_path / "x.dstd", codec=Codec(model="no-such-model"))
    path = tmp_path / "m.dstd"
    dstdformat.save(ct_volume(), path, codec=Codec(ratio=32, model="test-refiner"))
    make_model(test_model.parent, seed=1)  # same id, other weights
    with pytest.raises(CodecError, match="weights differ"):
        dstdformat.open(path).read()
    monkeypatch.delenv(MODEL_PATH_ENV)
    with pytest.raises(CodecError, match="unknown model 'test-refiner'"):
        dstdformat.open(path)[0]


def test_thread_counts_do_not_change_the_file_or_the_base_layer(tmp_path, test_model):
    vol = ct_volume(seed=11)
    previous = torch.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            path = tmp_path / f"t{threads}.dstd"
            dstdformat.save(vol, path, codec=Codec(ratio=16, model="test-refiner"))
            volume = dstdformat.open(path)
            refined = volume.read()
            base = Codec(ratio=16, model=None).decode_region(
                volume._ctx, tuple(slice(0, s) for s in vol.shape), volume._reader.read_sections
            )
            outputs.append((path.read_bytes(), base, refined))
    finally:
        torch.set_num_threads(previous)
    (bytes1, base1, refined1), (bytes2, base2, refined2) = outputs
    assert bytes1 == bytes2  # encoding is deterministic
    np.testing.assert_array_equal(base1, base2)  # the entropy-coded layer decodes bit-exactly
    # The refinement is floating point: a different reduction order may move a voxel by one unit.
    assert np.abs(refined1.astype(int) - refined2).max() <= 1


def test_tiny_volumes_with_refinement(tmp_path, test_model):
    for shape in [(1, 1, 1), (1, 5, 7), (3, 2, 9)]:
        vol = np.random.default_rng(1).integers(-1000, 1000, shape).astype(np.int16)
        path = tmp_path / "tiny.dstd"
        dstdformat.save(vol, path, codec=Codec(quality=40, model="test-refiner"))
        volume = dstdformat.open(path)
        full = volume.read()
        assert full.shape == shape and full.dtype == np.int16
        np.testing.assert_array_equal(volume[shape[0] - 1], full[-1])


def test_chosen_gains_never_make_a_block_worse(tmp_path, test_model):
    """The encoder scales each block's correction by its least-squares gain: a network that
    does not fit the scan (here: random weights) is turned down, never applied blindly."""
    vol = ct_volume(shape=(24, 64, 64), seed=13)
    path = tmp_path / "g.dstd"
    dstdformat.save(vol, path, codec=Codec(ratio=10, model="test-refiner"))
    volume = dstdformat.open(path)
    refined = volume.read().astype(np.float64)
    everything = tuple(slice(0, s) for s in vol.shape)
    base = (
        Codec(ratio=10, model=None)
        .decode_region(volume.decode_context, everything, volume.reader.read_sections)
        .astype(np.float64)
    )
    inside = (vol >= -1024) & (vol <= 3071)
    mse = lambda y: np.mean((y[inside] - vol[inside]) ** 2)  # noqa: E731
    assert mse(refined) <= mse(base) * 1.001
    assert all(0 <= g <= 16 for g in volume.header["codec"]["state"]["refine_gain"])


def test_damaged_sections_are_refused_before_the_libraries_see_them():
    from dstdformat.codecs.deepstd import outliers
    from dstdformat.codecs.deepstd.base_layers import sperr
    from dstdformat.errors import CorruptSectionError

    block = np.random.default_rng(0).normal(0, 100, (8, 9, 10))
    payload = sperr.encode_bits_per_voxel(block, 1.0)
    assert sperr.decode(payload, block.shape).shape == block.shape
    for bad, shape in ((payload, (8, 9, 11)), (payload[:-7], block.shape), (payload[:10], block.shape)):
        with pytest.raises(CorruptSectionError, match="SPERR stream|too short"):
            sperr.decode(bad, shape)
    values = np.full((4, 5, 6), -1000, np.int16)
    values[1, 2, 3] = 5000
    exact = outliers.encode(values, values > 3071)
    index, stored = outliers.decode(exact, values.shape, np.int16, "residual")
    assert index.tolist() == [1 * 30 + 2 * 6 + 3] and stored.tolist() == [5000]
    for bad, shape in ((exact[:-3], values.shape), (b"XXXX" + exact[4:], values.shape), (exact, (1, 1, 2))):
        with pytest.raises(CorruptSectionError):
            outliers.decode(bad, shape, np.int16, "residual")


def test_wavelet_only_files_read_without_torch(tmp_path):
    """Torch is imported for refinement and shape coding only, not for the codec itself."""
    import subprocess
    import sys

    path = tmp_path / "w.dstd"
    dstdformat.save(ct_volume(), path, codec=Codec(ratio=16, model=None))
    code = (
        "import sys, dstdformat\n"
        f"v = dstdformat.open({str(path)!r}); v.read(); v[3]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
