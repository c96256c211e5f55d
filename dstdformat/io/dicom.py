"""DICOM series import with pydicom: slices sorted by position, HU, geometry from the tags.

Patient identifiers are not copied unless asked (``keep_identifiers=True``): archives built with
dstdformat should not spread them by accident. Compressed transfer syntaxes (JPEG 2000, JPEG-LS,
...) need the ``dicom`` extra (pylibjpeg and its plugins).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileMissingError, UnsupportedImageError
from ..metadata import Scan, ScanMetadata
from ..progress import track

#: Copied into ``attributes["dicom"]`` by default: acquisition facts, nothing identifying.
SAFE_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "KVP",
    "SliceThickness",
    "ConvolutionKernel",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
)
#: Copied as well with ``keep_identifiers=True``.
IDENTIFYING_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstitutionName",
    "StudyDescription",
    "SeriesDescription",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)
#: Relative tolerance on the spacing between consecutive slices.
STEP_TOLERANCE = 0.01


def _pydicom():
    try:
        import pydicom
    except ImportError:  # pragma: no cover - depends on the environment
        raise UnsupportedImageError("reading DICOM needs pydicom: pip install 'dstdformat[dicom]'") from None
    return pydicom


def _json_value(value: Any) -> Any:
    from pydicom.multival import MultiValue

    if isinstance(value, MultiValue | list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return value if not isinstance(value, float) else float(value)
    try:
        return float(value) if hasattr(value, "real") else str(value)
    except (TypeError, ValueError):
        return str(value)


def _number(value: Any, default: float) -> float:
    """A DS value as float; ``default`` when absent or empty (some writers leave it blank)."""
    try:
        return default if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return default


def _to_hu(slices: list[tuple[np.ndarray, float, float]]) -> np.ndarray:
    """Stack ``stored * slope + intercept`` per slice: int16 when exact and in range, else float32.

    Converts one slice at a time so the peak memory is the stored slices plus the result, not a
    float64 copy of the whole volume.
    """
    integral = all(s == 1.0 and float(i).is_integer() for _, s, i in slices)
    if integral:
        lo = min(int(p.min()) + int(i) for p, _, i in slices)
        hi = max(int(p.max()) + int(i) for p, _, i in slices)
        if -32768 <= lo and hi <= 32767:
            out = np.empty((len(slices), *slices[0][0].shape), dtype=np.int16)
            for k, (pixels, _, intercept) in enumerate(slices):
                out[k] = pixels.astype(np.int32) + int(intercept)
            return out
    out = np.empty((len(slices), *slices[0][0].shape), dtype=np.float32)
    for k, (pixels, slope, intercept) in enumerate(slices):
        out[k] = pixels.astype(np.float64) * slope + intercept
    return out


def _files(folder: Path) -> list[Path]:
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise FileMissingError(2, "No such file or directory", str(folder))
    return sorted(p for p in folder.rglob("*") if p.is_file())


def read_dicom_series(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    keep_identifiers: bool = False,
    progress: bool = False,
) -> Scan:
    """Read the largest image series in a folder (or the series ``series_uid``) as HU."""
    pydicom = _pydicom()
    folder = Path(path)
    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for file in track(_files(folder), enabled=progress, desc="scanning DICOM", unit="file"):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError):
            continue  # not DICOM (README, DICOMDIR leftovers, ...)
        image_type = ds.get("ImageType") or []
        image_type = [image_type] if isinstance(image_type, str) else list(image_type)
        if "LOCALIZER" in [str(v).upper() for v in image_type]:
            continue  # scout views share series with the slices on some scanners
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds and "Rows" in ds:
            series[str(ds.get("SeriesInstanceUID", ""))].append((file, ds))
            if series_uid is None and folder.is_file() and file.samefile(folder):
                series_uid = str(ds.get("SeriesInstanceUID", ""))  # the given file's series
    if not series:
        raise UnsupportedImageError(f"{folder}: no DICOM images with position and orientation")
    if series_uid is not None:
        if series_uid not in series:
            raise UnsupportedImageError(
                f"{folder}: no series {series_uid!r}; found {', '.join(sorted(series))}"
            )
        chosen = series[series_uid]
    else:  # the largest CT series; the largest of any modality if there is no CT
        ct = [
            items
            for items in series.values()
            if any(str(ds.get("Modality", "")).upper() == "CT" for _, ds in items)
        ]
        chosen = max(ct or series.values(), key=len)

    first = chosen[0][1]
    orientation = np.array(first.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (i), down a column (j)
    normal = np.cross(row_dir, col_dir)
    for file, ds in chosen:
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=np.float64), orientation, atol=1e-4):
            raise UnsupportedImageError(f"{file}: slice orientation differs within the series")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise UnsupportedImageError(f"{file}: slice size differs within the series")
    chosen.sort(key=lambda item: float(np.dot(item[1].ImagePositionPatient, normal)))
    positions = np.array([ds.ImagePositionPatient for _, ds in chosen], dtype=np.float64)

    if len(chosen) > 1:
        steps = np.diff(positions, axis=0)
        slice_vector = (positions[-1] - positions[0]) / (len(chosen) - 1)
        step = float(np.linalg.norm(slice_vector))
        if step == 0 or np.any(np.linalg.norm(steps - slice_vector, axis=1) > STEP_TOLERANCE * step):
            lengths = ", ".join(f"{v:.3f}" for v in np.linalg.norm(steps, axis=1)[:10])
            raise UnsupportedImageError(
                f"{folder}: slice positions are not evenly spaced (steps {lengths} mm...; "
                "duplicate slices, missing slices or a variable gantry tilt); "
                "resample the series first"
            )
    else:
        thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)))
        slice_vector = normal * (thickness if thickness > 0 else 1.0)

    try:
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        raise UnsupportedImageError(
            f"{chosen[0][0]}: no usable PixelSpacing ({first.get('PixelSpacing')!r})"
        ) from None
    lps = np.eye(4)
    lps[:3, 0] = slice_vector
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = row_dir * col_spacing
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> RAS

    slices, stored_dtype = [], None
    for file, _ in track(chosen, enabled=progress, desc="decoding DICOM", unit="slice"):
        try:
            ds = pydicom.dcmread(file)
            pixels = ds.pixel_array
        except Exception as exc:  # pixel handlers raise many types
            raise UnsupportedImageError(
                f"{file}: pixel data cannot be decoded ({exc}); compressed DICOM needs "
                "pip install 'dstdformat[dicom]'"
            ) from None
        if pixels.ndim != 2:
            raise UnsupportedImageError(f"{file}: multi-frame or colour images are not supported")
        if pixels.shape != (first.Rows, first.Columns):
            raise UnsupportedImageError(
                f"{file}: pixel data is {pixels.shape}, expected {(first.Rows, first.Columns)}"
            )
        stored_dtype = pixels.dtype
        slope = _number(ds.get("RescaleSlope"), 1.0)
        intercept = _number(ds.get("RescaleIntercept"), 0.0)
        slices.append((pixels, slope, intercept))
    array = _to_hu(slices)

    tags = SAFE_TAGS + (IDENTIFYING_TAGS if keep_identifiers else ())
    attributes = {tag: _json_value(first.get(tag)) for tag in tags if tag in first}
    metadata = ScanMetadata(
        affine=affine,
        modality=str(first.get("Modality")) if "Modality" in first else None,
        original_dtype=np.dtype(stored_dtype).name,
        attributes={"dicom": attributes},
        provenance={
            "format": "dicom",
            "slices": len(chosen),
            "transfer_syntax": str(first.file_meta.get("TransferSyntaxUID", ""))
            if hasattr(first, "file_meta")
            else "",
        },
    )
    return Scan(array, metadata)
