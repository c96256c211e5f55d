"""Patches per second for training, from every source an ML engineer would use, in one run.

    python benchmarks/training_patches.py [SCAN ...] [--patch 96 96 96] [--patches 48]
        [--epochs 1] [--workers 2] [--ratio 128] [--tiles 64x128x128,32x128x128] [--quick]

The same random patches (``--patches`` over the scans, fixed corners) are read through a PyTorch
DataLoader (batch size 1, ``--workers`` workers, fork and spawn, kept for ``--epochs`` passes)
from: ``.dstd`` at ``--ratio``
with the default tiles and with each ``--tiles`` shape, ``.dstd`` lossless (predictive), zarr v2
Blosc-zstd 64^3 chunks, and ``.nii.gz`` through nibabel (the whole file per patch); each local and
from moto S3 on 127.0.0.1 (``.nii.gz`` local only). Prints patches/s (spawn rows include
starting the workers, once), CPU ms per patch (workers included), bytes fetched per patch (in one
process, nothing cached: the tiles or chunks under it) and, for lossy files, MAE (HU) and ratio.
Default scans: the five shared scans that hold a 96^3 patch. ``--quick`` runs a tiny version on
the bundled scan (the tests run it).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

import dstdformat
from dstdformat.torch import PatchDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import SHARED  # noqa: E402

DEFAULT_SCANS = [  # the shared scans that hold a 96^3 patch
    "itkelastix_chest_512.nii.gz",
    "elastix_lung_baseline.nii.gz",
    "elastix_lung_followup.nii.gz",
    "totalseg_chest_1p5mm.nii.gz",
    "totalseg_abdomen_3mm.nii.gz",
]


class FixedPatches(torch.utils.data.Dataset):
    """The benchmark's patches (scan number, corner) from any reader ``read(scan, region)``."""

    def __init__(self, corners, patch, read) -> None:
        self.corners, self.patch, self.read = corners, patch, read

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: int) -> torch.Tensor:
        scan, corner = self.corners[index]
        region = tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        return torch.from_numpy(np.ascontiguousarray(self.read(scan, region), dtype=np.float32))


class DstdPatches(PatchDataset):
    """PatchDataset itself (its items, tile cache, per-process volumes) at the fixed corners."""

    def __init__(self, corners, patch, urls, options) -> None:
        super().__init__(urls, patch, sampling="grid", storage_options=options)
        self.fixed = corners

    def __len__(self) -> int:
        return len(self.fixed)

    def corner(self, index: int):
        return self.fixed[index]


class ZarrRead:
    def __init__(self, urls, options) -> None:
        self.urls, self.options, self.arrays = urls, options, None

    def __call__(self, scan, region):
        import zarr

        if self.arrays is None:
            self.arrays = [zarr.open_array(u, mode="r", storage_options=self.options) for u in self.urls]
        return self.arrays[scan][region]


class NiftiRead:
    def __init__(self, paths) -> None:
        self.paths = paths

    def __call__(self, scan, region):
        import nibabel as nib

        data = np.asanyarray(nib.load(str(self.paths[scan])).dataobj).transpose(2, 1, 0)
        return data[region]


def run_loader(dataset, workers: int, method: str | None, epochs: int = 1) -> tuple[float, float]:
    """(patches per second, CPU ms per patch of this process and its finished workers) over
    ``epochs`` passes, the workers kept between them (as a training loop keeps them)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=1,
        num_workers=workers,
        multiprocessing_context=method if workers else None,
        persistent_workers=workers > 0,
    )
    before = _cpu()
    started = time.perf_counter()
    count = sum(1 for _ in range(epochs) for _ in loader)
    seconds = time.perf_counter() - started
    del loader  # its workers end: their CPU time is counted
    return count / seconds, 1000 * (_cpu() - before) / count


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def dstd_bytes_per_patch(urls, options, corners, patch) -> float:
    """Bytes fetched per patch with nothing cached (each patch fetches the tiles under it, as
    zarr's row counts the chunks under it), opening excluded."""
    dataset = DstdPatches(corners, patch, urls, options)
    dataset.cache_bytes = 0
    volumes = [dataset._volume(scan.url) for scan in dataset.scans]
    opened = sum(v.io_stats.bytes_fetched for v in volumes)
    for index in range(len(dataset)):
        dataset[index]
    return (sum(v.io_stats.bytes_fetched for v in volumes) - opened) / len(corners)


def zarr_bytes_per_patch(paths, shapes, corners, patch, chunk=(64, 64, 64)) -> float:
    """Bytes of the stored chunks under each patch (zarr reads whole chunks; v2 keys z.y.x)."""
    total = 0
    for scan, corner in corners:
        ranges = [range(c // k, (c + p - 1) // k + 1) for c, p, k in zip(corner, patch, chunk)]
        for z in ranges[0]:
            for y in ranges[1]:
                for x in ranges[2]:
                    total += (Path(paths[scan]) / f"{z}.{y}.{x}").stat().st_size
    return total / len(corners)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scans", nargs="*", type=Path)
    parser.add_argument("--patch", type=int, nargs=3, default=(96, 96, 96))
    parser.add_argument("--patches", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=128.0)
    parser.add_argument("--tiles", default="64x128x128")
    parser.add_argument(
        "--epochs", type=int, default=1, help="passes over the patches, workers kept between them"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run on the bundled scan")
    args = parser.parse_args(argv)
    import logging

    import fsspec
    import numcodecs
    import zarr
    from servers import s3_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

    if args.quick:
        paths = [Path(str(resources.files("dstdformat") / "data" / "totalseg_abdomen_3mm.nii.gz"))]
        args.patch, args.patches, args.ratio, args.tiles = (24, 32, 32), 6, 32.0, "16x64x64"
    else:
        paths = args.scans or [SHARED / s for s in DEFAULT_SCANS]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"{missing[0]} not found (pass scans)", file=sys.stderr)
        return 1
    patch = tuple(args.patch)
    tiles = [tuple(int(v) for v in t.split("x")) for t in args.tiles.split(",") if t]
    scans = [dstdformat.read_scan(p) for p in paths]
    small = [p for p, s in zip(paths, scans) if any(n < k for n, k in zip(s.array.shape, args.patch))]
    if small:
        print(f"{small[0]} is smaller than a {tuple(args.patch)} patch", file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    corners = [
        (n, tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(scans[n].array.shape, patch)))
        for n in rng.integers(0, len(scans), args.patches)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, s3_server() as (_, options):
        root = Path(tmp)
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir("training")
        lossy = {"ratio": args.ratio}
        layouts = [(f"dstd {args.ratio:g}x, default tiles", "deepstd", lossy, None)]
        layouts += [(f"dstd {args.ratio:g}x, tiles {t}", "deepstd", {"ratio": args.ratio}, t) for t in tiles]
        layouts += [("dstd lossless (predictive)", None, None, None)]
        for label, codec, codec_options, tile in layouts:
            folder = root / label.replace(" ", "_").replace(",", "")
            folder.mkdir()
            urls, s3_urls, mae, stored = [], [], [], 0
            for number, scan in enumerate(scans):
                path = folder / f"scan{number}.dstd"
                dstdformat.save(scan, path, codec=codec, codec_options=codec_options, tile_shape=tile)
                if codec is not None:
                    decoded = dstdformat.open(path).read(refine=False).astype(np.float64)
                    mae.append(float(np.abs(decoded - scan.array).mean()))
                stored += path.stat().st_size
                key = f"training/{folder.name}/scan{number}.dstd"
                fs.put(str(path), key)
                urls.append(str(path))
                s3_urls.append(f"s3://{key}")
            raw = sum(s.array.nbytes for s in scans)
            note = f"ratio {raw / stored:.1f}" + (f", MAE {np.mean(mae):.2f} HU" if mae else "")
            for where, names, opts in (("local", urls, None), ("S3", s3_urls, options)):
                per_patch = dstd_bytes_per_patch(names, opts, corners, patch)
                for method in ("fork", "spawn"):
                    rate, cpu = run_loader(
                        DstdPatches(corners, patch, names, opts), args.workers, method, args.epochs
                    )
                    rows.append((label, where, method, rate, cpu, per_patch, note))
        zarr_urls, s3_zarr = [], []
        for number, scan in enumerate(scans):
            path = root / "zarr" / f"scan{number}.zarr"
            array = zarr.create_array(
                str(path),
                shape=scan.array.shape,
                chunks=(64, 64, 64),
                dtype=scan.array.dtype,
                zarr_format=2,
                compressors=numcodecs.Blosc("zstd", 5, numcodecs.Blosc.SHUFFLE),
            )
            array[:] = scan.array
            fs.put(str(path), f"training/zarr/scan{number}.zarr", recursive=True)
            zarr_urls.append(str(path))
            s3_zarr.append(f"s3://training/zarr/scan{number}.zarr")
        zarr_bytes = zarr_bytes_per_patch(zarr_urls, [s.array.shape for s in scans], corners, patch)
        for where, names, opts in (("local", zarr_urls, None), ("S3", s3_zarr, options)):
            for method in ("fork", "spawn"):
                rate, cpu = run_loader(
                    FixedPatches(corners, patch, ZarrRead(names, opts)), args.workers, method
                )
                rows.append(("zarr v2 Blosc-zstd 64^3", where, method, rate, cpu, zarr_bytes, "lossless"))
        nifti = FixedPatches(corners, patch, NiftiRead(paths))
        rate, cpu = run_loader(nifti, args.workers, "fork", args.epochs)
        sizes = [p.stat().st_size for p in paths]
        per = float(np.mean([sizes[n] for n, _ in corners]))
        rows.append((".nii.gz, nibabel (whole file per patch)", "local", "fork", rate, cpu, per, "lossless"))
    print(
        f"{len(scans)} scans, {len(corners)} patches of {patch} x {args.epochs} epochs, "
        f"{args.workers} workers"
    )
    print("\n| source | where | workers | patches/s | CPU ms / patch | KB / patch | notes |")
    print("|---|---|---|---:|---:|---:|---|")
    for label, where, method, rate, cpu, per_patch, note in rows:
        print(f"| {label} | {where} | {method} | {rate:.1f} | {cpu:.0f} | {per_patch / 1024:.0f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
