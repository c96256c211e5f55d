"""PyTorch datasets over ``.dstd`` collections (the ``torch`` extra is PyTorch itself, a core
dependency): :class:`PatchDataset`."""

from .dataset import PatchDataset, ScanInfo, torch_safe
from .tile_cache import TileCache

__all__ = ["PatchDataset", "ScanInfo", "TileCache", "torch_safe"]
