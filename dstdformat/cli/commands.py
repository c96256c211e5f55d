"""The work behind each ``dstd`` subcommand. Output goes to stdout; errors propagate to main."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..storage.writing import check_writable
from .codec_flags import codec_options
from .format import error_text, human_bytes, info_text


def _is_dstd(path: str) -> bool:
    return path.lower().rstrip("/").endswith(".dstd")


def _load(path: str, args: argparse.Namespace):
    """A Scan from any supported input, .dstd included."""
    from .. import io

    if _is_dstd(path):
        return io.read_scan(path, progress=not args.quiet)
    fmt = io.format_for_path(path)
    options = {}
    if getattr(args, "dataset", None):
        if fmt != "hdf5":
            raise InvalidInputError("--dataset applies to HDF5 inputs only")
        options["dataset"] = args.dataset
    if fmt == "dicom":
        options["progress"] = not args.quiet
    return io.read_scan(path, **options)


def check_destination(path: str, force: bool, folder: bool = False) -> None:
    """Refuse, before any decoding or encoding, an existing output unless ``--force`` (as gzip
    does), and an output the writer could not publish
    (:func:`~dstdformat.storage.writing.check_writable`; ``folder``: the output is a folder)."""
    if "://" not in path or path.startswith("file://"):
        target = Path(path.removeprefix("file://")).expanduser()
        if target.exists() and not force:
            raise InvalidInputError(f"{path} already exists; use --force (-f) to overwrite it")
    check_writable(path, folder_ok=folder)


def compress(args: argparse.Namespace) -> int:
    from ..io.dstd_files import save

    options = codec_options(args)
    if not args.output.lower().endswith(".dstd"):
        raise InvalidInputError(f"output must end in .dstd, got {args.output!r}")
    check_destination(args.output, args.force)
    started = time.perf_counter()
    scan = _load(args.input, args)
    result = save(
        scan,
        args.output,
        codec=args.codec,
        codec_options=options,
        tile_shape=tuple(args.tile) if args.tile else None,
        progress=not args.quiet,
    )
    if not args.quiet:
        error = result.header["stats"].get("error")
        print(
            f"{args.output}: {human_bytes(result.raw_nbytes)} -> {human_bytes(result.file_size)} "
            f"({result.ratio:.2f}x, codec {args.codec}) in {time.perf_counter() - started:.1f} s"
            + (f"; {error_text(error)}" if error else "")
        )
    return 0


def to_zarr(args: argparse.Namespace) -> int:
    from ..interop.to_zarr import scan_to_zarr

    options = codec_options(args, "deepstd")
    if "shape" in options:
        raise InvalidInputError(
            "--shape does not apply to zarr chunks (each is coded on its own); use dstd compress"
        )
    if "layout" in options:
        raise InvalidInputError("--layout does not apply to zarr: its chunks are the tiles (--chunks)")
    check_destination(args.output, args.force, folder=True)
    started = time.perf_counter()
    scan = _load(args.input, args)
    array = scan_to_zarr(
        scan,
        args.output,
        zarr_format=args.zarr_format,
        chunks=tuple(args.chunks) if args.chunks else None,
        codec_options=options,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(
            f"{args.output}: array '0' {array.shape} {array.dtype}, chunks {array.chunks}, zarr "
            f"format {args.zarr_format}, in {time.perf_counter() - started:.1f} s"
        )
    return 0


def from_zarr(args: argparse.Namespace) -> int:
    from .. import io
    from ..interop.to_zarr import zarr_to_scan
    from ..io.dstd_files import save as save_dstd

    to_dstd = _is_dstd(args.output)
    fmt = "dstd" if to_dstd else io.format_for_output(args.output)
    if args.ratio is not None and not (to_dstd and args.codec not in (None, "lossless", "predictive")):
        raise InvalidInputError("--ratio applies to .dstd output with a lossy --codec")
    check_destination(args.output, args.force)
    started = time.perf_counter()
    scan = zarr_to_scan(args.input)
    if to_dstd:
        options = {"ratio": args.ratio} if args.ratio is not None else {}
        save_dstd(scan, args.output, codec=args.codec, codec_options=options, progress=not args.quiet)
    else:
        io.write_scan(scan, args.output)
    if not args.quiet:
        print(
            f"{args.output}: {fmt}, {scan.array.shape} {scan.array.dtype} from {args.input} in "
            f"{time.perf_counter() - started:.1f} s"
        )
    return 0


def decompress(args: argparse.Namespace) -> int:
    from .. import io
    from ..container.volume import open_volume as open
    from ..metadata import Scan

    fmt = io.format_for_output(args.output)  # fail on a bad suffix before decoding anything
    check_destination(args.output, args.force)
    with open(args.input) as volume:
        scan = Scan(volume.read(progress=not args.quiet, refine=not args.no_refine), volume.metadata)
    io.write_scan(scan, args.output)
    if not args.quiet:
        k, j, i = scan.array.shape
        layout = f"(i, j, k) = {(i, j, k)}" if fmt == "nifti" else f"(k, j, i) = {(k, j, i)}"
        print(f"{args.output}: {fmt}, {layout} {scan.array.dtype}")
    return 0


def info(args: argparse.Namespace) -> int:
    from ..container.inspect import summarize
    from ..container.volume import open_volume as open

    with open(args.file) as volume:
        summary = summarize(volume)
    if args.json:
        print(json.dumps({"file": args.file, **summary}, indent=2))
    else:
        print(info_text(args.file, summary))
    return 0


def verify(args: argparse.Namespace) -> int:
    from ..container.inspect import verify as verify_volume
    from ..container.volume import open_volume as open

    if not _is_dstd(args.file):
        from ..archive.collection import is_archive
        from .archive_commands import verify as verify_archive

        if is_archive(args.file, _json_option(args.storage_options)):
            return verify_archive(args)
        if Path(args.file).is_dir():
            raise IsADirectoryError(
                21, "is a directory, not a .dstd file nor an archive (no archive.json)", args.file
            )
    elif args.decode or args.storage_options or args.workers:
        raise InvalidInputError("--decode, --workers and --storage-options apply to archives")

    with open(args.file) as volume:
        report = verify_volume(volume, progress=not args.quiet)
    if report.ok:
        exact = {True: "; decoded voxels match the original's sha256", None: "", False: ""}[
            report.content_hash_matches
        ]
        print(
            f"{args.file}: OK ({report.sections_checked} sections, "
            f"{human_bytes(report.bytes_checked)} checked, every tile decoded{exact})"
        )
        return 0
    for problem in report.problems:
        print(f"{args.file}: FAILED: {problem}")
    return 1


def _json_option(text: str | None) -> dict | None:
    from .archive_commands import _options

    return _options(text, "--storage-options")


def bench(args: argparse.Namespace) -> int:
    try:
        import imagecodecs  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        raise InvalidInputError("dstd bench needs the bench extra: pip install 'dstdformat[bench]'") from None
    if args.tier != "ratio":
        return _bench_tier(args)
    from ..bench.codecs import make_bench_codec
    from ..bench.report import write_reports
    from ..bench.runner import DEFAULT_CODECS, BenchConfig, run_bench

    codecs = args.codecs or list(DEFAULT_CODECS)
    for name in codecs:
        if name != "dstd-*":
            make_bench_codec(name)  # unknown names fail before any work
    if any(r <= 1 for r in args.ratios):
        raise InvalidInputError("--ratios must be greater than 1")
    config = BenchConfig(
        volumes=[Path(v) for v in args.volumes],
        ratios=list(args.ratios),
        codecs=codecs,
        threads=args.threads,
        crop=tuple(args.crop) if args.crop else None,
        progress=not args.quiet,
    )
    results = run_bench(config)
    written = write_reports(results, Path(args.out))
    failed = [r for r in results["records"] if not r.get("reached")]
    _bench_summary(args, len(results["records"]), f"{len(failed)} targets not reached", written)
    return 0


def _bench_summary(args: argparse.Namespace, measurements: int, failures: str, written: list[Path]) -> None:
    if not args.quiet:
        print(f"{measurements} measurements ({failures}); wrote {', '.join(str(p) for p in written)}")


def _bench_tier(args: argparse.Namespace) -> int:
    """``dstd bench --tier lossless|bounded``: the archive tiers, every codec in one run."""
    from ..bench.archival import make_tier_codec
    from ..bench.tiers import TierConfig, run_tier, write_tier_reports

    for name in args.codecs or []:
        make_tier_codec(args.tier, name)  # unknown names fail before any work
    if any(e < 1 for e in args.errors):
        raise InvalidInputError("--errors must be whole HU of at least 1 (lossless is --tier lossless)")
    config = TierConfig(
        volumes=[Path(v) for v in args.volumes],
        tier=args.tier,
        codecs=list(args.codecs or []),
        errors=list(args.errors),
        threads=args.threads,
        crop=tuple(args.crop) if args.crop else None,
        progress=not args.quiet,
    )
    results = run_tier(config)
    written = write_tier_reports(results, Path(args.out))
    failed = [r for r in results["records"] if "error" in r or not r.get("held")]
    _bench_summary(args, len(results["records"]), f"{len(failed)} failed or broke their bound", written)
    return 0


BUNDLED_SCAN = "totalseg_abdomen_3mm.nii.gz"


def demo(args: argparse.Namespace) -> int:
    from .. import io
    from ..container.volume import open_volume as open
    from ..io.dstd_files import save

    codec = "deepstd"
    with resources.as_file(resources.files("dstdformat") / "data" / BUNDLED_SCAN) as source:
        scan = io.read_scan(source)
        source_size = source.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out) if args.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / BUNDLED_SCAN.replace(".nii.gz", ".dstd")
        started = time.perf_counter()
        result = save(scan, target, codec=codec, progress=not args.quiet)
        encode_s = time.perf_counter() - started
        with open(target) as volume:
            opened = volume.io_stats.bytes_fetched
            z = volume.shape[0] // 2
            started = time.perf_counter()
            axial = volume[z]
            read_s = time.perf_counter() - started
            fetched = volume.io_stats.bytes_fetched - opened
        error = np.abs(axial.astype(np.float64) - scan.array[z].astype(np.float64))
        lines = [
            f"dstd demo: bundled CT {BUNDLED_SCAN} (TotalSegmentator test data, Apache-2.0)",
            f"  volume        {scan.array.shape} {scan.array.dtype}, spacing "
            f"{tuple(round(s, 3) for s in scan.spacing)} mm",
            f"  raw           {human_bytes(scan.array.nbytes)}   (NIfTI.gz on disk: "
            f"{human_bytes(source_size)})",
            f"  .dstd         {human_bytes(result.file_size)}   ratio {result.ratio:.2f}x   "
            f"codec {codec}   encoded in {encode_s:.2f} s",
            f"  open          read {human_bytes(opened)}: preamble, header and section index"
            + (" (this small file: all of it)" if opened >= result.file_size else ""),
            f"  lazy read     axial slice {z}: {axial.shape}, decoded from {human_bytes(fetched)} "
            f"of the file's {human_bytes(result.file_size)} (its tiles' sections) in "
            f"{read_s * 1000:.1f} ms",
            f"  error         max {error.max():.1f} HU, mean {error.mean():.2f} HU",
            f"  written to    {target}"
            if args.out
            else "  (written to a temporary folder; use --out DIR to keep it)",
        ]
        print("\n".join(lines))
    return 0
