"""CT import and export: NIfTI, DICOM series (import), HDF5 and NumPy, all as :class:`Scan`.

Every reader returns arrays indexed ``[k, j, i]`` with metadata following the conventions of
:mod:`dstdformat.metadata`; every writer is atomic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..metadata import Scan

#: format name -> (suffixes, can write)
FORMATS: dict[str, tuple[tuple[str, ...], bool]] = {
    "nifti": ((".nii", ".nii.gz"), True),
    "hdf5": ((".h5", ".hdf5", ".hdf"), True),
    "numpy": ((".npy",), True),
    "dicom": ((".dcm", "<folder>"), False),
}


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The format a path's suffix (or being a folder) names; InvalidInputError otherwise."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    for fmt, (suffixes, _) in FORMATS.items():
        if any(name.endswith(s) for s in suffixes if s.startswith(".")):
            return fmt
    known = ", ".join(s for suffixes, _ in FORMATS.values() for s in suffixes)
    raise InvalidInputError(f"unknown file format for {str(path)!r} (by its suffix); known: {known}")


def read_scan(path: str | os.PathLike[str], **options: Any) -> Scan:
    """Read a NIfTI file, DICOM series folder, HDF5 file or ``.npy`` array.

    Options: ``dataset=`` (HDF5), ``series_uid=``, ``keep_identifiers=``, ``progress=`` (DICOM).
    """
    fmt = format_for_path(path)
    if fmt == "nifti":
        from .nifti import read_nifti

        return read_nifti(path, **options)
    if fmt == "hdf5":
        from .hdf5 import read_hdf5

        return read_hdf5(path, **options)
    if fmt == "numpy":
        from .numpy_io import read_npy

        return read_npy(path, **options)
    from .dicom import read_dicom_series

    return read_dicom_series(path, **options)


def write_scan(scan: Scan, path: str | os.PathLike[str], **options: Any) -> None:
    """Write ``scan`` in the format ``path``'s suffix names (NIfTI, HDF5 or ``.npy``)."""
    fmt = format_for_path(path)
    if not FORMATS[fmt][1]:
        raise InvalidInputError(f"writing {fmt} is not supported; use .nii.gz, .h5 or .npy")
    if fmt == "nifti":
        from .nifti import write_nifti

        return write_nifti(scan, path, **options)
    if fmt == "hdf5":
        from .hdf5 import write_hdf5

        return write_hdf5(scan, path, **options)
    from .numpy_io import write_npy

    return write_npy(scan, path, **options)


__all__ = ["FORMATS", "Scan", "format_for_path", "read_scan", "write_scan"]
