"""``DstdReader``: ``.dstd`` files (paths and fsspec URLs) in MONAI's ``LoadImage``.

MONAI holds arrays ``(i, j, k)`` like NIfTI, with a RAS affine; files hold ``[k, j, i]``, so the
reader transposes and permutes the affine, and the metadata is what MONAI's NIfTI reader gives
(``affine``, ``original_affine``, ``spatial_shape``, ``space``, ``original_channel_dim``).
Values are scaled (HU, float32), as nibabel gives them. ``roi_start``/``roi_end`` (MONAI's
``(i, j, k)`` order) read one region only: the tiles under it are all that is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from ..container.volume import Volume, open_volume
from ..errors import InvalidInputError, PatchTooLargeError
from ..metadata import IJK_TO_KJI
from ..storage.filesystems import unfold_url


class DstdReader(ImageReader):
    """MONAI reader of ``.dstd`` files: ``LoadImage(reader=DstdReader)`` or
    ``LoadImaged(keys, reader=DstdReader(...))``. ``scaled=False`` gives the stored values,
    ``refine=True`` a lossy file's learned refinement; ``roi_start``/``roi_end`` (voxels,
    ``(i, j, k)``, end exclusive) read that region only."""

    def __init__(
        self,
        scaled: bool = True,
        refine: bool = False,
        roi_start: Sequence[int] | None = None,
        roi_end: Sequence[int] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if (roi_start is None) != (roi_end is None):
            raise InvalidInputError("give roi_start and roi_end together")
        self.scaled, self.refine, self.storage_options = scaled, refine, storage_options
        self.roi = None if roi_start is None else (tuple(map(int, roi_start)), tuple(map(int, roi_end)))

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        return all(unfold_url(name).lower().endswith(".dstd") for name in ensure_tuple(filename))

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Volume | list[Volume]:
        names = [unfold_url(name) for name in ensure_tuple(data)]
        volumes = [open_volume(name, kwargs.get("storage_options", self.storage_options)) for name in names]
        return volumes if len(volumes) > 1 else volumes[0]

    def get_data(self, img: Volume | Sequence[Volume]) -> tuple[np.ndarray, dict]:
        """The voxels ``(i, j, k)`` (several files stacked on a new first axis) and the first
        file's metadata."""
        arrays, meta = [], {}
        for number, volume in enumerate(ensure_tuple(img)):
            array, own = read_ijk(volume, self.roi, self.scaled, self.refine)
            arrays.append(array)
            if number == 0:
                meta = own
            volume.close()
        if len(arrays) == 1:
            return arrays[0], meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays), meta


def read_ijk(
    volume: Volume,
    roi: tuple[tuple[int, ...], tuple[int, ...]] | None,
    scaled: bool,
    refine: bool,
) -> tuple[np.ndarray, dict]:
    """A volume's voxels (or those of ``roi``, ``(i, j, k)``) in MONAI's order, with its metadata."""
    shape_ijk = volume.shape[::-1]
    start, end = roi if roi is not None else ((0, 0, 0), shape_ijk)
    if len(start) != 3 or len(end) != 3 or not all(0 <= s < e <= n for s, e, n in zip(start, end, shape_ijk)):
        raise PatchTooLargeError(
            f"region {tuple(start)}..{tuple(end)} (i, j, k) is not inside {volume.description} "
            f"of shape {tuple(shape_ijk)}"
        )
    region = tuple(slice(s, e) for s, e in zip(start[::-1], end[::-1]))
    array = volume.read_region(region, refine=refine, scaled=scaled).transpose(2, 1, 0)
    affine = volume.affine @ IJK_TO_KJI
    affine[:3, 3] = affine[:3, :3] @ np.asarray(start, np.float64) + affine[:3, 3]
    meta = {
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
        "spacing": np.asarray(volume.spacing[::-1]),
        "dstd_codec": volume.codec_id,
        "dstd_ratio": float(volume.ratio),
    }
    return np.ascontiguousarray(array), meta
