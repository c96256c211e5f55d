"""Conformance check: decode every golden file to its recorded hash; reject every invalid one.

    python spec/conformance.py [GOLDEN_DIR ...]     # default: every spec/golden/v*/ folder

Another implementation can follow the same manifest.json files.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import dstdformat

HERE = Path(__file__).resolve().parent


def check_folder(folder: Path) -> list[tuple[str, str | None]]:
    """(file, problem or None) for every file listed in ``folder/manifest.json``."""
    manifest = json.loads((folder / "manifest.json").read_text())
    results = []
    for item in manifest["valid"]:
        problem = None
        try:
            with dstdformat.open(folder / item["file"]) as volume:
                array = volume.read()
                meta = volume.header["metadata"]
            data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
            if list(array.shape) != item["shape"] or array.dtype.name != item["dtype"]:
                problem = f"decoded {array.shape} {array.dtype}, expected {item['shape']} {item['dtype']}"
            elif hashlib.sha256(data).hexdigest() != item["sha256"]:
                problem = _outside_tolerance(folder, item, array)
            elif meta != item["metadata"]:
                problem = "metadata differs from the manifest"
        except dstdformat.DstdError as exc:
            problem = f"failed to decode: {exc}"
        results.append((item["file"], problem))
    for item in manifest["invalid"]:
        try:
            with dstdformat.open(folder / item["file"]) as volume:
                volume.read()
            problem = "decoded without error, but the file is invalid"
        except dstdformat.DstdError:
            problem = None
        results.append((item["file"], problem))
    return results


def _outside_tolerance(folder: Path, item: dict, array: np.ndarray) -> str | None:
    """Lossy files decoded through a floating-point network may differ by a unit in rare voxels on
    other hardware; the manifest then gives a reference array and the tolerance."""
    tolerance = item.get("tolerance")
    if tolerance is None:
        return "decoded voxels differ from the recorded sha256"
    reference = np.load(folder / tolerance["reference"], allow_pickle=False)
    difference = np.abs(array.astype(np.float64) - reference.astype(np.float64))
    if (
        difference.max() > tolerance["max_abs"]
        or np.count_nonzero(difference) > tolerance["max_differing_fraction"] * array.size
    ):
        return (
            f"decoded voxels differ from the reference beyond the tolerance (max "
            f"{difference.max():g}, {np.count_nonzero(difference)} voxels)"
        )
    return None


def golden_folders() -> list[Path]:
    """Format versions (v1.0, ...) and codec versions (deepstd-v1, ...)."""
    return sorted(p for p in (HERE / "golden").iterdir() if (p / "manifest.json").exists())


def main(argv: list[str]) -> int:
    folders = [Path(a) for a in argv] or golden_folders()
    passed = failed = 0
    for folder in folders:
        for name, problem in check_folder(folder):
            if problem:
                failed += 1
                print(f"FAIL {folder.name}/{name}: {problem}")
            else:
                passed += 1
    print(f"conformance: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
