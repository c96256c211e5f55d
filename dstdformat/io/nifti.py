"""NIfTI-1/2 import and export with nibabel, keeping stored integers, scaling and both transforms.

NIfTI stores voxels ``[i, j, k]``; we hold ``[k, j, i]``, so data is transposed and the affine's
columns permuted (``IJK_TO_KJI``) both ways. Raw stored values and ``scl_slope``/``scl_inter``
are kept apart, and qform/sform with their codes travel in ``provenance``, so an import/export
round trip gives an identical image.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.volumeutils import array_to_file

from ..errors import FileMissingError, UnsupportedImageError
from ..metadata import IJK_TO_KJI, Scan, ScanMetadata
from ..storage.writing import atomic_path
from ._checks import TWO_D, check_volume


def _load(path: Path) -> Any:
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise FileMissingError(2, "No such file or directory", str(path)) from None
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise UnsupportedImageError(f"{path}: not a readable NIfTI image ({exc})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UnsupportedImageError(f"{path}: {type(image).__name__} is not a NIfTI image")
    return image


def read_nifti(path: str | os.PathLike[str]) -> Scan:
    """Read a NIfTI file into a :class:`Scan` (raw stored values, exact geometry)."""
    path = Path(path)
    image = _load(path)
    shape = image.shape
    if len(shape) > 3:
        if any(s != 1 for s in shape[3:]):
            raise UnsupportedImageError(
                f"{path}: NIfTI image has {len(shape)} dimensions (shape {shape}); dstd stores 3D volumes"
            )
    try:
        data = np.asanyarray(image.dataobj.get_unscaled())
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise UnsupportedImageError(f"{path}: voxel data cannot be read ({exc})") from None
    data = data.reshape(shape[:3] if len(shape) >= 3 else shape + (1,) * (3 - len(shape)))
    check_volume(data, str(path))
    header = image.header
    # nibabel moves scl_slope/scl_inter from the loaded header to the array proxy
    slope, inter = float(image.dataobj.slope), float(image.dataobj.inter)
    slope = 1.0 if not math.isfinite(slope) or slope == 0 else slope
    inter = 0.0 if not math.isfinite(inter) else inter
    qform, qcode = image.get_qform(coded=True)
    sform, scode = image.get_sform(coded=True)
    provenance = {
        "format": "nifti",
        "ndim": min(len(shape), 3),
        "qform": None if qform is None else np.asarray(qform).tolist(),
        "qform_code": int(qcode),
        "sform": None if sform is None else np.asarray(sform).tolist(),
        "sform_code": int(scode),
        "xyzt_units": [str(u) for u in header.get_xyzt_units()],
        "descrip": header["descrip"].item().decode("latin-1").rstrip("\x00"),
    }
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    metadata = ScanMetadata(
        affine=np.asarray(image.affine, dtype=np.float64) @ IJK_TO_KJI,
        slope=slope,
        intercept=inter,
        original_dtype=np.dtype(header.get_data_dtype()).name,
        provenance=provenance,
    )
    return Scan(array, metadata)


def write_nifti(scan: Scan, path: str | os.PathLike[str]) -> None:
    """Write a :class:`Scan` as NIfTI-1 (``.nii`` or ``.nii.gz``) atomically."""
    array = np.asarray(scan.array).transpose(2, 1, 0)
    meta = scan.metadata
    affine = np.asarray(meta.affine) @ IJK_TO_KJI
    if meta.provenance.get("ndim") == TWO_D and array.shape[2] == 1:
        array = array[:, :, 0]  # read from a 2D image: give it back as one
    image = nib.Nifti1Image(array, affine)
    header = image.header
    header.set_data_dtype(array.dtype)
    prov = meta.provenance if meta.provenance.get("format") == "nifti" else {}
    if prov:
        qform, sform = prov.get("qform"), prov.get("sform")
        image.set_qform(None if qform is None else np.asarray(qform), int(prov["qform_code"]))
        image.set_sform(None if sform is None else np.asarray(sform), int(prov["sform_code"]))
        if prov.get("xyzt_units"):
            header.set_xyzt_units(*prov["xyzt_units"])
        if prov.get("descrip"):
            header["descrip"] = prov["descrip"].encode("latin-1", "replace")[:79]
        if not np.allclose(header.get_best_affine(), affine, rtol=1e-6, atol=1e-4):
            # The geometry changed since import (new spacing, crop, ...): the metadata affine
            # wins; keep the original codes so the file means what it meant before.
            image.set_qform(affine, int(prov["qform_code"]) or 1)
            image.set_sform(affine, int(prov["sform_code"]) or 1)
    else:
        image.set_qform(affine, 1)
        image.set_sform(affine, 1)
        header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        if meta.slope == 1.0 and meta.intercept == 0.0:
            nib.save(image, tmp)
        else:
            _save_raw_with_scaling(image, array, meta.slope, meta.intercept, tmp)


def _save_raw_with_scaling(image: Any, array: np.ndarray, slope: float, inter: float, path: Path) -> None:
    """Write stored values unchanged with scl_slope/scl_inter set (nib.save would rescale)."""
    header = image.header
    header.set_data_shape(array.shape)
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(slope, inter)
    header["vox_offset"] = 352
    with ImageOpener(path, "wb") as fh:
        header.write_to(fh)
        array_to_file(array, fh, array.dtype, offset=352, order="F")
