"""What bounding the encoder costs: a deepstd write of a 512x512x300 CT volume with every tile
encode in a helper process (the default) against encoding in this process
(``DSTD_BOUNDED_ENCODER=0``, what the codec did before), alternated in one run.

    python benchmarks/bounded_overhead.py [--ratio 256] [--rounds 2] [--slices 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import dstdformat
from dstdformat.codecs.deepstd.base_layers import bounded

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402
from deepstd_speed import volume_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", nargs="?", type=Path, default=SHARED / "itkelastix_chest_512.nii.gz")
    parser.add_argument("--ratio", type=float, default=256.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    volume = volume_of(args.scan, args.slices)
    megabytes = volume.nbytes / 1e6
    times: dict[str, list[float]] = {"in process": [], "bounded": []}
    sizes: dict[str, set[int]] = {"in process": set(), "bounded": set()}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, flag in (("in process", "0"), ("bounded", "1")):
                os.environ[bounded.BOUNDED_ENV] = flag
                started = time.perf_counter()
                result = dstdformat.save(
                    volume, Path(tmp) / "x.dstd", codec="deepstd", codec_options={"ratio": args.ratio}
                )
                seconds = time.perf_counter() - started
                times[name].append(seconds)
                sizes[name].add(result.file_size)
                print(
                    f"round {round_ + 1} {name:>10}: {seconds:6.1f} s "
                    f"({megabytes / seconds:.2f} MB/s), {result.ratio:.1f}x"
                )
    for name, values in times.items():
        best = min(values)
        print(
            f"{name:>10}: best {best:.1f} s = {megabytes / best:.2f} MB/s; file sizes {sorted(sizes[name])}"
        )
    print(f"bounded / in process (best of each): {min(times['bounded']) / min(times['in process']):.3f}")
    print(f"same bytes both ways: {sizes['bounded'] == sizes['in process']}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
