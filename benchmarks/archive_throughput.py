"""Throughput of ``dstd archive`` with 1 and with 2 local workers, measured in one run.

    python benchmarks/archive_throughput.py [SOURCE] [--codec deepstd] [--ratio 256]

SOURCE defaults to the shared CT collection (every NIfTI scan and the DICOM series under it).
Each configuration archives the whole collection into a fresh temporary folder (cluster start,
reading, encoding, the decode-back check and the catalog all count) and the script prints
scans/s, voxel MB/s and each configuration's throughput as a ratio against 1 worker. Rows:

- 1 worker, all cores' torch threads (what ``--workers 1`` does);
- 1 worker, 1 torch thread (the per-worker cost the parallel rows pay);
- N workers, cores / N torch threads each (the default on a CPU machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from dstdformat.archive import archive_collection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(SHARED))
    parser.add_argument("--codec", default="deepstd")
    parser.add_argument("--ratio", type=float, default=256.0)
    parser.add_argument("--workers", type=int, default=2, help="the parallel configuration")
    args = parser.parse_args()
    if not Path(args.source).exists():
        print(f"no collection at {args.source}", file=sys.stderr)
        return 1
    options = {"ratio": args.ratio} if args.codec == "deepstd" else {}
    cores = os.cpu_count() or 1
    configurations = [(1, cores), (1, 1), (args.workers, max(1, cores // args.workers))]
    rows = []
    for workers, threads in configurations:
        with tempfile.TemporaryDirectory() as tmp:
            summary = archive_collection(
                args.source,
                Path(tmp) / "archive",
                codec=args.codec,
                codec_options=options,
                workers=workers,
                threads=threads,
            )
        if summary.failed:
            print(f"failed scans: {[(r['name'], r['error']) for r in summary.failed]}")
        rows.append((workers, threads, summary))
        print(
            f"{workers} worker(s) x {threads} thread(s): {summary.archived} scans, "
            f"{summary.raw_bytes / 1e6:.1f} MB of voxels in {summary.seconds:.1f} s",
            flush=True,
        )
    base = rows[0][2]
    print(
        f"\n{args.codec} {options} on {cores} cores; {base.archived} scans, "
        f"{base.raw_bytes / 1e6:.1f} MB of voxels -> {base.dest_bytes / 1e6:.2f} MB "
        f"({base.ratio:.1f}x)\n"
    )
    print("| workers x torch threads | seconds | scans/s | voxel MB/s | throughput vs 1 worker |")
    print("|---|---|---|---|---|")
    for workers, threads, summary in rows:
        print(
            f"| {workers} x {threads} | {summary.seconds:.1f} | {summary.archived / summary.seconds:.3f} "
            f"| {summary.raw_bytes / 1e6 / summary.seconds:.2f} | {base.seconds / summary.seconds:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
