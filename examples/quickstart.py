"""Compress a CT scan, inspect it without decoding, and read regions lazily.

python examples/quickstart.py [SCAN.nii.gz]   # default: the scan bundled with dstdformat
"""

from __future__ import annotations

import sys
import tempfile
from importlib import resources
from pathlib import Path

import dstdformat


def main(source: str | None) -> None:
    if source is None:
        source = str(resources.files("dstdformat") / "data" / "totalseg_abdomen_3mm.nii.gz")
    scan = dstdformat.read_scan(source)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "scan.dstd"
        result = dstdformat.save(scan, target, attributes={"example": "quickstart"})
        print(f"saved {target.name}: {result.file_size} bytes, {result.ratio:.2f}x")

        with dstdformat.open(target) as vol:
            print(vol)
            print("spacing (mm):", vol.spacing, "opened with", vol.io_stats)
            vol.io_stats.reset()
            axial = vol[vol.shape[0] // 2]
            print("axial slice", axial.shape, "cost", vol.io_stats)
            coronal = vol[:, vol.shape[1] // 2, :]
            print("coronal slice", coronal.shape, "HU range", coronal.min(), coronal.max())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
