"""Video codec adapters (PyAV: SVT-AV1, x265, libvpx-vp9) over the slice stack."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dstdformat import InvalidInputError
from dstdformat.bench.codecs import make_bench_codec, payload_size
from dstdformat.bench.runner import DEFAULT_CODECS
from dstdformat.bench.video import VIDEO_CODECS, WINDOW_HIGH, WINDOW_LOW

pytest.importorskip("av")


def _volume(shape: tuple[int, int, int] = (6, 40, 48)) -> np.ndarray:
    """A body of soft tissue in air, a bone bar beyond the 3071 HU window and a patch below it."""
    rng = np.random.default_rng(7)
    z, y, x = np.indices(shape)
    body = (
        (y - shape[1] / 2) ** 2 / (0.4 * shape[1]) ** 2 + (x - shape[2] / 2) ** 2 / (0.4 * shape[2]) ** 2
    ) < 1
    volume = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, shape) + 5 * z
    volume[:, 8:12, 10:20] = 3600  # clipped to the window by every adapter
    volume[:, -4:-2, 2:6] = -2048
    return volume.astype(np.int16)


@pytest.mark.parametrize("name", sorted(VIDEO_CODECS))
def test_video_adapter_round_trips_with_sane_error(name):
    volume = _volume()
    codec = make_bench_codec(name)
    middle = (int(codec.knob.low) + int(codec.knob.high)) // 2
    payload = codec.encode(volume, middle, 1)
    decoded = codec.decode(payload, volume.shape, 1)
    assert decoded.shape == volume.shape and decoded.dtype == np.int16
    assert payload_size(payload) < volume.nbytes / 2
    clipped = np.clip(volume, WINDOW_LOW, WINDOW_HIGH)
    assert np.abs(decoded.astype(float) - clipped).mean() < 30
    assert decoded.min() >= WINDOW_LOW and decoded.max() <= WINDOW_HIGH
    assert np.median(decoded[:, 8:12, 10:20]) > 2900  # the clipped bar decodes near the top
    # The knob's finest end, threaded: more bytes, less error. (Between nearby CRFs a volume this
    # small and noisy need not grow: SVT-AV1 wrote 208 bytes at CRF 20 and 220 at CRF 32.)
    finer = codec.encode(volume, int(codec.knob.low), 2)
    assert payload_size(finer) > payload_size(payload)
    finer_error = np.abs(codec.decode(finer, volume.shape, 2).astype(float) - clipped).mean()
    assert finer_error < np.abs(decoded.astype(float) - clipped).mean()


@pytest.mark.parametrize("name", sorted(VIDEO_CODECS))
def test_video_adapter_pads_odd_sizes(name):
    volume = _volume((3, 31, 45))
    codec = make_bench_codec(name)
    decoded = codec.decode(codec.encode(volume, codec.knob.guess(64.0), 1), volume.shape, 1)
    assert decoded.shape == volume.shape
    assert np.abs(decoded.astype(float) - np.clip(volume, WINDOW_LOW, WINDOW_HIGH)).mean() < 30


def test_video_knobs_are_integer_crfs_and_defaults_include_them():
    for name in VIDEO_CODECS:
        knob = make_bench_codec(name).knob
        assert knob.integer and knob.name == "crf" and knob.raises_ratio
        assert all(knob.low <= knob.guess(r) <= knob.high for r in (2.0, 64.0, 512.0, 1e5))
        assert name in DEFAULT_CODECS
    assert make_bench_codec("av1").name == "AV1"
    with pytest.raises(InvalidInputError, match="crf must be in 1..63"):
        make_bench_codec("av1").encode(_volume(), 0, 1)


def test_missing_pyav_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    codec = make_bench_codec("hevc-12bit")  # naming it works; using it says what to install
    with pytest.raises(InvalidInputError, match="pip install av"):
        codec.encode(_volume(), 24, 1)


def test_bench_run_with_video_codecs(tmp_path):
    from dstdformat.bench.runner import BenchConfig, run_bench

    path = tmp_path / "slab.npy"
    np.save(path, _volume((8, 64, 64)))
    results = run_bench(
        BenchConfig(volumes=[path], ratios=[8.0, 12.0], codecs=["av1", "hevc-10bit"], threads=2)
    )
    records = results["records"]
    assert [r["codec"] for r in records] == ["AV1", "AV1", "HEVC 10-bit", "HEVC 10-bit"]
    for r in records:
        assert r["status"] == "ok" or r["status"].startswith("unreachable: closest achieved ratio")
        assert isinstance(r["knob_value"], int) and r["knob"] == "crf" and r["mae"] < 40
        assert r["status"] == "ok" or "crf is an integer" in r["status"] or r["knob_value"] in (0, 1)
    assert {row["reference"] for row in results["bd_rate"]["rows"]} == {"AV1"}
