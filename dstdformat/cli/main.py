"""``dstd``: compress, decompress, inspect and verify CT volumes; user errors are one line, no trace."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .._version import __version__
from ..errors import DstdError
from . import archive_commands, commands, train_commands
from .codec_flags import add_codec_flags

#: Adds a subcommand with the options every command has; returns its parser.
AddCommand = Callable[[str, str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dstd", description="Store CT volumes in .dstd files and read them back."
    )
    parser.add_argument("--version", action="version", version=f"dstd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries")
        return p

    _add_compress(add)
    _add_to_zarr(add)
    _add_from_zarr(add)
    _add_decompress(add)
    _add_info(add)
    _add_verify(add)
    archive_commands.add_parsers(add)
    _add_bench(add)
    train_commands.add_parser(add)
    _add_demo(add)
    return parser


def _add_compress(add: AddCommand) -> None:
    from ..codecs.registry import available_codecs

    p = add("compress", "compress a NIfTI / DICOM series / HDF5 / .npy / .dstd volume into .dstd")
    p.add_argument("input", help="input file, DICOM folder, or .dstd (path or URL)")
    p.add_argument("output", help="output .dstd path or fsspec URL")
    add_codec_flags(p, available_codecs(), "deepstd")
    p.add_argument(
        "--tile",
        type=int,
        nargs=3,
        metavar=("K", "J", "I"),
        help="tile shape in voxels (default: the codec's choice)",
    )
    p.add_argument("--dataset", help="HDF5 dataset to read (default: the only 3D dataset)")
    p.add_argument("--force", "-f", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=commands.compress)


def _add_to_zarr(add: AddCommand) -> None:
    p = add("to-zarr", "convert a scan into a zarr group (OME-Zarr layout) with DeepSTD chunks")
    p.add_argument("input", help="NIfTI / DICOM folder / HDF5 / .npy / .dstd (path or URL)")
    p.add_argument("output", help="output zarr store (folder or fsspec URL)")
    p.add_argument(
        "--format",
        type=int,
        choices=(2, 3),
        default=3,
        dest="zarr_format",
        help="zarr format: 3 (serializer=DeepSTDCodec, default) or 2 (compressor=DeepSTD)",
    )
    p.add_argument(
        "--chunks",
        type=int,
        nargs=3,
        metavar=("K", "J", "I"),
        help="chunk shape (default 64 512 512, clipped to the volume)",
    )
    add_codec_flags(p, None, "deepstd")  # the chunks are DeepSTD
    p.add_argument("--dataset", help="HDF5 dataset to read")
    p.add_argument("--force", "-f", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=commands.to_zarr)


def _add_from_zarr(add: AddCommand) -> None:
    from ..codecs.registry import available_codecs

    p = add("from-zarr", "turn a zarr group made by to-zarr back into .dstd, NIfTI, HDF5 or .npy")
    p.add_argument("input", help="zarr store (folder or fsspec URL) written by `dstd to-zarr`")
    p.add_argument("output", help="output file; its suffix picks the format (.dstd, .nii.gz, .h5, .npy)")
    p.add_argument(
        "--codec",
        choices=available_codecs(),
        help=".dstd output: codec (default: the voxels as the zarr decodes them, no further loss, "
        "coded predictive for integer scans of up to 16 bits, lossless (Blosc) otherwise)",
    )
    p.add_argument("--ratio", type=float, help=".dstd output with a lossy codec: target ratio")
    p.add_argument("--force", "-f", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=commands.from_zarr)


def _add_decompress(add: AddCommand) -> None:
    p = add("decompress", "decode a .dstd into NIfTI (.nii/.nii.gz), HDF5 (.h5) or .npy")
    p.add_argument("input", help=".dstd path or URL")
    p.add_argument("output", help="output file; its suffix picks the format")
    p.add_argument(
        "--no-refine",
        action="store_true",
        help="skip the learned refinement (deepstd): a faster, slightly coarser decode",
    )
    p.add_argument("--force", "-f", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=commands.decompress)


def _add_info(add: AddCommand) -> None:
    p = add("info", "print a .dstd file's header and layout")
    p.add_argument("file", help=".dstd path or URL")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(func=commands.info)


def _add_verify(add: AddCommand) -> None:
    p = add(
        "verify",
        "check every checksum and decode every tile of a .dstd file; or check an "
        "archive made by `dstd archive` against its catalog",
    )
    p.add_argument("file", help=".dstd path or URL, or an archive folder or URL")
    p.add_argument(
        "--decode",
        action="store_true",
        help="archive: also decode every scan and compare with the recorded voxels",
    )
    p.add_argument("--workers", type=int, metavar="N", help="archive --decode: local workers")
    p.add_argument("--storage-options", metavar="JSON", help="archive: fsspec options")
    p.add_argument(
        "--clean",
        action="store_true",
        help="archive: remove temporary files of killed writes (not during a run)",
    )
    p.set_defaults(func=commands.verify)


def _add_bench(add: AddCommand) -> None:
    from ..bench.archival import BOUNDED_CODECS, LOSSLESS_CODECS

    p = add("bench", "compare every codec at target ratios on CT volumes: metrics, speed, memory")
    p.add_argument("volumes", nargs="+", help="CT volumes (NIfTI, DICOM folder, HDF5, .npy)")
    p.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=[32, 64, 128, 256, 512],
        help="target compression ratios (default: 32 64 128 256 512)",
    )
    p.add_argument(
        "--codecs",
        nargs="+",
        default=None,
        help="codecs to compare (default: all): dstd-<id> for ours (and the variants "
        "dstd-deepstd-sperr, -sperr-bare, -refined), sperr, sz3, zfp, zfp-rate, htj2k, "
        "jpeg2000, jpegxl, av1, av1-deepstd-settings, hevc-12bit, hevc-10bit, vp9 "
        "(video codecs over the slice stack, through PyAV), zstd, blosc; BD-rate "
        "against SPERR and AV1 over 64x-512x goes into the report",
    )
    p.add_argument(
        "--tier",
        choices=("ratio", "lossless", "bounded"),
        default="ratio",
        help="ratio: lossy codecs at --ratios (default); lossless: every lossless codec "
        f"({', '.join(LOSSLESS_CODECS)}); bounded: every codec with a guaranteed maximum error "
        f"({', '.join(BOUNDED_CODECS)}) at --errors",
    )
    p.add_argument(
        "--errors",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8, 16],
        help="maximum errors in HU of --tier bounded (default: 1 2 4 8 16)",
    )
    p.add_argument("--out", default="bench-results", help="output folder (default: bench-results)")
    p.add_argument("--threads", type=int, help="threads for the 'all threads' runs (default: all)")
    p.add_argument(
        "--crop",
        type=int,
        nargs=3,
        metavar=("K", "J", "I"),
        help="benchmark a central crop of this size (quick runs)",
    )
    p.set_defaults(func=commands.bench)


def _add_demo(add: AddCommand) -> None:
    p = add("demo", "compress the bundled real CT scan, read one slice back lazily, print figures")
    p.add_argument("--out", help="folder for the demo's .dstd (default: a temporary folder)")
    p.set_defaults(func=commands.demo)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # bare `dstd`: the help, not a usage error
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DstdError as exc:
        print(f"dstd {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        name = exc.filename or str(exc)
        print(f"dstd {args.command}: error: no such file or directory: {name}", file=sys.stderr)
        return 1
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"dstd {args.command}: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dstd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
