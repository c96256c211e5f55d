"""What rate control costs: deepstd's encode against one preset-3 pass over the same tiles.

    python benchmarks/rate_control.py [SCAN.nii.gz] [--slices 300] [--ratio 256 128]

The default scan is the shared 512x512x141 chest mirrored to ``--slices`` slices. For each
ratio: the encode's wall time and MB/s, how many preset-3 and probe-preset (10) encodes of the
volume it made (voxels sent to each encoder / voxels of the volume), the ratio it landed on, its
MAE, and, in the same process, the time of one preset-3 pass over the file's tiles at the CRFs
it chose (the floor any rate control at that preset has): their quotient is what the search
costs.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
from dstdformat.codecs.deepstd.base_layers import av1, bounded
from dstdformat.io import read_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, mirror_slices  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scan", nargs="?", type=Path, default=SHARED / "itkelastix_chest_512.nii.gz")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--ratio", type=float, nargs="+", default=[256.0, 128.0])
    args = parser.parse_args()
    if not args.scan.exists():
        print(f"{args.scan} not found (pass a scan)", file=sys.stderr)
        return 1
    volume = mirror_slices(read_scan(args.scan).array, args.slices)
    mb = volume.nbytes / 1e6
    voxels: collections.Counter = collections.Counter()
    encode = bounded.encode_av1

    def counted(samples, crf, preset, what):
        voxels[preset] += samples.size
        return encode(samples, crf, preset, what)

    bounded.encode_av1 = counted  # the AV1 layer calls it through the module
    print(f"volume {volume.shape} ({mb:.0f} MB)")
    print(
        "\n| target | ratio | MAE HU | encode s (MB/s) | preset-3 passes | preset-10 passes "
        "| one preset-3 pass s | encode / one pass |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.dstd"
        for ratio in args.ratio:
            voxels.clear()
            started = time.perf_counter()
            dstdformat.save(volume, path, codec=DeepSTDVolumeCodec(ratio=ratio, model=None, base="av1"))
            seconds = time.perf_counter() - started
            passes = {p: voxels[p] / volume.size for p in (av1.DEFAULT_PRESET, av1.PROBE_PRESET)}
            opened = dstdformat.open(path)
            mae = float(np.abs(opened.read().astype(np.float64) - volume).mean())
            state = opened.header["codec"]["state"]["base"]
            samples = av1.SampleMap.from_json(state["samples"])
            grid = opened.reader.header.grid
            started = time.perf_counter()
            for tile, crf in zip(grid, state["crf"]):
                block = np.clip(volume[grid.tile_region(tile)], -1024, 3071, dtype=np.float64)
                encode(samples.to_samples(block), crf, av1.DEFAULT_PRESET, f"tile {tile}")
            one_pass = time.perf_counter() - started
            print(
                f"| {ratio:g}x | {volume.nbytes / path.stat().st_size:.1f} | {mae:.3f} | {seconds:.1f} "
                f"({mb / seconds:.1f}) | {passes[av1.DEFAULT_PRESET]:.2f} | {passes[av1.PROBE_PRESET]:.2f} "
                f"| {one_pass:.1f} | {seconds / one_pass:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
