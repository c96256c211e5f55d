"""The evaluation harness: target-ratio search, adapters, and a smoke run of `dstd bench`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import BUNDLED_CT

from dstdformat import InvalidInputError
from dstdformat.bench.codecs import BASELINES, Knob, make_bench_codec, payload_size
from dstdformat.bench.search import search_ratio

pytest.importorskip("imagecodecs")


@pytest.mark.parametrize("target", [2.0, 37.0, 300.0])
def test_search_lands_within_tolerance(target):
    knob = Knob("x", 1e-3, 1e4, raises_ratio=True, guess=lambda r: 1.0)
    found = search_ratio(lambda v: 1 + 3 * v**0.7, knob, target)
    assert found.reached and abs(found.ratio / target - 1) <= 0.05
    assert found.evaluations <= 16


def test_search_reports_unreachable_targets():
    knob = Knob("x", 1e-3, 10.0, raises_ratio=False)
    found = search_ratio(lambda v: 8.0 / v, knob, 1e6)  # at most 8000
    assert not found.reached and found.ratio == pytest.approx(8000.0)
    step = search_ratio(lambda v: 10.0 if v < 1 else 100.0, Knob("x", 1e-3, 1e3, True), 50.0)
    assert not step.reached and step.ratio in (10.0, 100.0)
    fixed = search_ratio(lambda v: 2.5, None, 256.0)
    assert not fixed.reached and fixed.evaluations == 1


@pytest.fixture(scope="module")
def small_ct():
    from dstdformat.bench.runner import load_hu_volume

    volume, spacing = load_hu_volume(BUNDLED_CT, (16, 48, 48))
    return volume, spacing


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_round_trips_shape_and_rate(small_ct, name):
    volume, _ = small_ct
    codec = make_bench_codec(name)
    value = None if codec.knob is None else codec.knob.guess(8.0) if codec.knob.guess else 1.0
    payload = codec.encode(volume, value, 2)
    decoded = codec.decode(payload, volume.shape, 1)
    assert decoded.shape == volume.shape and decoded.dtype == np.int16
    assert payload_size(payload) < volume.nbytes
    if codec.knob is None:
        np.testing.assert_array_equal(decoded, volume)
    else:
        assert np.abs(decoded.astype(float) - volume).mean() < 200


def test_unknown_bench_codec():
    with pytest.raises(InvalidInputError, match="unknown benchmark codec"):
        make_bench_codec("gzip")


def test_bench_smoke_run_writes_everything(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dstdformat",
            "bench",
            str(BUNDLED_CT),
            "--crop",
            "24",
            "64",
            "64",
            "--ratios",
            "16",
            "64",
            "--codecs",
            "sperr",
            "dstd-lossless",
            "--out",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    assert names == {
        "results.json",
        "results.md",
        "mae_vs_ratio.png",
        "ssim_vs_ratio.png",
        "speed_vs_ratio.png",
    }
    results = json.loads((out / "results.json").read_text())
    records = results["records"]
    assert len(records) == 4
    sperr = [r for r in records if r["codec"] == "SPERR"]
    assert all(r["reached"] and abs(r["achieved_ratio"] / r["target_ratio"] - 1) <= 0.05 for r in sperr)
    assert sperr[0]["mae"] < sperr[1]["mae"]  # more compression, more error
    lossless = [r for r in records if r["codec"] == "dstd lossless"]
    assert all(not r["reached"] and r["status"].startswith("unreachable") for r in lossless)
    assert all(r["mae"] == 0 and r["psnr"] == "inf" for r in lossless)  # standard JSON
    for r in records:
        for key in (
            "encode_mbps_1t",
            "encode_mbps_nt",
            "decode_mbps_1t",
            "decode_mbps_nt",
            "peak_memory_mb",
            "ssim",
            "dice_body",
            "hd95_bone",
        ):
            assert key in r
    table = (out / "results.md").read_text()
    assert "| SPERR | 16 |" in table and "unreachable" in table
    png = (out / "mae_vs_ratio.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_bench_bad_arguments(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dstdformat",
            "bench",
            str(BUNDLED_CT),
            "--codecs",
            "nope",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "unknown benchmark codec" in result.stderr
