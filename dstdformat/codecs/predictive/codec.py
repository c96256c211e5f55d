"""The predictive codec: the archive tiers. Lossless (``max_error=0``) or with a guaranteed bound
on every voxel, slice planes predicted from their neighbours and coded by the smallest of its
plane coders.

Tiles are whole slices, 8 deep by default: the plane coders adapt their contexts over a plane,
and cutting 512x512 slices into 128x128 tiles costs 5-7 % in size; a region read decodes the
slices it touches (docs/benchmarks.md, archive tiers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from ...errors import CorruptHeaderError, InvalidInputError
from ...metadata import ScanMetadata
from ...progress import track
from ...tiling import Region, SectionKind, TileGrid, overlap_slices
from ..base import ContainerCosts, DecodeContext, Encoded, Fetch, Guarantee, Section, VolumeCodec
from .planes import PLANE_CODERS, plane_coder
from .slices import SliceCoding, decode_tile, encode_tile

#: Tiles coded or decoded at once: the plane coders release the GIL.
_THREADS = max(1, min(4, os.cpu_count() or 1))
DEFAULT_PLANE_CODERS = ("jpegls", "jpegxl")


class PredictiveCodec(VolumeCodec):
    """Exact when ``max_error`` is 0; otherwise ``|decoded - original| <= max_error`` (stored
    units, whole numbers) on every voxel. Integer volumes of at most 16 bits. ``plane_coders``:
    the coders a slice may be stored with (the first also picks each slice's prediction; coders
    that only code losslessly are skipped under a bound)."""

    codec_id: ClassVar[str] = "predictive"
    # 2: slices grouped into shared (stacked) streams, compact records, bare JPEG-LS streams,
    # transposed planes (payload.py)
    codec_version: ClassVar[int] = 2
    supported_dtypes: ClassVar[tuple[str, ...]] = ("uint8", "int8", "uint16", "int16")
    preferred_tile_shape: ClassVar[tuple[int, int, int]] = (8, 512, 512)
    user_options: ClassVar[tuple[str, ...]] = ("max_error", "plane_coders", "inter_slice")

    def __init__(
        self,
        max_error: float = 0,
        plane_coders: Sequence[str] = DEFAULT_PLANE_CODERS,
        inter_slice: bool = True,
    ) -> None:
        coders = (plane_coders,) if isinstance(plane_coders, str) else tuple(plane_coders)
        unknown = [c for c in coders if c not in PLANE_CODERS]
        if not coders or unknown or len(set(coders)) != len(coders):
            raise InvalidInputError(
                f"predictive plane_coders must be distinct ids out of {', '.join(sorted(PLANE_CODERS))}; "
                f"got {list(coders)}"
            )
        limit = plane_coder(coders[0]).max_near
        if (
            isinstance(max_error, bool)
            or not isinstance(max_error, (int, float))
            or not (float(max_error).is_integer() and 0 <= max_error <= limit)
        ):
            raise InvalidInputError(
                f"predictive max_error must be a whole number 0..{limit} (stored units) with plane coder "
                f"{coders[0]!r} first; got {max_error!r} (for fractional bounds use codec 'deepstd' "
                "with max_error)"
            )
        if not isinstance(inter_slice, bool):
            raise InvalidInputError(f"predictive inter_slice must be true or false; got {inter_slice!r}")
        self.max_error, self.plane_coders, self.inter_slice = int(max_error), coders, inter_slice
        self.exact = self.max_error == 0  # type: ignore[misc]  # this instance's guarantee

    def get_config(self) -> dict[str, Any]:
        return {
            "max_error": self.max_error,
            "plane_coders": list(self.plane_coders),
            "inter_slice": self.inter_slice,
        }

    def guarantee(self) -> Guarantee:
        return Guarantee("lossless") if self.exact else Guarantee("bounded", self.max_error)

    def check_array(self, array: np.ndarray) -> None:
        if array.dtype.name not in self.supported_dtypes:
            raise InvalidInputError(
                f"codec 'predictive' stores integer volumes of at most 16 bits, not {array.dtype.name}; "
                "use codec 'lossless' to keep it exactly"
                + (" or 'deepstd' with max_error for a bound" if array.dtype.kind == "f" else "")
            )

    def slice_coding(self, dtype: np.dtype) -> SliceCoding:
        if np.dtype(dtype).name not in self.supported_dtypes:  # a header naming another dtype
            raise CorruptHeaderError(f"codec 'predictive' cannot hold {np.dtype(dtype).name} voxels")
        info = np.iinfo(dtype)
        coders = tuple(plane_coder(c) for c in self.plane_coders)
        return SliceCoding(coders, self.max_error, self.inter_slice, int(info.min), int(info.max))

    def encode(
        self,
        array: np.ndarray,
        grid: TileGrid,
        *,
        progress: bool = False,
        metadata: ScanMetadata | None = None,
        costs: ContainerCosts | None = None,
    ) -> Encoded:
        self.check_array(array)
        coding = self.slice_coding(array.dtype)
        state: dict[str, Any] = {
            "plane_coders": {
                c.coder_id: {"libraries": c.library_versions(), "settings": c.settings()}
                for c in coding.coders
            }
        }

        def one(tile: int) -> Section:
            block = array[grid.tile_region(tile)].astype(np.int32)
            return Section(SectionKind.TEXTURE, tile, encode_tile(block, coding, f"tile {tile}"))

        def sections():
            tiles = list(grid)
            with ThreadPoolExecutor(_THREADS) as pool:
                for start in range(0, len(tiles), 4 * _THREADS):  # a bounded look-ahead
                    yield from pool.map(one, tiles[start : start + 4 * _THREADS])

        bar = track(sections(), enabled=progress, desc="compressing tiles", total=grid.n_tiles, unit="tile")
        return Encoded(bar, state)

    def decode_region(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> np.ndarray:
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=ctx.dtype)
        tiles = ctx.grid.tiles_in_region(region)
        payloads = fetch([(SectionKind.TEXTURE, t) for t in tiles])
        coding = self.slice_coding(ctx.dtype)

        def one(tile: int) -> None:
            what = f"texture section of tile {tile}"
            block = decode_tile(
                payloads[(SectionKind.TEXTURE, tile)], ctx.grid.tile_extent(tile), coding, what
            )
            src, dst = overlap_slices(region, ctx.grid.tile_region(tile))
            out[dst] = block[src]

        if len(tiles) <= 1:  # an empty region (a key that selects nothing) has no tile
            for tile in tiles:
                one(tile)
        else:
            with ThreadPoolExecutor(min(_THREADS, len(tiles))) as pool:
                list(pool.map(one, tiles))
        return out

    def slab_alignment(self, ctx: DecodeContext) -> int:
        # Slabs several tiles deep, so that a whole-volume read decodes tiles side by side.
        return ctx.grid.tile_shape[0] * 2 * _THREADS
