"""TorchIO integration (the ``torchio`` extra): ``tio.ScalarImage("ct.dstd", reader=read_dstd)``.

TorchIO 1.2.1 loads an image through one reader callable, ``path -> (4D data, affine)``, on first
access to its data; it has no lazy backend protocol to plug a region reader into (its samplers
crop loaded tensors), so patch training straight from the files is
:class:`dstdformat.torch.PatchDataset`'s job. The reader gives TorchIO's layout: channel-first
``(1, i, j, k)`` data and the RAS affine of ``(i, j, k)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

try:
    import torchio  # noqa: F401 - checked here so that a missing TorchIO names the extra
except ImportError as exc:
    raise ImportError("dstdformat.torchio needs TorchIO: pip install 'dstdformat[torchio]'") from exc

from ..container.volume import open_volume
from ..metadata import IJK_TO_KJI
from ..storage.filesystems import unfold_url
from ..torch import torch_safe


def read_dstd(path: str | os.PathLike[str]) -> tuple[torch.Tensor, np.ndarray]:
    """A ``.dstd`` file (path or fsspec URL; pass ``verify_path=False`` to TorchIO for URLs) as
    TorchIO data: scaled values (HU) float32 ``(1, i, j, k)`` and the ``(i, j, k)`` RAS affine."""
    return dstd_reader()(path)


def dstd_reader(
    scaled: bool = True, refine: bool = False, storage_options: dict[str, Any] | None = None
) -> Callable[[str | os.PathLike[str]], tuple[torch.Tensor, np.ndarray]]:
    """A reader with options: ``scaled=False`` keeps the stored values (label maps stored as
    integers: ``tio.LabelMap(path, reader=dstd_reader(scaled=False))``), ``refine=True`` runs a
    lossy file's learned refinement, ``storage_options`` go to fsspec."""

    def read(path: str | os.PathLike[str]) -> tuple[torch.Tensor, np.ndarray]:
        with open_volume(unfold_url(path), storage_options) as volume:
            array = volume.read(refine=refine, scaled=scaled)
            affine = volume.affine @ IJK_TO_KJI
        data = torch.from_numpy(np.ascontiguousarray(torch_safe(array).transpose(2, 1, 0))[None])
        return data, affine

    return read


__all__ = ["dstd_reader", "read_dstd"]
