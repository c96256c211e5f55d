"""Does the learned refinement earn its keep on the AV1 base layer? One file per (scan, ratio),
read with and without the refinement, in one run.

    python benchmarks/refine_on_av1.py [--model ID] [--ratios 128 256] [SCAN ...]

The criterion of the issue that brought the AV1 base: the refinement stays on by default only if,
on scans held out of training, it lowers the MAE by at least 5% against the same file read
without it (``read(refine=False)``). The encoder picks a gain per block against the original, so
a network that does not fit a scan is turned down or off there and costs nothing but encode time.
Models are found by id (``DSTD_MODEL_PATH`` adds folders). Default scans: the held-out ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, timed  # noqa: E402

HELD_OUT = (
    "itkelastix_chest_512.nii.gz",
    "lungpetctdx/lungpetctdx_a0002_siemens_8mm_B40f.nii.gz",
    "lungpetctdx/lungpetctdx_a0002_siemens_8mm_B70f.nii.gz",
    "totalseg_chest_1p5mm.nii.gz",
)


def mae(decoded: np.ndarray, original: np.ndarray) -> float:
    return float(np.mean(np.abs(decoded.astype(np.float64) - original)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scans", nargs="*", type=Path)
    parser.add_argument("--model", default="default")
    parser.add_argument("--ratios", type=float, nargs="+", default=[128.0, 256.0])
    args = parser.parse_args()
    scans = args.scans or [SHARED / name for name in HELD_OUT]
    missing = [s for s in scans if not s.exists()]
    if missing:
        print(f"not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    print(f"model {args.model}\n")
    print(
        "| scan | ratio | MAE base | MAE refined | change | blocks refined | encode s | decode s "
        "(refined / base) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    changes = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.dstd"
        for scan_path in scans:
            original = dstdformat.read_scan(scan_path).array
            for ratio in args.ratios:
                codec = DeepSTDVolumeCodec(ratio=ratio, model=args.model)
                _, enc = timed(
                    lambda codec=codec, original=original: dstdformat.save(original, path, codec=codec)
                )
                volume = dstdformat.open(path)
                refined, dec = timed(volume.read)
                base, dec_base = timed(lambda volume=volume: volume.read(refine=False))
                gains = volume.header["codec"]["state"].get("refine_gain", [])
                change = mae(refined, original) / mae(base, original) - 1
                changes.append(change)
                print(
                    f"| {scan_path.name} | {volume.ratio:.1f} | {mae(base, original):.2f} | "
                    f"{mae(refined, original):.2f} | {100 * change:+.1f}% | "
                    f"{sum(g > 0 for g in gains)}/{len(gains)} | {enc:.1f} | {dec:.1f} / "
                    f"{dec_base:.1f} |",
                    flush=True,
                )
    print(f"\nmean change {100 * np.mean(changes):+.2f}%; the issue's bar for keeping it on: -5%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
