"""Training data: the CT files a training run names (files, folders, globs), read as HU."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def training_paths(sources: Sequence[str]) -> list[Path]:
    """Files named by ``sources``: files, folders (every NIfTI inside) or globs."""
    from glob import glob

    paths: list[Path] = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            paths += sorted(p.rglob("*.nii.gz")) + sorted(p.rglob("*.nii"))
        elif any(ch in source for ch in "*?["):
            paths += [Path(g) for g in sorted(glob(source, recursive=True))]
        else:
            paths.append(p)
    return paths


def load_training_volumes(sources: Sequence[str]) -> list[np.ndarray]:
    """HU arrays (float32) from NIfTI/DICOM/HDF5 files, folders or globs."""
    from ..io import read_scan

    volumes = []
    for path in training_paths(sources):
        scan = read_scan(path)
        hu = scan.array.astype(np.float32) * scan.metadata.slope + scan.metadata.intercept
        volumes.append(hu)
    if not volumes:
        raise ValueError(f"no training volumes found in {list(sources)}")
    return volumes
