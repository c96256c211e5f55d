"""xarray backend: ``xr.open_dataset("scan.dstd", engine="dstd")`` gives a lazy DataArray.

Registered through the ``xarray.backends`` entry point. The variable ``ct`` has dimensions
(k, j, i) and coordinates in world millimetres: along each array axis, the position on the world
axis (RAS+ x, y or z, in the coordinate's ``world_axis`` attribute) that the axis runs on, so
``.sel(k=-679.8)`` picks the slice at z = -679.8 mm and a flipped axis has decreasing coordinates.
An oblique affine has no such form: the dataset's ``oblique`` attribute says so and the ``affine``
attribute is the truth. Only the tiles under what is indexed are fetched and decoded.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from ..container.volume import Volume, open_volume
from ..metadata import axis_geometry

DIMS = ("k", "j", "i")


class _VolumeArray(BackendArray):
    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.shape = volume.shape
        self.dtype = volume.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self.volume.__getitem__
        )


class DstdBackendEntrypoint(BackendEntrypoint):
    description = "Lazy CT volumes from .dstd files (local or any fsspec URL)"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "storage_options")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: Any = None,
        storage_options: dict[str, Any] | None = None,
    ) -> Any:
        import xarray as xr

        volume = open_volume(os.fspath(filename_or_obj), storage_options=storage_options)
        data = indexing.LazilyIndexedArray(_VolumeArray(volume))
        meta = volume.metadata
        geometry = axis_geometry(np.asarray(volume.affine))
        coords = {
            d: (d, origin + step * np.arange(n), {"units": "mm", "world_axis": axis})
            for d, n, origin, step, axis in zip(
                DIMS, volume.shape, geometry.origin, geometry.step, geometry.world_axes
            )
        }
        attrs = {
            "affine": np.asarray(volume.affine).tolist(),
            "spacing": list(volume.spacing),
            "oblique": int(geometry.oblique),
            "slope": meta.slope,
            "intercept": meta.intercept,
            "modality": meta.modality or "",
            "codec": volume.codec_id,
        }
        variable = xr.Variable(DIMS, data, attrs={"units": "stored value (HU = value x slope + intercept)"})
        dataset = xr.Dataset({"ct": variable}, coords=coords, attrs=attrs)
        dataset.set_close(volume.close)
        return dataset

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        try:
            return os.fspath(filename_or_obj).endswith(".dstd")
        except TypeError:
            return False
