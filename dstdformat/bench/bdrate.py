"""Bjontegaard delta rate (BD-rate): how many more (or fewer) bytes a codec needs than a reference
at equal quality, averaged over the quality interval both reach; one number per pair of curves.

How it is computed (VCEG-M33, with the piecewise-cubic interpolation of the modern tools):

* rate is the compressed size in bytes, taken as ``log(bytes)``; each curve is log-rate as a
  function of quality, over all the points whose achieved ratio lies in :data:`RATIO_RANGE`
  widened by :data:`RATIO_SLACK` (10%: an integer CRF steps the ratio by 10-15%, so the
  closest a video codec gets to the 64x target can be 60x), at least :data:`MIN_POINTS` points
  per curve, else no number and a reason;
* quality is the metric itself: PSNR in dB, or MAE in HU (log-rate fitted against MAE directly
  and integrated over the MAE interval; the same as using -MAE as the quality);
* ``method="pchip"`` (default) interpolates each curve with a monotone piecewise-cubic
  (PCHIP) through its points, as the JVET/AOM BD-rate tools do; ``"cubic"`` is the original
  least-squares cubic polynomial (overshoots when curves bend differently);
* both curves are integrated over the overlap of their quality ranges; the mean difference
  ``d`` of log-rate gives ``BD-rate = exp(d) - 1``, in percent. Negative means fewer bytes than
  the reference at equal quality (-50%: half the size).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

RATIO_RANGE = (64.0, 512.0)
RATIO_SLACK = 0.10
MIN_POINTS = 4
REFERENCES = ("SPERR", "AV1")
METRICS = {"mae": "MAE HU", "psnr": "PSNR dB"}
METHODS = ("pchip", "cubic")


class BDRateUnavailable(ValueError):
    """Why a BD-rate cannot be computed for a pair of curves (too few points, no overlap)."""


def _curve(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique qualities and the mean log-rate at each (repeats average out)."""
    points: dict[float, list[float]] = {}
    for r, q in zip(rates, quality):
        if r is not None and q is not None and r > 0 and math.isfinite(r) and math.isfinite(q):
            points.setdefault(float(q), []).append(math.log(r))
    qs = np.array(sorted(points))
    return qs, np.array([np.mean(points[q]) for q in qs])


def _integral(q: np.ndarray, log_rate: np.ndarray, low: float, high: float, method: str) -> float:
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(q, log_rate).integrate(low, high))
    antiderivative = np.polyint(np.polyfit(q, log_rate, 3))
    return float(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))


def bd_rate(
    reference_rates: Sequence[float],
    reference_quality: Sequence[float],
    rates: Sequence[float],
    quality: Sequence[float],
    method: str = "pchip",
    min_points: int = MIN_POINTS,
    names: tuple[str, str] = ("reference", "codec"),
) -> float:
    """BD-rate in percent of the curve (``rates``, ``quality``) against the reference curve.

    Rates are anything proportional to bytes; quality is any metric (higher or lower better:
    only the interval matters); ``names`` label the curves in reasons. Raises
    :class:`BDRateUnavailable` with the reason when a curve has fewer than ``min_points``
    distinct qualities or the quality ranges do not overlap.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ref_q, ref_lr = _curve(reference_rates, reference_quality)
    q, lr = _curve(rates, quality)
    need = max(min_points, 2 if method == "pchip" else 4)
    for label, n in zip(names, (len(ref_q), len(q))):
        if n < need:
            raise BDRateUnavailable(f"{label} has {n} points (need {need})")
    low, high = max(ref_q[0], q[0]), min(ref_q[-1], q[-1])
    if not high > low:
        raise BDRateUnavailable(
            f"no quality overlap ({names[0]} {ref_q[0]:.4g}..{ref_q[-1]:.4g}, "
            f"{names[1]} {q[0]:.4g}..{q[-1]:.4g})"
        )
    mean_difference = (_integral(q, lr, low, high, method) - _integral(ref_q, ref_lr, low, high, method)) / (
        high - low
    )
    return 100.0 * (math.exp(mean_difference) - 1.0)


def _in_range(ratio: Any, ratio_range: tuple[float, float], slack: float) -> bool:
    return (
        isinstance(ratio, int | float)
        and math.isfinite(ratio)
        and ratio_range[0] / (1 + slack) <= ratio <= ratio_range[1] * (1 + slack)
    )


def _points(records: Iterable[dict[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    pairs = {
        (r["compressed_bytes"], r[metric])
        for r in records
        if isinstance(r.get(metric), int | float) and r.get("compressed_bytes")
    }
    return [p[0] for p in sorted(pairs)], [p[1] for p in sorted(pairs)]


def bd_rate_summary(
    records: Sequence[dict[str, Any]],
    references: Sequence[str] = REFERENCES,
    metrics: Sequence[str] = tuple(METRICS),
    method: str = "pchip",
    ratio_range: tuple[float, float] = RATIO_RANGE,
    slack: float = RATIO_SLACK,
    min_points: int = MIN_POINTS,
) -> dict[str, Any]:
    """BD-rate of every codec against each reference present, per volume and metric, from the
    benchmark's records (what ``results.json`` holds under ``"bd_rate"``)."""
    rows: list[dict[str, Any]] = []
    for volume in dict.fromkeys(r["volume"] for r in records):
        usable = [
            r
            for r in records
            if r["volume"] == volume and _in_range(r.get("achieved_ratio"), ratio_range, slack)
        ]
        codecs = list(dict.fromkeys(r["codec"] for r in records if r["volume"] == volume))
        for reference in references:
            if reference not in codecs:
                continue
            for codec in codecs:
                if codec == reference:
                    continue
                for metric in metrics:
                    ref_rates, ref_quality = _points([r for r in usable if r["codec"] == reference], metric)
                    rates, quality = _points([r for r in usable if r["codec"] == codec], metric)
                    row = {
                        "volume": volume,
                        "codec": codec,
                        "reference": reference,
                        "metric": metric,
                        "bd_rate_percent": None,
                        "points": len(rates),
                        "reference_points": len(ref_rates),
                        "reason": None,
                    }
                    try:
                        row["bd_rate_percent"] = bd_rate(
                            ref_rates, ref_quality, rates, quality, method, min_points, (reference, codec)
                        )
                    except BDRateUnavailable as exc:
                        row["reason"] = str(exc)
                    rows.append(row)
    return {
        "method": method,
        "ratio_range": list(ratio_range),
        "ratio_slack": slack,
        "min_points": min_points,
        "references": list(references),
        "metrics": {m: METRICS.get(m, m) for m in metrics},
        "definition": "percent bytes vs the reference at equal quality (negative: smaller); "
        f"log(bytes) vs quality, {method} interpolation, averaged over the "
        "overlapping quality interval; MAE used directly as the quality axis",
        "rows": rows,
    }
