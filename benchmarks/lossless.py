"""Lossless storage of CT: `.dstd` (lossless codec) against NIfTI+gzip and zarr v3 with Blosc-zstd,
measured side by side in one run on the same volumes.

    python benchmarks/lossless.py [SCAN.nii.gz ...]   # default: the shared CT collection

Prints, per volume, the ratio (raw int16 bytes / stored bytes), write and full-read MB/s, and the
bytes one axial-slice read fetches, plus each figure relative to NIfTI+gzip.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import zarr
from zarr.codecs import BloscCodec

import dstdformat
from dstdformat.io import read_scan, write_scan

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_volume(source: Path, work: Path) -> list[dict]:
    scan = read_scan(source)
    array = scan.array
    raw = array.nbytes
    mb = raw / 1e6
    z = array.shape[0] // 2
    rows = []

    nii = work / "scan.nii.gz"
    _, w = _timed(lambda: write_scan(scan, nii))
    back, r = _timed(lambda: np.asanyarray(nib.load(nii).dataobj))
    assert np.array_equal(back.transpose(2, 1, 0), array)
    rows.append(
        {
            "format": "NIfTI+gzip",
            "bytes": _size(nii),
            "write": mb / w,
            "read": mb / r,
            "slice_bytes": _size(nii),
        }
    )  # gzip has no random access: a slice reads it all

    store = work / "scan.zarr"
    chunks = (8, 128, 128)

    def write_zarr():
        arr = zarr.create_array(
            store,
            shape=array.shape,
            dtype=array.dtype,
            chunks=chunks,
            compressors=BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),
            overwrite=True,
        )
        arr[:] = array

    _, w = _timed(write_zarr)
    back, r = _timed(lambda: zarr.open_array(store, mode="r")[:])
    assert np.array_equal(back, array)
    grid_yx = -(-array.shape[1] // chunks[1]) * -(-array.shape[2] // chunks[2])
    chunk_files = sorted((store / "c" / str(z // chunks[0])).rglob("*"))
    slice_bytes = sum(p.stat().st_size for p in chunk_files if p.is_file())
    assert len([p for p in chunk_files if p.is_file()]) == grid_yx
    rows.append(
        {
            "format": "zarr v3 Blosc-zstd5",
            "bytes": _size(store),
            "write": mb / w,
            "read": mb / r,
            "slice_bytes": slice_bytes,
        }
    )

    dstd = work / "scan.dstd"
    _, w = _timed(lambda: dstdformat.save(scan, dstd))
    volume = dstdformat.open(dstd)
    back, r = _timed(volume.read)
    assert np.array_equal(back, array)
    volume.io_stats.reset()
    volume[z]
    rows.append(
        {
            "format": ".dstd lossless",
            "bytes": _size(dstd),
            "write": mb / w,
            "read": mb / r,
            "slice_bytes": volume.io_stats.bytes_fetched,
        }
    )
    for row in rows:
        row["ratio"] = raw / row["bytes"]
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scans", nargs="*", type=Path)
    args = parser.parse_args(argv)
    scans = args.scans or sorted(SHARED.glob("*.nii.gz"))
    if not scans:
        print("no scans given and the shared CT collection is absent", file=sys.stderr)
        return 1
    print("| scan | format | ratio | vs NIfTI+gzip | write MB/s | read MB/s | one axial slice fetches |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for source in scans:
        work = Path(tempfile.mkdtemp())
        try:
            rows = bench_volume(source, work)
        finally:
            shutil.rmtree(work)
        base = rows[0]["ratio"]
        for row in rows:
            print(
                f"| {source.name} | {row['format']} | {row['ratio']:.2f} | "
                f"{row['ratio'] / base:.2f}x | {row['write']:.0f} | {row['read']:.0f} | "
                f"{row['slice_bytes'] / row['bytes'] * 100:.1f}% |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
