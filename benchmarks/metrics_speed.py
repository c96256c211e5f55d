"""Time and peak memory of `dstdformat.metrics.all_metrics` on a 512x512x300 CT volume.

    python benchmarks/metrics_speed.py [SCAN.nii.gz]   # default: the shared 512x512x141 chest

The scan is extended to 300 slices (mirrored) and compared with a noisy copy (sigma 20 HU), the
size the evaluation issue asks to handle in seconds. Baseline in the same run: one pass of
numpy's mean absolute error over the same arrays, the cheapest possible metric.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from dstdformat import metrics
from dstdformat.bench.measure import PeakMemory
from dstdformat.io import read_scan

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else SHARED / "itkelastix_chest_512.nii.gz"
    scan = read_scan(source)
    volume = scan.array.astype(np.int16)
    while volume.shape[0] < 300:
        volume = np.concatenate([volume, volume[::-1]])
    volume = np.ascontiguousarray(volume[:300])
    noisy = (volume + np.random.default_rng(0).normal(0, 20, volume.shape)).astype(np.int16)
    print(f"volume {volume.shape} {volume.dtype} ({volume.nbytes / 1e6:.0f} MB each)")
    start = time.perf_counter()
    float(np.abs(volume.astype(np.float32) - noisy).mean())
    baseline = time.perf_counter() - start
    timings = {}
    with PeakMemory() as memory:
        for name in ("mae", "psnr", "ssim"):
            start = time.perf_counter()
            getattr(metrics, name)(volume, noisy)
            timings[name] = time.perf_counter() - start
        start = time.perf_counter()
        masks_a, masks_b = metrics.ct_masks(volume), metrics.ct_masks(noisy)
        timings["masks (both volumes)"] = time.perf_counter() - start
        start = time.perf_counter()
        for key in masks_a:
            metrics.dice(masks_a[key], masks_b[key])
            metrics.hd95(masks_a[key], masks_b[key], scan.metadata.spacing)
        timings["dice + hd95 (3 masks)"] = time.perf_counter() - start
    total = sum(timings.values())
    for name, seconds in timings.items():
        print(f"  {name:24s} {seconds:6.2f} s   ({seconds / baseline:6.1f}x numpy MAE)")
    print(
        f"  {'all metrics':24s} {total:6.2f} s   ({total / baseline:6.1f}x numpy MAE, "
        f"baseline {baseline:.2f} s); peak extra memory {memory.peak / 1e6:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
