"""Converting a scan into a zarr group that other tools read: OME-Zarr layout, DeepSTD chunks.

The group holds the volume as array ``0`` (axes k, j, i) and OME-Zarr ``multiscales`` metadata
(one scale and translation in the axes' order: the signed voxel step and the origin in millimetres
along the world axis each array axis runs on) so OME-Zarr viewers place it; the full affine,
intensity scaling and modality are kept under the ``dstdformat`` attribute so nothing of the
source's geometry is lost. Dimension names let xarray open it directly.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..metadata import Scan, axis_geometry
from ..progress import track

DEFAULT_CHUNKS = (64, 512, 512)
AXES = ("k", "j", "i")


def scan_to_zarr(
    scan: Scan,
    store: str | os.PathLike[str],
    *,
    zarr_format: int = 3,
    chunks: tuple[int, int, int] | None = None,
    codec_options: dict[str, Any] | None = None,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
):
    """Write ``scan`` as a zarr group (v2 or v3 format) with DeepSTD chunks; returns the array."""
    import zarr

    from .numcodecs_deepstd import DeepSTD
    from .zarr_deepstd import DeepSTDCodec

    if zarr_format not in (2, 3):
        raise InvalidInputError(f"zarr format must be 2 or 3, got {zarr_format}")
    array, meta = scan.array, scan.metadata
    if array.ndim != 3:
        raise InvalidInputError(f"expected a 3D scan, got {array.ndim}D")
    chunks = tuple(min(c, s) for c, s in zip(chunks or DEFAULT_CHUNKS, array.shape))
    options = dict(codec_options or {})
    options.setdefault("slope", meta.slope)
    options.setdefault("intercept", meta.intercept)
    group = zarr.open_group(
        os.fspath(store), mode="w", zarr_format=zarr_format, storage_options=storage_options
    )
    common = {"name": "0", "shape": array.shape, "chunks": chunks, "dtype": array.dtype}
    if zarr_format == 2:
        # No fill value: xarray would otherwise mask voxels equal to it and turn int16 into float.
        target = group.create_array(
            **common,
            compressors=DeepSTD(**options),
            fill_value=None,
            attributes={"_ARRAY_DIMENSIONS": list(AXES)},
        )
    else:
        target = group.create_array(
            **common, serializer=DeepSTDCodec(**options), compressors=None, dimension_names=AXES
        )
    for start in track(
        range(0, array.shape[0], chunks[0]), enabled=progress, desc="writing zarr", unit="chunk row"
    ):
        target[start : start + chunks[0]] = array[start : start + chunks[0]]
    group.attrs.update(_group_attributes(scan, zarr_format))
    return target


def _group_attributes(scan: Scan, zarr_format: int) -> dict[str, Any]:
    meta = scan.metadata
    spacing = [float(s) for s in scan.spacing]
    # OME-Zarr places index n of axis a at translation[a] + scale[a] * n, in the axes' order: the
    # signed step and the origin along the world axis each array axis runs on (a flip keeps its
    # sign). An oblique affine has no such form; the full affine below stays the truth.
    geometry = axis_geometry(np.asarray(scan.affine))
    multiscales = [
        {
            "version": "0.4" if zarr_format == 2 else "0.5",
            "name": "ct",
            "axes": [{"name": a, "type": "space", "unit": "millimeter"} for a in AXES],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": list(geometry.step)},
                        {"type": "translation", "translation": list(geometry.origin)},
                    ],
                }
            ],
        }
    ]
    ours = {
        "spacing": spacing,
        "affine": np.asarray(scan.affine).tolist(),
        "slope": meta.slope,
        "intercept": meta.intercept,
        "modality": meta.modality,
        "original_dtype": meta.original_dtype or scan.array.dtype.name,
        "axes": "array axes k, j, i; affine maps (k, j, i, 1) to RAS+ millimetres",
        "world_axes": list(geometry.world_axes),
        "oblique": geometry.oblique,
    }
    if zarr_format == 3:
        return {"ome": {"version": "0.5", "multiscales": multiscales}, "dstdformat": ours}
    return {"multiscales": multiscales, "dstdformat": ours}


def zarr_to_scan(store: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Scan:
    """Read back a group written by :func:`scan_to_zarr`: array ``0`` with its geometry and
    intensity scaling (from the ``dstdformat`` attribute)."""
    import zarr

    from ..metadata import ScanMetadata

    group = zarr.open_group(os.fspath(store), mode="r", storage_options=storage_options)
    ours = dict(group.attrs.get("dstdformat") or {})
    if "0" not in group:
        raise InvalidInputError(f"{os.fspath(store)} holds no array '0': not written by scan_to_zarr")
    array = group["0"][...]
    meta = ScanMetadata(
        affine=ours.get("affine"),
        slope=ours.get("slope", 1.0),
        intercept=ours.get("intercept", 0.0),
        modality=ours.get("modality"),
        original_dtype=ours.get("original_dtype"),
    )
    return Scan(np.asarray(array), meta)
