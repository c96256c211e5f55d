"""The deepstd codec through zarr against the codec on the whole array, and batched decoding.

    python benchmarks/zarr_deepstd.py [SCAN.nii.gz] [--ratio 64] [--chunks 64 512 512]

Measured in one run on the same volume (default: the shared 512x512x141 chest):

1. write and read with zarr v3 (serializer=DeepSTDCodec) and zarr v2 (compressor=DeepSTD), each
   as a ratio to ``dstdformat.save`` / ``open().read()`` of the whole array with the same codec
   settings (the target is at most 1.3x);
2. chunks decoded per second with batches of 1 and of N chunks through the refinement network.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import zarr

import dstdformat
from dstdformat import DeepSTD, DeepSTDCodec
from dstdformat.io import read_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scan", nargs="?", type=Path, default=SHARED / "itkelastix_chest_512.nii.gz")
    parser.add_argument("--ratio", type=float, default=64.0)
    parser.add_argument("--chunks", type=int, nargs=3, default=[64, 512, 512])
    parser.add_argument("--batch", type=int, default=4, help="chunks per batch in part 2")
    args = parser.parse_args()
    if not args.scan.exists():
        print(f"{args.scan} not found (pass a scan)", file=sys.stderr)
        return 1
    volume = read_scan(args.scan).array
    chunks = tuple(min(c, s) for c, s in zip(args.chunks, volume.shape))
    print(f"volume {volume.shape} {volume.dtype}, chunks {chunks}, ratio {args.ratio:g}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "whole.dstd"
        codec = dstdformat.codecs.registry.get_codec("deepstd", ratio=args.ratio)
        dstdformat.open(dstdformat.save(volume[:8], tmp / "warm.dstd", codec=codec).path)[0]
        _, base_write = timed(lambda: dstdformat.save(volume, path, codec=codec))
        _, base_read = timed(lambda: dstdformat.open(path).read())
        rows.append(("codec on the whole array", base_write, base_read, path.stat().st_size))

        def v3():
            return zarr.create_array(
                tmp / "v3.zarr",
                shape=volume.shape,
                chunks=chunks,
                dtype="int16",
                serializer=DeepSTDCodec(ratio=args.ratio),
                compressors=None,
            )

        def v2():
            return zarr.open(
                str(tmp / "v2.zarr"),
                mode="w",
                shape=volume.shape,
                chunks=chunks,
                dtype="int16",
                compressor=DeepSTD(ratio=args.ratio),
                zarr_format=2,
            )

        for label, make, store in (
            ("zarr v3, serializer=DeepSTDCodec", v3, "v3.zarr"),
            ("zarr v2, compressor=DeepSTD", v2, "v2.zarr"),
        ):
            array = make()
            _, write = timed(lambda array=array: array.__setitem__(Ellipsis, volume))
            _, read = timed(lambda store=store: zarr.open_array(tmp / store, mode="r")[:])
            size = sum(p.stat().st_size for p in (tmp / store).rglob("*") if p.is_file())
            rows.append((label, write, read, size))

        print("\n| path | write s | read s | write vs codec | read vs codec | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, write, read, size in rows:
            print(
                f"| {label} | {write:.1f} | {read:.1f} | {write / base_write:.2f}x | "
                f"{read / base_read:.2f}x | {volume.nbytes / size:.1f} |"
            )

        inner = DeepSTD(ratio=args.ratio)
        encoded = [inner.encode(volume[k : k + chunks[0]]) for k in range(0, volume.shape[0], chunks[0])]
        encoded = encoded[: max(args.batch, 1)] if len(encoded) >= args.batch else encoded
        print(f"\n| batch | chunks/s ({len(encoded)} chunks of {chunks}) |")
        print("|---:|---:|")
        for batch in (1, len(encoded)):
            _, seconds = timed(lambda batch=batch: inner.decode_many(encoded, batch=batch))
            print(f"| {batch} | {len(encoded) / seconds:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
