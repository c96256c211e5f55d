"""The archive tiers of `dstd bench`: lossless and error-bounded codecs measured in one run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import BUNDLED_CT

from dstdformat import InvalidInputError
from dstdformat.bench.archival import JPEGLS, LOSSLESS_CODECS, make_tier_codec
from dstdformat.bench.tiers import TierConfig, measure_tier_point, run_tier, tier_markdown

pytest.importorskip("imagecodecs")


@pytest.fixture(scope="module")
def ct_crop():
    from dstdformat.bench.runner import load_hu_volume

    volume, _ = load_hu_volume(BUNDLED_CT, (6, 40, 48))
    volume = volume.copy()
    volume[0, :2, :2] = -32768  # the int16 extremes and a metal spike
    volume[1, 5, 5] = 32767
    return volume


@pytest.mark.parametrize("name", sorted(set(LOSSLESS_CODECS) - {"jpegxl-e5", "jpegxl-e7"}))
def test_every_lossless_codec_returns_every_voxel(name, ct_crop):
    row = measure_tier_point(make_tier_codec("lossless", name), ct_crop, None, 2)
    assert row["max_error"] == 0 and row["held"], name
    assert row["ratio"] > 1.0


@pytest.mark.parametrize("name", ["jpegls", "sperr"])
@pytest.mark.parametrize("bound", [1, 4])
def test_bounded_codecs_keep_their_bound_and_use_it(name, bound, ct_crop):
    volume = np.clip(ct_crop, -3000, 3000)  # SPERR's bound is relative to its float range
    row = measure_tier_point(make_tier_codec("bounded", name), volume, bound, 2)
    assert row["held"] and 0 < row["max_error"] <= bound
    lossless = measure_tier_point(make_tier_codec("lossless", "jpegls"), volume, None, 2)
    assert row["ratio"] > lossless["ratio"]


def test_a_codec_that_breaks_its_bound_is_reported(ct_crop):
    class Sloppy(JPEGLS):
        name = "sloppy"

        def decode(self, payload, shape, threads):
            decoded = super().decode(payload, shape, threads)
            decoded[0, 0, 0] += 7
            return decoded

    row = measure_tier_point(Sloppy(), ct_crop, 2, 1)
    assert row["max_error"] > 2 and not row["held"]


def test_run_reports_each_point_against_the_best_installable(tmp_path):
    results = run_tier(
        TierConfig(
            volumes=[BUNDLED_CT], tier="bounded", codecs=["jpegls", "sperr"], errors=[2], crop=(4, 32, 32)
        )
    )
    assert [(r["id"], r["bound"]) for r in results["records"]] == [("jpegls", 2), ("sperr", 2)]
    table = tier_markdown(results)
    assert "| 1.000 |" in table  # the best of the two is 1.000 of itself


def test_cli_tiers(tmp_path):
    out = tmp_path / "bench"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dstdformat",
            "bench",
            str(BUNDLED_CT),
            "--quiet",
            "--tier",
            "lossless",
            "--codecs",
            "jpegls",
            "blosc",
            "--crop",
            "4",
            "32",
            "32",
            "--out",
            str(out),
        ],
        check=True,
    )
    records = json.loads((out / "tier-lossless.json").read_text())["records"]
    assert {r["id"] for r in records} == {"jpegls", "blosc"} and all(r["held"] for r in records)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "dstdformat",
            "bench",
            str(BUNDLED_CT),
            "--tier",
            "bounded",
            "--codecs",
            "ffv1",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "unknown bounded benchmark codec 'ffv1'" in bad.stderr


def test_unknown_tier_codec_names_the_choices():
    with pytest.raises(InvalidInputError, match="jpegxl-e3"):
        make_tier_codec("lossless", "webp")
