"""MONAI integration (the ``monai`` extra): :class:`DstdReader` for ``LoadImage``/``LoadImaged``
and :class:`RandDstdPatchd`, a random patch read straight from the files."""

from .reader import DstdReader
from .transforms import RandDstdPatchd

__all__ = ["DstdReader", "RandDstdPatchd"]
