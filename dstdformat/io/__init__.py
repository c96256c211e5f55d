"""CT import and export: NIfTI, DICOM series (import), HDF5 and NumPy, all as :class:`Scan`.

Every reader returns arrays indexed ``[k, j, i]`` with metadata following the conventions of
:mod:`dstdformat.metadata`; every writer is atomic.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from ..errors import FileMissingError, InvalidInputError
from ..metadata import Scan
from ..storage.writing import check_writable

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
        if (p / "zarr.json").exists() or (p / ".zgroup").exists() or (p / ".zarray").exists():
            raise InvalidInputError(
                f"{str(path)!r} is a zarr store, not a DICOM folder; turn it "
                "into a scan with `dstd from-zarr` or "
                "dstdformat.interop.to_zarr.zarr_to_scan"
            )
        if not any(child.is_file() for child in p.rglob("*")):
            raise InvalidInputError(f"{str(path)!r} is an empty folder, not a DICOM series")
        return "dicom"
    if name.endswith(".dstd"):
        return "dstd"
    for fmt, (suffixes, _) in FORMATS.items():
        if any(name.endswith(s) for s in suffixes if s.startswith(".")):
            return fmt
    if _is_dicom_file(p):  # DICOM files are often named by UID, with no suffix
        return "dicom"
    known = ", ".join([s for suffixes, _ in FORMATS.values() for s in suffixes] + [".dstd"])
    raise InvalidInputError(f"unknown file format for {str(path)!r} (by its suffix); known: {known}")


def format_for_output(path: str | os.PathLike[str]) -> str:
    """The format an output path's suffix names, among those :func:`write_scan` writes."""
    name = Path(path).name.lower()
    for fmt, (suffixes, writable) in FORMATS.items():
        if writable and any(name.endswith(s) for s in suffixes):
            return fmt
    known = ", ".join(s for suffixes, writable in FORMATS.values() if writable for s in suffixes)
    raise InvalidInputError(
        f"cannot write {str(path)!r}: its suffix names no format written "
        f"here; use {known} (DICOM is read only; .dstd: dstdformat.save)"
    )


def read_scan(path: str | os.PathLike[str], **options: Any) -> Scan:
    """Read a NIfTI file, DICOM series folder, HDF5 file, ``.npy`` array or ``.dstd`` volume.

    Options: ``dataset=`` (HDF5), ``series_uid=``, ``keep_identifiers=``, ``progress=`` (DICOM),
    ``refine=``, ``progress=`` (.dstd).
    """
    if "://" not in os.fspath(path) and not Path(path).exists():  # .dstd may be a URL
        raise FileMissingError(2, "No such file or directory", os.fspath(path))
    fmt = format_for_path(path)
    if fmt == "dstd":
        return _read_dstd(path, **options)
    if fmt == "nifti":
        from .nifti import read_nifti as reader
    elif fmt == "hdf5":
        from .hdf5 import read_hdf5 as reader
    elif fmt == "numpy":
        from .numpy_io import read_npy as reader
    else:
        from .dicom import read_dicom_series as reader
    _check_options(reader, fmt, "reading", options)
    return reader(path, **options)


def write_scan(scan: Scan, path: str | os.PathLike[str], **options: Any) -> None:
    """Write ``scan`` in the format ``path``'s suffix names (NIfTI, HDF5 or ``.npy``)."""
    fmt = format_for_output(path)
    check_writable(path)
    if fmt == "nifti":
        from .nifti import write_nifti as writer
    elif fmt == "hdf5":
        from .hdf5 import write_hdf5 as writer
    else:
        from .numpy_io import write_npy as writer
    _check_options(writer, fmt, "writing", options)
    writer(scan, path, **options)


def _read_dstd(
    path: str | os.PathLike[str], *, refine: bool = True, progress: bool = False, **options: Any
) -> Scan:
    """A whole ``.dstd`` volume as a Scan (what the CLI accepts wherever it takes a scan)."""
    from ..container.volume import open_volume

    if options:
        raise InvalidInputError(f"reading .dstd takes refine= and progress=, not {sorted(options)}")
    with open_volume(path) as volume:
        return Scan(volume.read(progress=progress, refine=refine), volume.metadata)


def _is_dicom_file(path: Path) -> bool:
    """True for an existing file with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _check_options(function: Any, fmt: str, action: str, options: dict[str, Any]) -> None:
    """Refuse an option the format does not take with a clear error, not a TypeError."""
    accepted = [
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidInputError(
            f"option(s) {', '.join(unknown)} do not apply to {action} {fmt}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )


__all__ = ["FORMATS", "Scan", "format_for_path", "read_scan", "write_scan"]
