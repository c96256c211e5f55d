"""The decoder's side: warp the decoded texture back onto the scan's grid, block by block."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ....errors import CorruptHeaderError
from ....model.warp import cubic_box, field_shape, sample_cubic_voxels
from ....tiling import MAX_TILE_VOXELS, NO_TILE, Region, SectionKind
from ...base import DecodeContext, Fetch
from .field import TextureGrid, phi_from_section, scan_frame

#: Decoders refuse texture grids beyond this many times the scan's voxels (encoders stop at
#: MAX_TEXTURE_GROWTH), deformation grids beyond this many points (a 2 m whole-body scan at the
#: 4 mm field spacing has ~8 M) and voxel steps beyond this many mm: hostile headers cannot make
#: a decode take hours or all memory.
MAX_TEXTURE_FACTOR = 8
MAX_FIELD_POINTS = 1 << 24
MAX_SPACING_MM = 100.0
#: Scan slices warped at a time (bounds the memory of the 64 taps per voxel).
WARP_SLAB = 4
#: Refined texture blocks kept per open file (a full read's consecutive slabs share blocks).
BLOCK_CACHE = 24


#: Decodes a region of a texture-only context (the shape-coded file's texture grid).
DecodeTexture = Callable[[DecodeContext, Region, Fetch], np.ndarray]


class ShapeDecoder:
    """One open shape-coded file: its field, the texture's decode context, refined blocks.

    ``decode_texture`` decodes the texture (base layer, refinement, in blocks when ``refined``):
    the decoder needs nothing else of the codec."""

    def __init__(
        self, ctx: DecodeContext, fetch: Fetch, decode_texture: DecodeTexture, refined: bool
    ) -> None:
        from ..decoding import Blocks, DecodeState

        state = ctx.state
        info = state.get("shape")
        if not isinstance(info, dict):
            raise CorruptHeaderError("deepstd state has a texture grid but no shape record")
        try:
            spacing = tuple(float(s) for s in info["scan_spacing"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise CorruptHeaderError("deepstd shape record has no valid scan_spacing") from None
        if len(spacing) != 3 or not all(0 < s <= MAX_SPACING_MM for s in spacing):
            raise CorruptHeaderError(
                f"deepstd shape record has an invalid scan_spacing {spacing} "
                f"(each step must be in (0, {MAX_SPACING_MM:g}] mm)"
            )
        self.texture = TextureGrid.from_json(state.get("texture"))
        # The work and memory of decoding follow these sizes: bound them by the scan's own.
        scan_voxels = math.prod(ctx.shape)
        field_points = math.prod(field_shape(scan_frame(ctx.shape, spacing)))
        if field_points > MAX_FIELD_POINTS:
            raise CorruptHeaderError(
                f"deepstd shape record implies a {field_points}-point "
                f"deformation grid (more than {MAX_FIELD_POINTS})"
            )
        if (
            math.prod(self.texture.frame.shape) > MAX_TEXTURE_FACTOR * scan_voxels
            or math.prod(self.texture.tile_shape) > MAX_TILE_VOXELS
        ):
            raise CorruptHeaderError(
                f"deepstd texture grid {self.texture.frame.shape} is implausibly large for a {ctx.shape} scan"
            )
        try:
            outlier_tiles = {int(t) for t in state["outlier_tiles"]}
        except (KeyError, TypeError, ValueError, OverflowError):
            raise CorruptHeaderError("deepstd state has no valid outlier_tiles") from None
        if any(not 0 <= t < ctx.grid.n_tiles for t in outlier_tiles):
            raise CorruptHeaderError("deepstd outlier tiles do not match the tile grid")
        self.outlier_tiles = outlier_tiles
        self.frame = scan_frame(ctx.shape, spacing)
        key = (SectionKind.SHAPE, NO_TILE)
        self.phi = phi_from_section(fetch([key])[key], self.frame)
        # The texture decodes like a texture-only file of the texture grid, without exact voxels
        # (those are on the scan's grid).
        self.tctx = DecodeContext(
            self.texture.frame.shape,
            np.dtype(np.float32),
            self.texture.grid,
            ctx.params,
            {**state, "outlier_tiles": []},
            ctx.model,
        )
        tstate = DecodeState.from_context(self.tctx)
        self.window = tstate.window
        self.blocks = (
            tstate.blocks(self.tctx) if refined else Blocks(self.tctx.shape, self.tctx.grid, None, 0, "tile")
        )
        self.decode_texture = decode_texture
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def _voxels(self, region: Region) -> torch.Tensor:
        coords = self.frame.grid(region).reshape(-1, 3)
        with torch.no_grad():
            return self.texture.frame.to_voxel(self.phi(coords))

    def _slabs(self, region: Region) -> list[Region]:
        return [
            (slice(k, min(k + WARP_SLAB, region[0].stop)), *region[1:])  # type: ignore[misc]
            for k in range(region[0].start, region[0].stop, WARP_SLAB)
        ]

    def texture_box(self, box: Region, fetch: Fetch) -> np.ndarray:
        """The decoded (refined) texture over ``box``, block by block, through the cache."""
        from ..decoding import paste

        numbers = self.blocks.in_region(box)
        with self.lock:  # threads read regions of one volume at once
            found = {n: block for n in numbers if (block := self.cache.get(n)) is not None}
        missing = [n for n in numbers if n not in found]
        if missing:
            keeps = [self.blocks.keep(n) for n in missing]
            cover = tuple(
                slice(min(k[a].start for k in keeps), max(k[a].stop for k in keeps)) for a in range(3)
            )
            values = self.decode_texture(self.tctx, cover, fetch)
            for n, keep in zip(missing, keeps):
                found[n] = values[
                    tuple(slice(k.start - c.start, k.stop - c.start) for k, c in zip(keep, cover))
                ].copy()
        with self.lock:
            for n in numbers:
                self.cache[n] = found[n]
                self.cache.move_to_end(n)
            while len(self.cache) > BLOCK_CACHE:
                self.cache.popitem(last=False)
        out = np.empty(tuple(b.stop - b.start for b in box), dtype=np.float32)
        for n in numbers:
            paste(out, box, found[n], self.blocks.keep(n))
        return out

    def decode(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> np.ndarray:
        from .. import outliers
        from ..decoding import scatter, to_dtype

        shape = self.texture.frame.shape
        slabs = self._slabs(region)
        # The texture box every voxel of the region reads (pass 1), decoded once (one fetch,
        # the region's exact voxels with it), then sampled slab by slab (pass 2).
        boxes = [cubic_box(self._voxels(s), shape) for s in slabs]
        box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        extra = [
            (SectionKind.OUTLIERS, t) for t in ctx.grid.tiles_in_region(region) if t in self.outlier_tiles
        ]
        stash: dict = {}

        def fetch_with_exact(keys: list) -> Any:
            got = fetch(list(keys) + [k for k in extra if k not in stash])
            stash.update({k: got[k] for k in extra if k in got})
            return got

        texture = torch.from_numpy(self.texture_box(box, fetch_with_exact))
        missing = [k for k in extra if k not in stash]
        if missing:
            stash.update(fetch(missing))
        low, high = self.window
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=ctx.dtype)
        for slab in slabs:
            values = sample_cubic_voxels(texture, self._voxels(slab), shape, box, padding_value=low)
            rows = slice(slab[0].start - region[0].start, slab[0].stop - region[0].start)
            out[rows] = to_dtype(
                values.reshape(tuple(r.stop - r.start for r in slab)).numpy(), ctx.dtype, low, high
            )
        for key in extra:
            tile = key[1]
            tile_region = ctx.grid.tile_region(tile)
            scatter(
                out,
                region,
                tile_region,
                *outliers.decode(
                    stash[key], ctx.grid.tile_extent(tile), ctx.dtype, f"outlier section of tile {tile}"
                ),
            )
        return out


class ShapeDecoders:
    """The :class:`ShapeDecoder` of the file last read (one per codec object, like the tile cache)."""

    def __init__(self) -> None:
        self.owner: DecodeContext | None = None
        self.decoder: ShapeDecoder | None = None
        self._lock = threading.Lock()

    def get(
        self, ctx: DecodeContext, fetch: Fetch, decode_texture: DecodeTexture, refined: bool
    ) -> ShapeDecoder:
        with self._lock:  # built once even when many threads start reading together
            if self.owner is not ctx or self.decoder is None:
                self.decoder = ShapeDecoder(ctx, fetch, decode_texture, refined)
                self.owner = ctx
            return self.decoder
