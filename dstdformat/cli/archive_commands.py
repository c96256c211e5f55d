"""``dstd archive``, ``dstd restore`` and the archive form of ``dstd verify``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import InvalidInputError
from .codec_flags import add_codec_flags, codec_options
from .format import human_bytes

#: Exit status of a run that finished but could not archive (or restore) some scans.
EXIT_SOME_FAILED = 3


def _options(text: str | None, flag: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{flag} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{flag} must be a JSON object, got {text!r}")
    return value


def add_parsers(add) -> None:
    p = add(
        "archive",
        "archive a collection of CT scans (folder, glob or URL of NIfTI, HDF5 and "
        "DICOM series) into DEST in parallel on dask; re-running resumes",
    )
    p.add_argument("source", help="folder (searched recursively), glob or fsspec URL of the scans")
    p.add_argument("destination", help="archive folder or fsspec URL (e.g. s3://bucket/prefix)")
    add_codec_flags(p, ("deepstd", "predictive", "lossless"), "deepstd")
    p.add_argument(
        "--zarr",
        action="store_true",
        help="one zarr group (DEST/scans.zarr, v3, DeepSTD chunks) instead of .dstd files",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local worker processes (default: one per GPU, else one per core as memory allows)",
    )
    p.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on an existing dask.distributed cluster (tcp://host:8786)"
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads per worker (default: the cores shared out among the local "
        "workers; with --scheduler: the workers' own setting)",
    )
    p.add_argument("--storage-options", metavar="JSON", help="fsspec options for DEST")
    p.add_argument("--source-options", metavar="JSON", help="fsspec options for the source")
    p.set_defaults(func=archive)

    p = add("restore", "decode every scan of an archive into NIfTI files (OUTDIR/<name>.nii.gz)")
    p.add_argument("destination", help="archive folder or fsspec URL")
    p.add_argument("output", help="local folder for the NIfTI files")
    p.add_argument("--names", nargs="+", metavar="NAME", help="only these scans")
    p.add_argument("--overwrite", action="store_true", help="rewrite files already in OUTDIR")
    p.add_argument("--workers", type=int, metavar="N", help="local worker processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler address")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec options for the archive")
    p.set_defaults(func=restore)


def archive(args: argparse.Namespace) -> int:
    from ..archive import archive_collection

    options = codec_options(args)
    summary = archive_collection(
        args.source,
        args.destination,
        codec=args.codec,
        codec_options=options,
        zarr=args.zarr,
        workers=args.workers,
        scheduler=args.scheduler,
        threads=args.threads,
        storage_options=_options(args.storage_options, "--storage-options"),
        source_options=_options(args.source_options, "--source-options"),
        progress=not args.quiet,
    )
    if not args.quiet:
        print(archive_text(summary))
    return EXIT_SOME_FAILED if summary.failed else 0


def archive_text(summary) -> str:
    lines = [
        f"archived {summary.archived} of {summary.found} scans into {summary.archive} "
        f"({summary.already_done} already done, {len(summary.failed)} failed) in "
        f"{summary.seconds:.1f} s on {summary.cluster}"
    ]
    if summary.archived:
        rate = summary.raw_bytes / summary.seconds if summary.seconds else 0.0
        lines.append(
            f"  voxels {human_bytes(summary.raw_bytes)} (source files "
            f"{human_bytes(summary.source_bytes)}) -> {human_bytes(summary.dest_bytes)} "
            f"stored, {summary.ratio:.1f}x; {human_bytes(rate)}/s of voxels"
        )
    for record in summary.failed:
        lines.append(f"  failed: {record['name']} ({record['source']}): {record.get('error')}")
    if summary.ignored:
        lines.append(f"  not scans, skipped: {len(summary.ignored)} file(s), e.g. {summary.ignored[0]}")
    return "\n".join(lines)


def verify(args: argparse.Namespace) -> int:
    from ..archive import verify_archive

    summary = verify_archive(
        args.file,
        decode=args.decode,
        storage_options=_options(args.storage_options, "--storage-options"),
        workers=args.workers,
        progress=not args.quiet,
        clean=args.clean,
    )
    for note in summary.notes:
        print(f"{args.file}: note: {note}")
    for record in summary.failed_records:
        print(f"{args.file}: not archived: {record['name']}: {record.get('error')}")
    if summary.ok:
        decoded = f", {summary.decoded} decoded to the recorded voxels" if args.decode else ""
        print(
            f"{args.file}: OK ({summary.checked} scans, {human_bytes(summary.bytes_checked)} "
            f"checked against the catalog{decoded})"
        )
        return 0
    for problem in summary.problems:
        print(f"{args.file}: FAILED: {problem}")
    return 1


def restore(args: argparse.Namespace) -> int:
    from ..archive import restore_archive

    summary = restore_archive(
        args.destination,
        args.output,
        names=args.names,
        overwrite=args.overwrite,
        workers=args.workers,
        scheduler=args.scheduler,
        storage_options=_options(args.storage_options, "--storage-options"),
        progress=not args.quiet,
    )
    if not args.quiet:
        print(
            f"restored {summary.restored} scans into {summary.output} "
            f"({human_bytes(summary.bytes_written)}, {summary.already_there} already there) in "
            f"{summary.seconds:.1f} s"
        )
    for name, error in summary.failed:
        print(f"failed: {name}: {error}")
    return EXIT_SOME_FAILED if summary.failed else 0
