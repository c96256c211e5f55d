"""Shape + texture against texture only (DeepSTD's decoupling), measured at the same file size.

    python benchmarks/shape_ablation.py [SCAN ...] [--template T.nii.gz] [--ratios 128 256]
                                        [--steps 2500] [--order 3]

For each scan (defaults: the held-out 512x512 chest and 1.5 mm chest) and ratio it prints, in one
run, MAE / SSIM of:
- texture only: the deepstd codec on the scan;
- shape + texture: the scan registered to the template (affine + cycle-consistent SIREN), warped
  into the template frame, coded by the same deepstd codec with the budget left after the shape
  code, decoded and warped back;
- the warp round trip alone (no coding): what resampling costs before any bit is spent;
and the encode/decode time split between shape and texture. The texture codec's refinement network
was trained on scans in their own frames, not on template-aligned ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
from dstdformat.codecs.deepstd.shape.section import decode_shape, encode_shape, quantize_in_place
from dstdformat.container.writer import encode_volume
from dstdformat.io import read_scan
from dstdformat.metrics import mae, ssim
from dstdformat.model.deformation import AffineMap, CycleDeformation, VolumeFrame
from dstdformat.model.registration import RegistrationConfig, register
from dstdformat.model.warp import CoarseField, inverse_field, resample, texture_frame

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

HELD_OUT = ["itkelastix_chest_512.nii.gz", "totalseg_chest_1p5mm.nii.gz"]


def _code(array: np.ndarray, ratio: float) -> tuple[np.ndarray, int, float, float]:
    """deepstd at ``ratio``: decoded array, file bytes, encode s, decode s."""
    started = time.perf_counter()
    data = encode_volume(array, codec=DeepSTDVolumeCodec(ratio=ratio))
    encoded = time.perf_counter()
    decoded = dstdformat.open(data).read()
    return decoded, len(data), encoded - started, time.perf_counter() - encoded


def _to_int16(volume: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint(volume.numpy()), -32768, 32767).astype(np.int16)


def warp_back(
    texture: np.ndarray, shape_code: bytes, frame: VolumeFrame, texture_at: VolumeFrame, order: int | str
) -> tuple[np.ndarray, float]:
    """The decoder's side of the shape: decode the section, rebuild phi, warp the texture back."""
    started = time.perf_counter()
    affine, config, state = decode_shape(shape_code)
    decoded = CycleDeformation(AffineMap.from_array(affine), config)
    decoded.forward_net.load_state_dict(state)
    field = CoarseField(decoded.to_template, frame)
    out = _to_int16(
        resample(torch.from_numpy(texture.astype(np.float32)), texture_at, field, frame, order=order)
    )
    return out, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scans", nargs="*", type=Path)
    parser.add_argument("--template", type=Path, default=SHARED / "elastix_lung_baseline.nii.gz")
    parser.add_argument("--ratios", nargs="+", type=float, default=[128.0, 256.0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument(
        "--order",
        default="3",
        choices=("1", "3", "keys"),
        help="resampling: trilinear, cubic B-spline, or local cubic convolution",
    )
    parser.add_argument(
        "--cycle-weight",
        type=float,
        default=RegistrationConfig.cycle_weight,
        help="weight of the cycle term (mm^2); the paper's 0.001 by default",
    )
    parser.add_argument(
        "--inverse",
        choices=("fixed-point", "network"),
        default="fixed-point",
        help="how the encoder inverts phi: the backward SIREN alone, or refined "
        "by fixed-point iteration on the decoder's field",
    )
    args = parser.parse_args()
    args.order = args.order if args.order == "keys" else int(args.order)
    scans = args.scans or [SHARED / name for name in HELD_OUT]
    template = read_scan(args.template)
    rows = []
    for path in scans:
        scan = read_scan(path)
        original = scan.array
        spacing = tuple(float(s) for s in scan.metadata.spacing)
        frame = VolumeFrame(original.shape, spacing)  # type: ignore[arg-type]
        print(f"{path.name} {original.shape}: registering to {args.template.name}", flush=True)
        started = time.perf_counter()
        fit = register(
            original,
            spacing,
            template.array,
            template.metadata.spacing,
            RegistrationConfig(steps=args.steps, cycle_weight=args.cycle_weight),
        )
        deformation = fit.deformation
        quantize_in_place(deformation.forward_net)
        shape_code = encode_shape(deformation.affine.as_array(), deformation.forward_net)
        phi = CoarseField(deformation.to_template, frame)
        texture_at = texture_frame(phi, frame, deformation.affine.as_array()[:, :3])
        linear = deformation.affine.as_array()[:, :3]
        psi = (
            inverse_field(phi, texture_at, deformation.to_scan, linear)
            if args.inverse == "fixed-point"
            else CoarseField(deformation.to_scan, texture_at)
        )
        texture = _to_int16(
            resample(torch.from_numpy(original.astype(np.float32)), frame, psi, texture_at, order=args.order)
        )
        shape_encode_s = time.perf_counter() - started

        round_trip, _ = warp_back(texture, shape_code, frame, texture_at, args.order)
        rows.append(
            (
                path.name,
                "-",
                "warp round trip, no coding",
                mae(original, round_trip),
                ssim(original, round_trip),
                "",
                "",
            )
        )
        print(
            f"  NCC {fit.ncc_start:.3f} -> affine {fit.ncc_affine:.3f} -> {fit.ncc_final:.3f}, "
            f"folding {fit.folding_fraction:.4f}, cycle {fit.cycle_error_mm:.2f} mm, "
            f"shape code {len(shape_code)} B, texture grid {texture_at.shape}, "
            f"shape encode {shape_encode_s:.1f} s",
            flush=True,
        )
        for ratio in args.ratios:
            alone, nbytes, enc_s, dec_s = _code(original, ratio)
            rows.append(
                (
                    path.name,
                    f"{original.nbytes / nbytes:.1f}",
                    "texture only",
                    mae(original, alone),
                    ssim(original, alone),
                    f"{enc_s:.1f}",
                    f"{dec_s:.1f}",
                )
            )
            budget = original.nbytes / ratio - len(shape_code)
            coded, texture_bytes, t_enc, t_dec = _code(texture, texture.nbytes / budget)
            restored, warp_s = warp_back(coded, shape_code, frame, texture_at, args.order)
            total = texture_bytes + len(shape_code)
            rows.append(
                (
                    path.name,
                    f"{original.nbytes / total:.1f}",
                    f"shape + texture (shape {100 * len(shape_code) / total:.1f}% of bytes)",
                    mae(original, restored),
                    ssim(original, restored),
                    f"{shape_encode_s:.1f} + {t_enc:.1f}",
                    f"{warp_s:.1f} + {t_dec:.1f}",
                )
            )
            print(f"  {ratio:g}x done", flush=True)

    print(
        "\n| scan | ratio | codec | MAE HU | SSIM | encode s (shape + texture) | decode s (shape + texture) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, ratio, label, err, score, enc, dec in rows:
        print(f"| {name} | {ratio} | {label} | {err:.2f} | {score:.4f} | {enc} | {dec} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
