"""MONAI integration (the ``monai`` extra): :class:`DstdReader` for ``LoadImage``/``LoadImaged``
and :class:`RandDstdPatchd`, a random patch read straight from the files."""

try:
    import monai  # noqa: F401 - checked here so that a missing MONAI names the extra
except ImportError as exc:
    raise ImportError("dstdformat.monai needs MONAI: pip install 'dstdformat[monai]'") from exc

from .reader import DstdReader
from .transforms import RandDstdPatchd

__all__ = ["DstdReader", "RandDstdPatchd"]
