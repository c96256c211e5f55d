"""``.npy`` import and export (never pickles). Geometry is not stored: defaults on import."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FileMissingError, UnsupportedImageError
from ..metadata import Scan, ScanMetadata
from ..storage.writing import atomic_path
from ._checks import TWO_D, as_one_slice, check_volume


def read_npy(path: str | os.PathLike[str]) -> Scan:
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileMissingError(2, "No such file or directory", str(path)) from None
    except (ValueError, OSError, EOFError) as exc:
        raise UnsupportedImageError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise UnsupportedImageError(f"{path}: holds several arrays, not one volume")
    provenance = {"format": "numpy", "ndim": int(array.ndim)}
    array = check_volume(as_one_slice(array), str(path))
    return Scan(array, ScanMetadata(original_dtype=array.dtype.name, provenance=provenance))


def write_npy(scan: Scan, path: str | os.PathLike[str]) -> None:
    array = np.asarray(scan.array)
    if scan.metadata.provenance.get("ndim") == TWO_D and array.shape[0] == 1:
        array = array[0]  # read from a 2D image: give it back as one
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
