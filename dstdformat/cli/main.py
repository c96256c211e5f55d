"""``dstd``: compress, decompress, inspect and verify CT volumes; user errors are one line, no trace."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import DstdError
from . import commands


def build_parser() -> argparse.ArgumentParser:
    from ..codecs.registry import available_codecs

    parser = argparse.ArgumentParser(
        prog="dstd", description="Store CT volumes in .dstd files and read them back.")
    parser.add_argument("--version", action="version", version=f"dstd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries")
        return p

    p = add("compress", "compress a NIfTI / DICOM series / HDF5 / .npy / .dstd volume into .dstd")
    p.add_argument("input", help="input file, DICOM folder, or .dstd (path or URL)")
    p.add_argument("output", help="output .dstd path or fsspec URL")
    p.add_argument("--codec", default="lossless", choices=available_codecs(),
                   help="codec (default: lossless)")
    p.add_argument("--ratio", type=float, help="target compression ratio (lossy codecs)")
    p.add_argument("--tile", type=int, nargs=3, metavar=("K", "J", "I"),
                   help="tile shape in voxels (default: the codec's choice)")
    p.add_argument("--dataset", help="HDF5 dataset to read (default: the only 3D dataset)")
    p.set_defaults(func=commands.compress)

    p = add("decompress", "decode a .dstd into NIfTI (.nii/.nii.gz), HDF5 (.h5) or .npy")
    p.add_argument("input", help=".dstd path or URL")
    p.add_argument("output", help="output file; its suffix picks the format")
    p.set_defaults(func=commands.decompress)

    p = add("info", "print a .dstd file's header and layout")
    p.add_argument("file", help=".dstd path or URL")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(func=commands.info)

    p = add("verify", "check every checksum and decode every tile of a .dstd file")
    p.add_argument("file", help=".dstd path or URL")
    p.set_defaults(func=commands.verify)

    p = add("bench", "compare every codec at target ratios on CT volumes: metrics, speed, memory")
    p.add_argument("volumes", nargs="+", help="CT volumes (NIfTI, DICOM folder, HDF5, .npy)")
    p.add_argument("--ratios", type=float, nargs="+", default=[32, 64, 128, 256, 512],
                   help="target compression ratios (default: 32 64 128 256 512)")
    p.add_argument("--codecs", nargs="+", default=None,
                   help="codecs to compare (default: all): dstd-<id> for ours, sperr, sz3, zfp, zfp-rate, "
                        "htj2k, jpeg2000, jpegxl, zstd, blosc")
    p.add_argument("--out", default="bench-results", help="output folder (default: bench-results)")
    p.add_argument("--threads", type=int, help="threads for the 'all threads' runs (default: all)")
    p.add_argument("--crop", type=int, nargs=3, metavar=("K", "J", "I"),
                   help="benchmark a central crop of this size (quick runs)")
    p.set_defaults(func=commands.bench)

    p = add("train", "train the learned texture model on CT volumes (resumes from --out)")
    p.add_argument("sources", nargs="+", help="NIfTI files, folders or globs")
    p.add_argument("--out", required=True, help="model folder (checkpoints, final weights)")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    p.add_argument("--batch", type=int, default=2, help="crops per step")
    p.add_argument("--crop", type=int, nargs=3, default=[64, 64, 64], metavar=("K", "J", "I"),
                   help="crop size in voxels, multiples of 32 (default 64 64 64)")
    p.add_argument("--lmbda", type=float, default=0.5,
                   help="rate-distortion trade-off (0.5: about 256x on chest CT)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude", nargs="*", default=[],
                   help="file names to keep out of training (held-out evaluation scans)")
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--latent-channels", type=int, default=64)
    p.add_argument("--hyper-channels", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(func=commands.train)

    p = add("demo", "compress the bundled real CT scan, read one slice back lazily, print figures")
    p.add_argument("--out", help="folder for the demo's .dstd (default: a temporary folder)")
    p.set_defaults(func=commands.demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
