"""HDF5 import and export with h5py: one dataset plus attributes carrying the metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import FileMissingError, InvalidInputError, UnsupportedImageError
from ..metadata import Scan, ScanMetadata
from ..storage.writing import atomic_path
from ._checks import IMPORTABLE_DTYPES, check_volume

DEFAULT_DATASET = "volume"


def _candidates(handle: h5py.File) -> list[str]:
    found: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim == 3 and obj.dtype.name in IMPORTABLE_DTYPES:
            found.append(name)

    handle.visititems(visit)
    return found


def read_hdf5(path: str | os.PathLike[str], dataset: str | None = None) -> Scan:
    """Read one 3D dataset: ``dataset`` if given, else the file's only 3D numeric dataset."""
    path = Path(path)
    if not path.exists():
        raise FileMissingError(2, "No such file or directory", str(path))
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise UnsupportedImageError(f"{path}: not a readable HDF5 file ({exc})") from None
    with handle:
        if dataset is None:
            names = _candidates(handle)
            if len(names) != 1:
                raise UnsupportedImageError(
                    f"{path}: {'no' if not names else len(names)} 3D numeric datasets "
                    f"({', '.join(names) or 'none'}); choose one with dataset=NAME"
                )
            dataset = names[0]
        if dataset not in handle or not isinstance(handle[dataset], h5py.Dataset):
            raise UnsupportedImageError(f"{path}: no dataset named {dataset!r}")
        node = handle[dataset]
        array = check_volume(np.asarray(node[()]), f"{path}:{dataset}")
        attrs = node.attrs
        try:
            metadata = ScanMetadata(
                spacing=attrs.get("spacing"),
                affine=attrs.get("affine"),
                slope=float(attrs.get("slope", 1.0)),
                intercept=float(attrs.get("intercept", 0.0)),
                modality=_text(attrs.get("modality")) or None,
                original_dtype=_text(attrs.get("original_dtype")) or array.dtype.name,
                attributes=json.loads(_text(attrs.get("attributes")) or "{}"),
                provenance=json.loads(_text(attrs.get("provenance")) or "{}"),
            )
        except (InvalidInputError, ValueError) as exc:
            raise UnsupportedImageError(f"{path}:{dataset}: bad metadata attributes: {exc}") from None
    return Scan(array, metadata)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def write_hdf5(scan: Scan, path: str | os.PathLike[str], dataset: str = DEFAULT_DATASET) -> None:
    """Write ``scan`` as ``dataset`` with metadata attributes, atomically."""
    meta = scan.metadata
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        node = handle.create_dataset(dataset, data=np.asarray(scan.array))
        node.attrs["spacing"] = np.asarray(meta.spacing, dtype=np.float64)
        node.attrs["affine"] = np.asarray(meta.affine, dtype=np.float64)
        node.attrs["slope"] = meta.slope
        node.attrs["intercept"] = meta.intercept
        node.attrs["modality"] = meta.modality or ""
        node.attrs["original_dtype"] = meta.original_dtype or ""
        node.attrs["attributes"] = json.dumps(meta.attributes)
        node.attrs["provenance"] = json.dumps(meta.provenance)
        node.attrs["dstdformat_axes"] = "kji"
