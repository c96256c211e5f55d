"""What decoding SPERR streams in helper processes costs, against decoding them in process.

    python benchmarks/isolated_decode.py [SCAN.nii.gz] [--ratio 256] [--repeats 3]

Streams read from files go to helper processes (SECURITY.md) because SPERR can abort on a forged
stream. This encodes one scan (default: the shared 512x512x141 chest) with deepstd without the
refinement network (so the SPERR layer is all the decode does), then times a full decode, an
axial slice and a 16-slice block with ``DSTD_ISOLATE_DECODER`` on and off, alternating, in one
process, and prints the best time of each with the ratio isolated / in process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
from dstdformat.codecs.deepstd.base_layers.isolated import ISOLATE_ENV
from dstdformat.io import read_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", nargs="?", default=str(SHARED / "itkelastix_chest_512.nii.gz"))
    parser.add_argument("--ratio", type=float, default=256.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not Path(args.scan).exists():
        print(f"no scan at {args.scan}", file=sys.stderr)
        return 1
    volume = read_scan(args.scan).array
    reads = {
        "full volume": lambda v: v.read(),
        "one axial slice": lambda v: v[v.shape[0] // 2],
        "16 slices": lambda v: v[:16],
    }
    best: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.dstd"
        dstdformat.save(volume, path, codec=DeepSTDVolumeCodec(ratio=args.ratio, model=None))
        for _ in range(args.repeats):
            for mode, flag in (("isolated", "1"), ("in process", "0")):
                os.environ[ISOLATE_ENV] = flag
                for name, read in reads.items():
                    _, seconds = timed(lambda read=read: read(dstdformat.open(path)))
                    key = (name, mode)
                    best[key] = min(best.get(key, float("inf")), seconds)
    print(
        f"{Path(args.scan).name} {volume.shape}, deepstd {args.ratio:g}x without refinement, "
        f"best of {args.repeats}\n"
    )
    print("| read | in process s | isolated s | isolated / in process |")
    print("|---|---:|---:|---:|")
    for name in reads:
        inside, isolated = best[(name, "in process")], best[(name, "isolated")]
        print(f"| {name} | {inside:.3f} | {isolated:.3f} | {isolated / inside:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
