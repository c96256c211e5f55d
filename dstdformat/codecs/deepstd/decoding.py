"""The decoding side of the deepstd codec, shared by texture-only and shape-coded files: the
header state a decoder needs, the refinement blocks and their layout, the cache of decoded
base-layer tiles, and pasting decoded blocks into a region (region plans: ``region_plan.py``).
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import OrderedDict

import numpy as np

from ...errors import CorruptHeaderError, InvalidInputError
from ...tiling import Region, TileGrid, default_tile_shape, overlap_slices
from ..base import DecodeContext
from . import base_layers

#: Output blocks of the refinement: small enough that reading one slice refines little more than
#: that slice's neighbourhood, large enough that the halo adds ~70% compute, not 200%.
REFINE_BLOCK = (32, 256, 256)
#: How refinement blocks are laid out in files written now (see Blocks).
REFINE_LAYOUT = "tile"
#: Refinement gains are k / GAIN_STEPS for k in 0..MAX_GAIN, one per block, chosen by the encoder.
GAIN_STEPS, MAX_GAIN = 8, 16


class BaseCache:
    """The last few decoded base-layer tiles of one file: a full read asks for each tile's
    neighbours as halo, and slice-by-slice readers ask for the same tile again and again."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self.owner: DecodeContext | None = None
        self.tiles: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # threads read regions of one volume at once

    def get(self, ctx: DecodeContext) -> BaseCache:
        with self._lock:
            if self.owner is not ctx:
                self.owner, self.tiles = ctx, OrderedDict()
        return self

    def get_tile(self, tile: int) -> np.ndarray | None:
        with self._lock:
            block = self.tiles.get(tile)
            if block is not None:
                self.tiles.move_to_end(tile)
            return block

    def put(self, tile: int, block: np.ndarray) -> None:
        with self._lock:
            self.tiles[tile] = block
            self.tiles.move_to_end(tile)
            while len(self.tiles) > self.capacity:
                self.tiles.popitem(last=False)


class DecodeState:
    """The codec state of a file, checked once per read."""

    def __init__(
        self,
        window,
        slope,
        intercept,
        halo,
        rates,
        outlier_tiles,
        block,
        gains,
        layout,
        base: base_layers.BaseLayerCoder,
    ) -> None:
        self.base = base
        self.window, self.slope, self.intercept = window, slope, intercept
        self.halo, self.rates, self.outlier_tiles, self.block = halo, rates, outlier_tiles, block
        self.gains, self.layout = gains, layout

    def blocks(self, ctx: DecodeContext) -> Blocks:
        return Blocks(ctx.shape, ctx.grid, self.block, self.halo, self.layout)

    def gain(self, block: int) -> int:
        return self.gains[block]

    @classmethod
    def from_context(cls, ctx: DecodeContext) -> DecodeState:
        s = ctx.state
        try:
            low, high = (float(v) for v in s["stored_window"])
            slope, intercept = float(s["slope"]), float(s["intercept"])
            halo = int(s["halo"])
            rates = [float(r) for r in s["bits_per_voxel"]]
            outlier_tiles = {int(t) for t in s["outlier_tiles"]}
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CorruptHeaderError(f"deepstd codec state is incomplete or malformed: {exc}") from None
        if not all(math.isfinite(v) for v in (low, high, slope, intercept)):
            raise CorruptHeaderError("deepstd codec state has a non-finite window or scaling")
        if (
            len(rates) != ctx.grid.n_tiles
            or not 0 <= halo <= 64
            or slope == 0
            or not low < high
            or any(not 0 <= t < ctx.grid.n_tiles for t in outlier_tiles)
            or any(not (r > 0 and math.isfinite(r)) for r in rates)
        ):
            raise CorruptHeaderError("deepstd codec state does not match the tile grid")
        block = s.get("refine_block", REFINE_BLOCK)
        if not (
            isinstance(block, (list, tuple))
            and len(block) == 3
            and all(isinstance(b, int) and 1 <= b <= 4096 for b in block)
        ):
            raise CorruptHeaderError(f"deepstd refine_block must be 3 integers in 1..4096, got {block!r}")
        layout = s.get("refine_layout", "volume")  # codec version 1 files
        if layout not in ("volume", "tile"):
            raise CorruptHeaderError(f"deepstd refine_layout must be 'volume' or 'tile', got {layout!r}")
        blocks = Blocks(ctx.shape, ctx.grid, tuple(block), halo, layout).count
        gains = s.get("refine_gain", [GAIN_STEPS] * blocks)
        if not (
            isinstance(gains, list)
            and len(gains) == blocks
            and all(isinstance(g, int) and 0 <= g <= MAX_GAIN for g in gains)
        ):
            raise CorruptHeaderError(f"deepstd refine_gain must be {blocks} integers in 0..{MAX_GAIN}")
        base = base_layers.layer_from_state(dict(s), ctx.grid.n_tiles)
        return cls(
            (low, high), slope, intercept, halo, rates, outlier_tiles, tuple(block), gains, layout, base
        )

    def rate_code(self, tile: int) -> float:
        from ...model.refine import rate_code

        return rate_code(self.rates[tile])


class Blocks:
    """The refinement blocks of a volume: numbering, the region each one outputs, and the crop
    (that region plus the halo) the network reads for it.

    Layout "tile" (what the encoder writes): blocks split each base-layer tile into equal parts,
    numbered tile by tile, and the halo stops at the tile's edge, so a region read fetches and
    decodes only the tiles under it. Layout "volume" (files written before it; still read): one
    block grid over the whole volume, halos reaching into neighbouring tiles. ``block=None``: one
    block per tile (no refinement).
    """

    def __init__(
        self, shape: tuple[int, ...], grid: TileGrid, block: tuple[int, ...] | None, halo: int, layout: str
    ) -> None:
        self.shape, self.grid, self.halo = tuple(shape), grid, halo
        self.whole_volume = layout == "volume" and block is not None
        if self.whole_volume:
            assert block is not None
            self.volume_grid = TileGrid(self.shape, tuple(min(b, n) for b, n in zip(block, shape)))  # type: ignore[arg-type]
            self.count = self.volume_grid.n_tiles
            return
        self.local: list[TileGrid] = []
        self.first: list[int] = []
        count = 0
        for tile in range(grid.n_tiles):
            extent = grid.tile_extent(tile)
            local = TileGrid(
                extent, default_tile_shape(extent, block, balanced=True) if block is not None else extent
            )
            self.local.append(local)
            self.first.append(count)
            count += local.n_tiles
        self.count = count

    def _tile_of(self, number: int) -> tuple[int, int]:
        tile = bisect.bisect_right(self.first, number) - 1
        return tile, number - self.first[tile]

    def keep(self, number: int) -> Region:
        if self.whole_volume:
            return self.volume_grid.tile_region(number)
        tile, local = self._tile_of(number)
        origin = self.grid.tile_region(tile)
        return tuple(
            slice(o.start + r.start, o.start + r.stop)  # type: ignore[return-value]
            for o, r in zip(origin, self.local[tile].tile_region(local))
        )

    def crop(self, number: int) -> Region:
        """The block grown by the halo, inside the volume (layout "volume") or its tile."""
        bounds = (
            tuple(slice(0, n) for n in self.shape)
            if self.whole_volume
            else self.grid.tile_region(self._tile_of(number)[0])
        )
        return grow(self.keep(number), self.halo, bounds)  # type: ignore[arg-type]

    def in_region(self, region: Region) -> list[int]:
        if self.whole_volume:
            return list(self.volume_grid.tiles_in_region(region))
        out = []
        for tile in self.grid.tiles_in_region(region):
            local, _ = overlap_slices(region, self.grid.tile_region(tile))  # tile coordinates
            out += [self.first[tile] + b for b in self.local[tile].tiles_in_region(local)]
        return out


def stored_window(
    window: tuple[float, float], slope: float, intercept: float, dtype: np.dtype
) -> tuple[float, float]:
    """The HU window in stored units, inside what the dtype can hold."""
    if slope == 0:
        raise InvalidInputError("metadata slope is 0: the stored values carry no intensity")
    low, high = sorted((w - intercept) / slope for w in window)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(math.ceil(low), info.min), min(math.floor(high), info.max)
        if low >= high:
            raise InvalidInputError(
                f"the HU window {window} is outside what {dtype.name} stores "
                f"with slope {slope} and intercept {intercept}"
            )
    return float(low), float(high)


def to_dtype(block: np.ndarray, dtype: np.dtype, low: float, high: float) -> np.ndarray:
    """Decoded values as the stored dtype: clipped to the window, rounded for integers."""
    block = np.clip(block, low, high)
    if np.dtype(dtype).kind in "iu":
        block = np.rint(block)
    return block.astype(dtype)


def grow(region: Region, halo: int, bounds: Region) -> Region:
    """``region`` grown by ``halo`` on every side, clipped to ``bounds``."""
    return tuple(
        slice(max(b.start, r.start - halo), min(b.stop, r.stop + halo))  # type: ignore[return-value]
        for r, b in zip(region, bounds)
    )


def assemble(grid: TileGrid, crop: Region, block_of) -> np.ndarray:
    out = None
    for tile in grid.tiles_in_region(crop):
        block = block_of(tile)
        if out is None:
            out = np.empty(tuple(r.stop - r.start for r in crop), dtype=block.dtype)
        src, dst = overlap_slices(crop, grid.tile_region(tile))
        out[dst] = block[src]
    assert out is not None
    return out


def scatter(
    out: np.ndarray, region: Region, tile_region: Region, flat_index: np.ndarray, values: np.ndarray
) -> None:
    """Write a tile's exact voxels (flat C-order indices in the tile) that fall inside ``region``."""
    extent = tuple(t.stop - t.start for t in tile_region)
    coords = np.unravel_index(flat_index, extent)
    inside = np.ones(len(flat_index), dtype=bool)
    local = []
    for c, r, t in zip(coords, region, tile_region):
        absolute = c + t.start
        inside &= (absolute >= r.start) & (absolute < r.stop)
        local.append(absolute - r.start)
    out[tuple(c[inside] for c in local)] = values[inside]


def paste(out: np.ndarray, region: Region, values: np.ndarray, tile_region: Region) -> None:
    src, dst = overlap_slices(region, tile_region)
    out[dst] = values[src]
