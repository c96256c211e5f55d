"""BD-rate: the maths on curves whose answer is known, the per-volume summary and the reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dstdformat.bench.bdrate import BDRateUnavailable, bd_rate, bd_rate_summary
from dstdformat.bench.report import markdown_table, write_reports

RAW = 1_000_000


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_half_the_rate_is_minus_fifty_percent(method):
    psnr = np.array([30.0, 33.0, 36.0, 39.0, 42.0])
    rates = np.exp(psnr / 4)  # any smooth curve; the test is the same curve at half the rate
    assert bd_rate(rates, psnr, rates / 2, psnr, method) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(rates / 2, psnr, rates, psnr, method) == pytest.approx(100.0, abs=1e-6)
    assert bd_rate(rates, psnr, rates, psnr, method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_shifted_and_differently_sampled_curves(method):
    # log(rate) = 0.25 * psnr on the reference; the codec needs 1.3x the rate at 0.5 dB less,
    # i.e. rate = 1.3 * exp(-0.125) * reference(psnr): BD-rate = 1.3 * exp(-0.125) - 1.
    ref_q = np.array([30.0, 33.0, 36.0, 39.0, 42.0])
    q = np.array([31.2, 34.0, 35.5, 38.0, 44.0])  # other sampling points, overlap 31.2..42
    expected = 100 * (1.3 * math.exp(-0.125) - 1)
    got = bd_rate(np.exp(ref_q / 4), ref_q, 1.3 * np.exp((q - 0.5) / 4), q, method)
    assert got == pytest.approx(expected, abs=1e-6)


def test_mae_axis_and_curved_rates():
    # Lower-is-better MAE works the same (only the interval matters); on a curve that no cubic
    # represents exactly, PCHIP and the polynomial fit still land close to the truth.
    mae = np.array([4.0, 6.0, 9.0, 13.0, 19.0, 27.0])
    rates = 1e6 / mae**2
    other = np.array([5.0, 7.5, 11.0, 16.0, 24.0])
    for method in ("pchip", "cubic"):
        got = bd_rate(rates, mae, 0.8e6 / other**2, other, method)
        assert got == pytest.approx(-20.0, abs=0.5)


def test_unavailable_reasons():
    q = [30.0, 33.0, 36.0, 39.0]
    with pytest.raises(BDRateUnavailable, match="codec has 3 points \\(need 4\\)"):
        bd_rate([1, 2, 4, 8], q, [1, 2, 4], q[:3])
    with pytest.raises(BDRateUnavailable, match="SPERR has 2 points"):
        bd_rate([1, 2], q[:2], [1, 2, 4, 8], q, names=("SPERR", "AV1"))
    with pytest.raises(BDRateUnavailable, match="no quality overlap"):
        bd_rate([1, 2, 4, 8], q, [1, 2, 4, 8], [50.0, 51.0, 52.0, 53.0])
    with pytest.raises(BDRateUnavailable, match="need 4"):  # repeats and infinities do not count
        bd_rate([1, 2, 4, 8], q, [1, 1, 2, 4, 9], [30.0, 30.0, 33.0, 36.0, math.inf])
    with pytest.raises(ValueError, match="method"):
        bd_rate([1, 2, 4, 8], q, [1, 2, 4, 8], q, method="linear")


def _record(volume, codec, ratio, mae, psnr, target=None):
    return {
        "volume": volume,
        "codec": codec,
        "target_ratio": target or ratio,
        "achieved_ratio": ratio,
        "compressed_bytes": RAW / ratio,
        "mae": mae,
        "psnr": psnr,
        "ssim": 0.9,
        "encode_mbps_nt": 10.0,
        "decode_mbps_nt": 20.0,
        "reached": True,
        "status": "ok",
    }


def _curve(codec, ratios, bytes_factor, volume="chest.nii.gz"):
    """Quality linear in log(bytes): a codec needing ``bytes_factor`` x SPERR's bytes."""
    out = []
    for r in ratios:
        log_bytes_as_sperr = math.log2(RAW / r / bytes_factor)  # SPERR's size at this quality
        out.append(_record(volume, codec, r, 5 + 3 * (20 - log_bytes_as_sperr), 20 + 2 * log_bytes_as_sperr))
    return out


def _records():
    sperr = _curve("SPERR", [61.0, 128, 256, 512], 1.0)  # 61x: the 64x target, within the slack
    sperr += [
        _record("chest.nii.gz", "SPERR", 32.0, 1.0, 90.0),  # outside 64..512: ignored
        _record("chest.nii.gz", "SPERR", 2000.0, 500.0, 1.0),
    ]
    records = sperr + _curve("AV1", [64, 128, 256, 512], 1.25) + _curve("Half", [64, 128, 256, 512], 0.5)
    records += _curve("Sparse", [64, 128, 256], 0.5)
    records.append(
        {
            "volume": "chest.nii.gz",
            "codec": "Broken",
            "target_ratio": 64.0,
            "reached": False,
            "status": "error: RuntimeError: boom",
        }
    )
    records += _curve("SPERR", [64, 128, 256, 512], 1.0, "abdomen.nii.gz")
    records += _curve("Half", [64, 128, 256, 512], 0.25, "abdomen.nii.gz")  # no AV1 here
    return records


def _rows(summary, **match):
    return [r for r in summary["rows"] if all(r[k] == v for k, v in match.items())]


def test_summary_per_volume_reference_and_metric():
    summary = bd_rate_summary(_records())
    assert summary["references"] == ["SPERR", "AV1"] and summary["ratio_range"] == [64.0, 512.0]
    for metric in ("mae", "psnr"):
        chest = dict(volume="chest.nii.gz", metric=metric)
        assert _rows(summary, codec="Half", reference="SPERR", **chest)[0][
            "bd_rate_percent"
        ] == pytest.approx(-50.0, abs=1e-6)
        assert _rows(summary, codec="AV1", reference="SPERR", **chest)[0]["bd_rate_percent"] == pytest.approx(
            25.0, abs=1e-6
        )
        assert _rows(summary, codec="Half", reference="AV1", **chest)[0]["bd_rate_percent"] == pytest.approx(
            -60.0, abs=1e-6
        )
        assert _rows(summary, codec="SPERR", reference="AV1", **chest)[0]["bd_rate_percent"] == pytest.approx(
            -20.0, abs=1e-6
        )
        sparse = _rows(summary, codec="Sparse", reference="SPERR", **chest)[0]
        assert sparse["bd_rate_percent"] is None and "Sparse has 3 points (need 4)" in sparse["reason"]
        broken = _rows(summary, codec="Broken", reference="AV1", **chest)[0]
        assert broken["bd_rate_percent"] is None and "Broken has 0 points" in broken["reason"]
        abdomen = _rows(summary, volume="abdomen.nii.gz", metric=metric)
        assert [(r["codec"], r["reference"]) for r in abdomen] == [("Half", "SPERR")]
        assert abdomen[0]["bd_rate_percent"] == pytest.approx(-75.0, abs=1e-6)
    assert not _rows(summary, codec="SPERR", reference="SPERR")


def _results():
    return {
        "run": {
            "date": "2026-01-01T00:00:00+00:00",
            "dstdformat": "0",
            "machine": "x86_64",
            "python": "3.11",
            "threads_all": 2,
            "ratio_definition": "raw / compressed",
        },
        "volumes": [
            {"volume": "chest.nii.gz", "shape": [4, 8, 8], "spacing": [1, 1, 1]},
            {"volume": "abdomen.nii.gz", "shape": [4, 8, 8], "spacing": [1, 1, 1]},
        ],
        "records": _records(),
    }


def test_reports_carry_the_bd_rate_tables(tmp_path):
    pytest.importorskip("matplotlib")
    results = _results()  # an older run without "bd_rate": the reports compute it
    table = markdown_table(results)
    assert "BD-rate" in table
    assert "| codec | vs SPERR (MAE HU) | vs SPERR (PSNR dB) | vs AV1 (MAE HU) | vs AV1 (PSNR dB) |" in table
    assert "| Half | -50.0% | -50.0% | -60.0% | -60.0% |" in table
    assert "| SPERR | ref | ref | -20.0% | -20.0% |" in table
    assert "| AV1 | +25.0% | +25.0% | ref | ref |" in table
    assert "| Sparse | n/a [1] | n/a [1] | n/a [1] | n/a [1] |" in table
    assert "[1] Sparse has 3 points (need 4)" in table and "[2] Broken has 0 points" in table
    assert "| Half | -75.0% | -75.0% |" in table  # the abdomen: SPERR only
    write_reports(results, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    rows = saved["bd_rate"]["rows"]
    assert saved["bd_rate"]["method"] == "pchip" and len(rows) == len(bd_rate_summary(_records())["rows"])
    assert "| Half | -50.0% |" in (tmp_path / "results.md").read_text()
