"""``RandDstdPatchd``: MONAI's load-then-crop in one step that decodes only the patch.

``LoadImaged`` followed by a random crop decodes whole volumes to keep a patch of them; this
transform takes the dictionary of file names a MONAI dataset holds and reads one random
``roi_size`` region (MONAI's ``(i, j, k)``) from every key, at the same place in each (an image
and its label), as MetaTensors with the region's own affine.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from ..container.volume import open_volume
from ..errors import LabelMismatchError, PatchTooLargeError
from ..storage.filesystems import unfold_url
from .reader import read_ijk


class RandDstdPatchd(Randomizable, MapTransform):
    """Read a random ``roi_size`` patch of each key's ``.dstd`` file (the same corner for all
    keys, which must have one shape) as a channel-first MetaTensor: scaled values (HU, float32),
    except ``label_keys``, read as stored; ``refine`` as :class:`~.reader.DstdReader`."""

    def __init__(
        self,
        keys: Sequence[Hashable] | Hashable,
        roi_size: Sequence[int],
        label_keys: Sequence[Hashable] = (),
        refine: bool = False,
        storage_options: dict[str, Any] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.roi_size = tuple(int(s) for s in roi_size)
        self.label_keys, self.refine, self.storage_options = set(label_keys), refine, storage_options
        self._start: tuple[int, ...] | None = None

    def randomize(self, shape_ijk: Sequence[int]) -> None:
        self._start = tuple(int(self.R.randint(0, n - r + 1)) for n, r in zip(shape_ijk, self.roi_size))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        volumes = {
            key: open_volume(unfold_url(out[key]), self.storage_options) for key in self.key_iterator(out)
        }
        try:
            shapes = {key: volume.shape[::-1] for key, volume in volumes.items()}
            first = next(iter(shapes.values()))
            for key, shape in shapes.items():
                if shape != first:
                    raise LabelMismatchError(
                        f"{volumes[key].description} has shape {shape} (i, j, k); "
                        f"{next(iter(volumes.values())).description} has {first}"
                    )
                if any(r > n for r, n in zip(self.roi_size, shape)):
                    raise PatchTooLargeError(
                        f"roi_size {self.roi_size} is larger than {volumes[key].description} of shape {shape}"
                    )
            self.randomize(first)
            assert self._start is not None
            roi = (self._start, tuple(s + r for s, r in zip(self._start, self.roi_size)))
            for key, volume in volumes.items():
                array, meta = read_ijk(volume, roi, key not in self.label_keys, self.refine)
                meta["filename_or_obj"] = volume.description
                out[key] = MetaTensor(np.ascontiguousarray(array[None]), meta=meta)
        finally:
            for volume in volumes.values():
                volume.close()
        return out
