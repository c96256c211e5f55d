"""The final shape ablation, through the codec itself: shape + texture against texture only.

    python benchmarks/shape_codec.py [SCAN ...] [--template default] [--ratios 128 256]
                                     [--models deepstd-refine-v1 [MODEL ...]] [--steps 2500]

For each held-out scan (defaults: the 512x512 chest, the 1.5 mm chest, the upper abdomen) and
ratio, in one run: the deepstd codec texture-only, and the same codec with ``shape=`` (policy
"always", so the shape is measured even where it loses) with each refinement model, e.g. the
shipped one and one fine-tuned on template-aligned scans (``dstd train --collection``). Prints
MAE / SSIM / achieved ratio, the share of the file the shape code takes, and the encode / decode
time split between shape and texture (DeepSTD's Fig. 2f). Registration runs once per scan.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
from dstdformat.codecs.deepstd.decoding import stored_window as _stored_window
from dstdformat.codecs.deepstd.shape import decode as shape_decode
from dstdformat.codecs.deepstd.shape import fit as shape_fit
from dstdformat.container.writer import encode_volume
from dstdformat.io import read_scan
from dstdformat.metadata import HU_WINDOW as DEFAULT_WINDOW
from dstdformat.metrics import mae, ssim
from dstdformat.zoo.registry import DEFAULT_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

HELD_OUT = [
    "itkelastix_chest_512.nii.gz",
    "totalseg_chest_1p5mm.nii.gz",
    "totalseg_upper_abdomen_dicom.nii.gz",
]


class _TextureTimer:
    """Seconds spent decoding the texture (wavelet + refinement) inside shape-coded reads."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._original = shape_decode.ShapeDecoder.texture_box
        timer = self

        def timed(decoder, *args, **kwargs):
            started = time.perf_counter()
            try:
                return timer._original(decoder, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - started

        shape_decode.ShapeDecoder.texture_box = timed  # type: ignore[method-assign]


def _code(scan, codec) -> tuple[np.ndarray, int, float, float, dict]:
    started = time.perf_counter()
    data = encode_volume(scan.array, codec=codec, metadata=scan.metadata)
    encoded = time.perf_counter()
    volume = dstdformat.open(data)
    out = volume.read()
    return out, len(data), encoded - started, time.perf_counter() - encoded, volume.header["codec"]["state"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scans", nargs="*", type=Path)
    parser.add_argument("--template", default="default", help="template id, 'default' or path")
    parser.add_argument("--ratios", nargs="+", type=float, default=[128.0, 256.0])
    parser.add_argument("--models", nargs="+", default=[DEFAULT_MODEL])
    parser.add_argument("--steps", type=int, default=2500, help="SIREN steps of the registration")
    args = parser.parse_args()
    scans = args.scans or [SHARED / name for name in HELD_OUT]
    timer = _TextureTimer()
    rows = []
    for path in scans:
        scan = read_scan(path)
        window = _stored_window(
            DEFAULT_WINDOW, scan.metadata.slope, scan.metadata.intercept, scan.array.dtype
        )  # as the codec computes it: the cache key
        print(f"{path.name} {scan.array.shape}: registering", flush=True)
        started = time.perf_counter()
        fit = shape_fit.fit_shape(
            scan.array,
            scan.metadata.spacing,
            scan.metadata.slope,
            scan.metadata.intercept,
            window,
            args.template,
            args.steps,
            DeepSTDVolumeCodec.preferred_tile_shape,
        )
        shape_s = time.perf_counter() - started
        if isinstance(fit, str):
            print(f"  texture only: {fit}")
            rows.append((path.name, "-", f"shape not usable: {fit}", "", "", "", "", ""))
        else:
            growth = np.prod(fit.texture.frame.shape) / scan.array.size
            print(
                f"  {fit.record}, texture grid {fit.texture.frame.shape} ({growth:.2f}x the "
                f"voxels), shape {shape_s:.1f} s",
                flush=True,
            )
        for ratio in args.ratios:
            out, size, enc, dec, _ = _code(scan, DeepSTDVolumeCodec(ratio=ratio))
            rows.append(
                (
                    path.name,
                    f"{scan.array.nbytes / size:.1f}",
                    "texture only",
                    mae(scan.array, out),
                    ssim(scan.array, out),
                    "",
                    f"{enc:.1f}",
                    f"{dec:.1f}",
                )
            )
            if isinstance(fit, str):
                continue
            for model in args.models:
                codec = DeepSTDVolumeCodec(
                    ratio=ratio,
                    model=model,
                    shape=args.template,
                    shape_policy="always",
                    shape_steps=args.steps,
                )
                timer.seconds = 0.0
                out, size, enc, dec, state = _code(scan, codec)
                share = 100.0 * state["shape"]["shape_bytes"] / size
                rows.append(
                    (
                        path.name,
                        f"{scan.array.nbytes / size:.1f}",
                        f"shape + texture, {model}",
                        mae(scan.array, out),
                        ssim(scan.array, out),
                        f"{share:.1f}%",
                        f"{shape_s:.1f} + {enc:.1f}",
                        f"{dec - timer.seconds:.1f} + {timer.seconds:.1f}",
                    )
                )
            print(f"  {ratio:g}x done", flush=True)

    print(
        "\n| scan | ratio | coding | MAE HU | SSIM | shape share of bytes "
        "| encode s (shape + texture) | decode s (shape + texture) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, ratio, label, err, score, share, enc, dec in rows:
        err = f"{err:.2f}" if isinstance(err, float) else err
        score = f"{score:.4f}" if isinstance(score, float) else score
        print(f"| {name} | {ratio} | {label} | {err} | {score} | {share} | {enc} | {dec} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
