"""Speed of the deepstd codec on a 512x512x300 CT volume, against SPERR alone, in one run.

    python benchmarks/deepstd_speed.py [SCAN.nii.gz] [--ratio 256] [--slices 300]

The default scan is the shared 512x512x141 chest; it is mirrored along the slice axis up to
``--slices`` slices (real anatomy, the size the issue asks about). Prints wall times and MB/s of
encode, full decode, one axial slice read (cold, from a freshly opened file) and a 64-slice block,
for deepstd on its AV1 base layer (with its refinement, read without it, coded without a model),
deepstd on the SPERR base it had before, and SPERR on the whole volume, each also as a ratio
against SPERR's. Uses every core torch is allowed (``torch.get_num_threads()``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
from dstdformat.io import read_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, mirror_slices, timed  # noqa: E402


def volume_of(path: Path, slices: int) -> np.ndarray:
    return mirror_slices(read_scan(path).array, slices)


def measure_dstd(
    volume: np.ndarray, path: Path, ratio: float, model: str | None, base: str, refine: bool = True
):
    """(ratio, encode s, full decode s, one-slice s, 64-slice s) of deepstd at ``ratio``;
    ``refine=False`` reads the same file without the refinement."""
    codec = DeepSTDVolumeCodec(ratio=ratio, model=model, base=base)
    _, enc = timed(lambda: dstdformat.save(volume, path, codec=codec))
    if model is not None and refine:  # load the network once, outside the timings
        dstdformat.open(path)[0, :1, :1]
    _, dec = timed(lambda: dstdformat.open(path).read(refine=refine))
    _, one_slice = timed(lambda: _slice(path, volume.shape, refine))
    _, block = timed(
        lambda: dstdformat.open(path).read_region(
            (slice(100, 164), slice(0, volume.shape[1]), slice(0, volume.shape[2])), refine=refine
        )
    )
    return volume.nbytes / path.stat().st_size, enc, dec, one_slice, block


def _slice(path: Path, shape: tuple[int, ...], refine: bool) -> np.ndarray:
    z = shape[0] // 2
    return dstdformat.open(path).read_region(
        (slice(z, z + 1), slice(0, shape[1]), slice(0, shape[2])), refine=refine
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scan", nargs="?", type=Path, default=SHARED / "itkelastix_chest_512.nii.gz")
    parser.add_argument("--ratio", type=float, default=256.0)
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    if not args.scan.exists():
        print(f"{args.scan} not found (pass a scan)", file=sys.stderr)
        return 1
    import imagecodecs
    import torch

    volume = volume_of(args.scan, args.slices)
    mb = volume.nbytes / 1e6
    print(
        f"volume {volume.shape} {volume.dtype} ({mb:.0f} MB), target {args.ratio:g}x, "
        f"torch threads {torch.get_num_threads()}"
    )

    clipped = np.clip(volume, -1024, 3071).astype(np.float64)
    stream, sperr_enc = timed(lambda: imagecodecs.sperr_encode(clipped, 16.0 / args.ratio, "bpp"))
    _, sperr_dec = timed(lambda: imagecodecs.sperr_decode(stream))
    rows = [("SPERR (whole volume)", volume.nbytes / len(stream), sperr_enc, sperr_dec, None, None)]

    with tempfile.TemporaryDirectory() as tmp:
        for label, model, base, refine in (
            ("deepstd, AV1 base + refinement (opt-in)", "default", "auto", True),
            ("the same file, read(refine=False)", "default", "auto", False),
            ("deepstd as shipped (AV1 base, no refinement)", None, "av1", True),
            ("deepstd, SPERR base (before)", "default", "sperr", True),
            ("deepstd, SPERR base, no model", None, "sperr", True),
        ):
            rows.append((label, *measure_dstd(volume, Path(tmp) / "v.dstd", args.ratio, model, base, refine)))

    print(
        "\n| codec | ratio | encode s (MB/s) | decode s (MB/s) | decode vs SPERR | one slice s "
        "| 64 slices s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, ratio, enc, dec, one, block in rows:
        print(
            f"| {label} | {ratio:.1f} | {enc:.1f} ({mb / enc:.1f}) | {dec:.1f} ({mb / dec:.1f}) | "
            f"{dec / sperr_dec:.1f}x | {'-' if one is None else f'{one:.2f}'} | "
            f"{'-' if block is None else f'{block:.2f}'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
