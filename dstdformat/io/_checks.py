"""Checks shared by every importer: what comes out is a 3D numeric volume."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedImageError

IMPORTABLE_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


#: ``provenance["ndim"]`` of a scan read from a 2D image: writers give it back as 2D.
TWO_D = 2


def as_one_slice(array: np.ndarray) -> np.ndarray:
    """The one rule for 2D images (a scout, a key image, a 2D .npy): a volume of one slice,
    rows along axis 1 and columns along axis 2; the scan's provenance records ``ndim`` 2."""
    return array[np.newaxis] if array.ndim == TWO_D else array


def check_volume(array: np.ndarray, source: str) -> np.ndarray:
    if array.ndim != 3:
        raise UnsupportedImageError(
            f"{source}: image has {array.ndim} dimensions (shape {array.shape}); dstd stores 3D volumes"
        )
    if array.dtype.name not in IMPORTABLE_DTYPES:
        raise UnsupportedImageError(
            f"{source}: voxel type {array.dtype} is not supported; supported: {', '.join(IMPORTABLE_DTYPES)}"
        )
    if array.size == 0:
        raise UnsupportedImageError(f"{source}: image is empty (shape {array.shape})")
    return array
