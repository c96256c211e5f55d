"""Write the golden files of the current format version (once; released versions are frozen).

python spec/make_golden.py                   # refuses if spec/golden/v<major>.<minor> exists
python spec/make_golden.py --codec deepstd   # spec/golden/deepstd-v<version>, likewise frozen
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import dstdformat
from dstdformat.container.format import FORMAT_MAJOR, FORMAT_MINOR
from dstdformat.io import read_scan

HERE = Path(__file__).resolve().parent
BUNDLED = HERE.parent / "dstdformat" / "data" / "totalseg_abdomen_3mm.nii.gz"


def decoded_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def golden_arrays() -> dict[str, tuple[np.ndarray, dict, dict]]:
    """name -> (array, save() keyword arguments, description)."""
    scan = read_scan(BUNDLED)
    crop = scan.array[40:64, 30:70, 41:81]
    origin = scan.affine @ np.array([40, 30, 41, 1.0])
    affine = scan.affine.copy()
    affine[:3, 3] = origin[:3]
    ramp = (np.arange(5 * 6 * 7) % 251).astype(np.uint8).reshape(5, 6, 7)
    specials = np.linspace(-1000, 3000, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    specials.flat[[0, 7, 11, 19]] = [np.nan, np.inf, -np.inf, -0.0]
    rng = np.random.default_rng(20261125)
    single = rng.integers(0, 4096, size=(1, 17, 23), dtype=np.uint16)
    return {
        "int16_ct_crop": (
            crop,
            {
                "affine": affine,
                "modality": "CT",
                "slope": 1.0,
                "intercept": 0.0,
                "original_dtype": "int16",
                "attributes": {
                    "source": "TotalSegmentator example_ct (Apache-2.0), crop [40:64, 30:70, 41:81]"
                },
                "tile_shape": (8, 16, 16),
            },
            "real CT crop, several tiles, edge tiles clipped, oblique-free affine",
        ),
        "uint8_ramp": (ramp, {"spacing": (2.5, 0.5, 0.5)}, "tiny ramp, one tile"),
        "float32_specials": (
            specials,
            {"spacing": (1, 1, 1), "tile_shape": (2, 5, 3)},
            "NaN, +-inf and -0.0 kept bit for bit",
        ),
        "uint16_single_slice": (
            single,
            {"spacing": (3, 0.7, 0.7), "slope": 1.0, "intercept": -1024.0, "tile_shape": (1, 8, 8)},
            "one slice, 3x3 tiles with clipped edges",
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--codec",
        choices=("lossless", "deepstd", "predictive"),
        default="lossless",
        help="lossless: the container's golden set; deepstd, predictive: that codec's",
    )
    args = parser.parse_args()
    if args.codec == "deepstd":
        return make_deepstd(args.out)
    if args.codec == "predictive":
        return make_predictive(args.out)
    args.out = args.out or HERE / "golden" / f"v{FORMAT_MAJOR}.{FORMAT_MINOR}"
    if args.out.exists():
        print(f"{args.out} exists: golden files of a released version are frozen", file=sys.stderr)
        return 1
    (args.out / "invalid").mkdir(parents=True)
    manifest = {"format_version": [FORMAT_MAJOR, FORMAT_MINOR], "valid": [], "invalid": []}
    for name, (array, kwargs, description) in golden_arrays().items():
        path = args.out / f"{name}.dstd"
        dstdformat.save(array, path, codec="lossless", **kwargs)
        volume = dstdformat.open(path)
        manifest["valid"].append(
            {
                "file": path.name,
                "description": description,
                "shape": list(array.shape),
                "dtype": array.dtype.name,
                "sha256": decoded_sha256(array),
                "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "metadata": volume.header["metadata"],
            }
        )
    good = (args.out / "int16_ct_crop.dstd").read_bytes()
    invalid = {
        "truncated.dstd": (good[: len(good) // 2], "cut in half"),
        "wrong_magic.dstd": (b"\x89NIFTI\r\n" + good[8:], "magic replaced"),
        "section_bitflip.dstd": (_flip(good, len(good) // 2), "one bit flipped inside a section"),
        "future_major.dstd": (_major(good, FORMAT_MAJOR + 1), f"format major version {FORMAT_MAJOR + 1}"),
        "json_header.dstd": (_json_header(good), "a format 2 preamble over a header stored as plain JSON"),
    }
    for name, (data, why) in invalid.items():
        (args.out / "invalid" / name).write_bytes(data)
        manifest["invalid"].append({"file": f"invalid/{name}", "description": why})
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest['valid'])} valid and {len(invalid)} invalid files to {args.out}")
    return 0


def make_deepstd(out: Path | None) -> int:
    """Golden files of the deepstd codec: exact ones (no refinement) and refined ones with a
    reference array and the tolerance other hardware may need."""
    from dstdformat.codecs.deepstd import DeepSTDVolumeCodec

    scan, crop, padded = _crops()
    if DeepSTDVolumeCodec.codec_version == 4:
        cases = _av1_cases(scan, crop, padded)
    elif DeepSTDVolumeCodec.codec_version == 3:
        cases = _shape_cases(scan, crop)
    else:
        cases = _texture_cases(crop, padded)
    return _write_codec_set(out, "deepstd", DeepSTDVolumeCodec.codec_version, cases, scan.spacing)


def make_predictive(out: Path | None) -> int:
    """Golden files of the predictive codec (all exact or within their bound, bit for bit)."""
    from dstdformat.codecs.predictive import PredictiveCodec

    scan, crop, padded = _crops()
    cases = _predictive_cases(crop, padded)
    return _write_codec_set(out, "predictive", PredictiveCodec.codec_version, cases, scan.spacing)


def _predictive_cases(crop, padded) -> dict:
    """Lossless and bounded, inter-slice and 2D, odd tiles, int16 extremes; since version 2 (bare
    JPEG-LS streams in compact records) also JPEG-LS alone on 8-bit planes."""
    from dstdformat.codecs.predictive import PredictiveCodec

    rng = np.random.default_rng(24)
    extremes = np.where(rng.random((9, 20, 24)) < 0.5, -32768, 32767).astype(np.int16)
    extremes[:, :8] = 7  # a constant part: planes of length 0
    return {
        "predictive_lossless": (
            np.ascontiguousarray(crop[:20, 8:40, 8:48]),
            PredictiveCodec(),
            None,
            "CT crop, lossless, planes predicted across slices, 3 tiles (the last 4 deep)",
        ),
        "predictive_max_error4": (
            np.ascontiguousarray(padded[12:36]),
            PredictiveCodec(max_error=4),
            (5, 40, 48),
            "max_error 4 over 20 tiles of odd sizes, -2048 padding and metal",
        ),
        "predictive_uint8_2d": (
            np.clip(crop[:16, :32, :40] // 8 + 128, 0, 255).astype(np.uint8),
            PredictiveCodec(inter_slice=False),
            None,
            "uint8, every slice on its own (inter_slice false)",
        ),
        "predictive_int16_extremes": (
            extremes,
            PredictiveCodec(),
            (4, 20, 24),
            "int16 extremes beside a constant part, lossless",
        ),
        "predictive_jpegls_uint8": (
            np.clip(crop[:12, :40, :48] // 4 + 100, 0, 255).astype(np.uint8),
            PredictiveCodec(max_error=2, plane_coders=["jpegls"]),
            None,
            "uint8, JPEG-LS alone within 2: bare 8-bit streams",
        ),
    }


def _crops():
    scan = read_scan(BUNDLED)
    crop = np.ascontiguousarray(scan.array[30:78, 20:84, 25:97])
    padded = crop.copy()
    padded[:, :6] = -2048  # padding outside the field of view: stored exactly
    padded[20, 30:32, 40:42] = 5000  # metal
    return scan, crop, padded


def _write_codec_set(out: Path | None, codec_id: str, version: int, cases: dict, spacing) -> int:
    out = out or HERE / "golden" / f"{codec_id}-v{version}"
    if out.exists():
        print(f"{out} exists: golden files of a released codec version are frozen", file=sys.stderr)
        return 1
    out.mkdir(parents=True)
    manifest = {"codec": codec_id, "codec_version": version, "valid": [], "invalid": []}
    for name, (array, codec, tile_shape, description) in cases.items():
        path = out / f"{name}.dstd"
        dstdformat.save(array, path, codec=codec, tile_shape=tile_shape, spacing=spacing, modality="CT")
        volume = dstdformat.open(path)
        decoded = volume.read()
        item = {
            "file": path.name,
            "description": description,
            "shape": list(array.shape),
            "dtype": array.dtype.name,
            "sha256": decoded_sha256(decoded),
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "metadata": volume.header["metadata"],
        }
        # The refinement and the warp are floating point: other hardware may differ by a unit.
        if volume.header["codec"]["model"] is not None or "texture" in volume.header["codec"]["state"]:
            np.save(out / f"{name}.reference.npy", decoded, allow_pickle=False)
            item["tolerance"] = {
                "reference": f"{name}.reference.npy",
                "max_abs": 1,
                "max_differing_fraction": 0.001,
            }
        manifest["valid"].append(item)
    good = (out / f"{next(iter(cases))}.dstd").read_bytes()
    (out / "invalid").mkdir()
    for name, (data, why) in {
        f"{codec_id}_bitflip.dstd": (_flip(good, len(good) // 2), "one bit flipped inside a section"),
        f"{codec_id}_truncated.dstd": (good[: len(good) - 40], "footer cut off"),
    }.items():
        (out / "invalid" / name).write_bytes(data)
        manifest["invalid"].append({"file": f"invalid/{name}", "description": why})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest['valid'])} valid and {len(manifest['invalid'])} invalid files to {out}")
    return 0


def _shape_cases(scan, crop) -> dict:
    """Version 3: a shape-coded file (the shipped template) and one that fell back."""
    from dstdformat.codecs.deepstd import DeepSTDVolumeCodec

    body = np.ascontiguousarray(scan.array[20:68, 10:90, 15:105])  # enough anatomy to register
    return {
        "deepstd_shape_ratio32": (
            body,
            DeepSTDVolumeCodec(ratio=32, shape="default", shape_policy="always", shape_steps=200),
            None,
            "abdomen crop at 32x, shape-coded against the shipped template (texture grid, "
            "shape section, refinement)",
        ),
        "deepstd_shape_fallback": (
            crop,
            DeepSTDVolumeCodec(ratio=32, model=None, shape="default", shape_steps=200),
            None,
            "shape asked for, too far from the template: texture only, the reason in the header",
        ),
    }


def _av1_cases(scan, crop, padded) -> dict:
    """Version 4: the AV1 base layer, alone, with exact voxels, refined, and shape-coded."""
    from dstdformat.codecs.deepstd import DeepSTDVolumeCodec

    body = np.ascontiguousarray(scan.array[20:68, 10:90, 15:105])
    return {
        "deepstd_av1_ratio64": (
            crop,
            DeepSTDVolumeCodec(ratio=64, model=None),
            (24, 64, 72),
            "CT crop at 64x, AV1 base layer only (decodes bit-exactly), 2 tiles",
        ),
        "deepstd_av1_outliers": (
            padded,
            DeepSTDVolumeCodec(ratio=16, model=None, base="av1"),
            (16, 40, 48),
            "AV1 at 16x over 12 tiles of odd in-plane sizes "
            "(frames padded to 8), -2048 padding and metal stored exactly",
        ),
        "deepstd_av1_refined": (
            crop,
            DeepSTDVolumeCodec(ratio=64, model="deepstd-refine-v1"),
            None,
            "CT crop at 64x, AV1 base layer + the bundled refinement model",
        ),
        "deepstd_av1_shape": (
            body,
            DeepSTDVolumeCodec(
                ratio=32, model=None, base="av1", shape="default", shape_policy="always", shape_steps=200
            ),
            None,
            "abdomen crop at 32x, shape-coded, AV1 texture",
        ),
        "deepstd_av1_quality40": (
            crop,
            DeepSTDVolumeCodec(quality=40, model=None),
            None,
            "quality 40 dB: every tile's CRF searched, AV1 only",
        ),
    }


def _texture_cases(crop, padded) -> dict:
    """Version 2 (frozen): texture-only files."""
    from dstdformat.codecs.deepstd import DeepSTDVolumeCodec

    return {
        "deepstd_ratio64_refined": (
            crop,
            DeepSTDVolumeCodec(ratio=64),
            (24, 64, 72),
            "CT crop at 64x with the bundled refinement model, 2 tiles",
        ),
        "deepstd_max_error_outliers": (
            padded,
            DeepSTDVolumeCodec(max_error=25),
            (16, 32, 40),
            "max_error 25 HU, -2048 padding and metal stored exactly",
        ),
        "deepstd_quality45": (
            crop,
            DeepSTDVolumeCodec(quality=45, model=None),
            None,
            "quality 45 dB, wavelet layer only",
        ),
    }


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _major(data: bytes, major: int) -> bytes:
    return data[:8] + major.to_bytes(2, "little") + data[10:]


def _json_header(data: bytes) -> bytes:
    """``data`` (a format 2 file) with its header stored inflated, every checksum and offset made
    right again (by the fuzzer's resealing reassembly): only the header's packing is wrong."""
    sys.path.insert(0, str(HERE.parent / "fuzz"))
    from fuzzing import FileParts

    parts = FileParts.parse(data)
    return dataclasses.replace(parts, stored_header=parts.header).assemble()


if __name__ == "__main__":
    sys.exit(main())
