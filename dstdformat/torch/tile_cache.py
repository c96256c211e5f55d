"""Decoded tiles kept per process under a byte budget, and patches assembled from them.

A patch of a training loop touches a few tiles; the next patch from the same scan often touches
the same ones. Decoding is the cost (an AV1 tile of 64x512x512 takes ~0.2 s), so each worker
keeps the tiles it decoded, least recently used first out, and decodes only what a patch still
misses: every missing tile in one region read where none is cached (one coalesced fetch), else
tile by tile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from ..container.volume import Volume
from ..errors import InvalidInputError
from ..tiling import Region, overlap_slices

#: A worker's decoded tiles by default: four 64x512x512 int16 tiles.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024


class TileCache:
    """Decoded tiles by (scan, tile number), at most ``max_bytes`` of them (0: none kept)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if int(max_bytes) < 0:
            raise InvalidInputError(f"cache_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = self.misses = 0
        self._tiles: OrderedDict[tuple[Hashable, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Hashable, int]) -> np.ndarray | None:
        with self._lock:
            block = self._tiles.get(key)
            if block is None:
                self.misses += 1
                return None
            self.hits += 1
            self._tiles.move_to_end(key)
            return block

    def put(self, key: tuple[Hashable, int], block: np.ndarray) -> None:
        if block.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._tiles:
                return
            self._tiles[key] = block
            self.nbytes += block.nbytes
            while self.nbytes > self.max_bytes:
                _, evicted = self._tiles.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._tiles.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        return len(self._tiles)


def read_patch(volume: Volume, region: Region, cache: TileCache, scan: Hashable, refine: bool) -> np.ndarray:
    """The stored values of ``region``, decoded from the tiles under it (cached ones reused),
    equal to the same region of a full read."""
    grid = volume.reader.header.grid
    tiles = grid.tiles_in_region(region)
    blocks = {t: cache.get((scan, t)) for t in tiles}
    missing = [t for t, block in blocks.items() if block is None]
    if len(missing) > 1 and len(missing) == len(tiles):
        box = _bounding_box([grid.tile_region(t) for t in tiles])
        decoded = volume.read_region(box, refine=refine)
        for t in tiles:
            _, inside = overlap_slices(box, grid.tile_region(t))
            blocks[t] = np.ascontiguousarray(decoded[inside])
    else:
        for t in missing:
            blocks[t] = volume.read_region(grid.tile_region(t), refine=refine)
    out = np.empty(tuple(r.stop - r.start for r in region), volume.dtype)
    for t in tiles:
        block = blocks[t]
        assert block is not None
        cache.put((scan, t), block)
        source, target = overlap_slices(region, grid.tile_region(t))
        out[target] = block[source]
    return out


def _bounding_box(regions: list[Region]) -> Region:
    return tuple(  # type: ignore[return-value]
        slice(min(r[a].start for r in regions), max(r[a].stop for r in regions)) for a in range(3)
    )
