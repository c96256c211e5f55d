"""sha256 of the bytes this code writes for the golden inputs and, where ``../shared`` is present,
a shared chest scan at 128x and 256x: a refactoring that claims "behaviour unchanged" must print
the same list before and after.

    python spec/encoded_hashes.py [--shared-scan PATH] > hashes.txt
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

import dstdformat
from dstdformat.io import read_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_golden  # noqa: E402

SHARED_SCAN = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "ct"
    / "lungpetctdx"
    / "lungpetctdx_a0002_siemens_8mm_B40f.nii.gz"
)


def _cases() -> dict[str, tuple[np.ndarray, object, tuple | None, dict]]:
    """name -> (array, codec, tile shape, metadata) for every golden input of every version."""
    scan = read_scan(make_golden.BUNDLED)
    crop = np.ascontiguousarray(scan.array[30:78, 20:84, 25:97])
    padded = crop.copy()
    padded[:, :6] = -2048
    padded[20, 30:32, 40:42] = 5000
    meta = {"spacing": scan.spacing, "modality": "CT"}
    cases = {}
    for name, (array, kwargs, _) in make_golden.golden_arrays().items():
        kwargs = dict(kwargs)
        tile = kwargs.pop("tile_shape", None)
        cases[f"lossless/{name}"] = (array, "lossless", tile, kwargs)
    for group in (
        make_golden._texture_cases(crop, padded),
        make_golden._shape_cases(scan, crop),
        make_golden._av1_cases(scan, crop, padded),
        make_golden._predictive_cases(crop, padded),
    ):
        for name, (array, codec, tile, _) in group.items():
            cases[name] = (array, codec, tile, meta)
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared-scan", type=Path, default=SHARED_SCAN)
    args = parser.parse_args()
    from dstdformat.codecs.deepstd import DeepSTDVolumeCodec

    cases = _cases()
    if args.shared_scan.exists():
        shared = read_scan(args.shared_scan)
        for ratio in (128, 256):
            for base, model in (("auto", None), ("sperr", "default")):
                codec = DeepSTDVolumeCodec(ratio=ratio, base=base, model=model)
                cases[f"{args.shared_scan.name}/{ratio}x/{base}"] = (
                    shared.array,
                    codec,
                    None,
                    {"spacing": shared.spacing},
                )
    else:
        print(f"# {args.shared_scan} absent: golden inputs only", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        for name, (array, codec, tile, meta) in cases.items():
            path = Path(folder) / "case.dstd"
            dstdformat.save(array, path, codec=codec, tile_shape=tile, **meta)
            print(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
