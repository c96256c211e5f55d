"""Store a CT scan in zarr with the DeepSTD codec (both zarr formats) and read parts back lazily.

python examples/zarr_deepstd.py [SCAN.nii.gz]   # default: the scan bundled with dstdformat
"""

from __future__ import annotations

import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import zarr

import dstdformat


def main(source: str | None) -> None:
    if source is None:
        source = str(resources.files("dstdformat") / "data" / "totalseg_abdomen_3mm.nii.gz")
    scan = dstdformat.read_scan(source)
    ct = scan.array
    chunks = (64, *ct.shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        # zarr v2 format: a numcodecs compressor.
        v2 = zarr.open(
            str(Path(tmp) / "v2.zarr"),
            mode="w",
            shape=ct.shape,
            chunks=chunks,
            dtype="int16",
            compressor=dstdformat.DeepSTD(ratio=64),
            zarr_format=2,
        )
        v2[:] = ct
        # zarr v3 format: an array-to-bytes codec.
        v3 = zarr.create_array(
            Path(tmp) / "v3.zarr",
            shape=ct.shape,
            chunks=chunks,
            dtype="int16",
            serializer=dstdformat.DeepSTDCodec(ratio=64),
            compressors=None,
        )
        v3[:] = ct
        for name in ("v2", "v3"):
            stored = sum(p.stat().st_size for p in (Path(tmp) / f"{name}.zarr").rglob("*") if p.is_file())
            middle = zarr.open_array(Path(tmp) / f"{name}.zarr", mode="r")[ct.shape[0] // 2]
            error = np.abs(middle.astype(float) - ct[ct.shape[0] // 2]).mean()
            print(f"zarr {name}: {ct.nbytes / stored:.1f}x, middle slice mean error {error:.1f} HU")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
