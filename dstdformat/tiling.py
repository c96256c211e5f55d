"""Tiles and sections, the vocabulary the container and the codecs share.

How a volume is cut into independently decodable tiles: tiles are numbered in C order over the
grid; edge tiles are clipped to the volume, so a volume smaller than one tile is a single (small)
tile. What a section holds (:class:`SectionKind`) and the tile number of a global section.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

from .errors import CorruptHeaderError, InvalidInputError

Region = tuple[slice, slice, slice]  # half-open, step 1, inside the volume
#: A tile larger than this (1 Gi voxels) is refused: decoders hold a tile in memory.
MAX_TILE_VOXELS = 1 << 30
#: The tile number of a section that belongs to no tile (the shape section).
NO_TILE = 0xFFFFFFFF


class SectionKind(IntEnum):
    """What a section holds. Readers skip kinds they do not know (forward compatibility); kind 3
    is reserved for an embedded model (SPEC.md), which nothing writes."""

    SHAPE = 1  #: per-scan deformation to the template (global)
    TEXTURE = 2  #: one independently decodable tile of voxel/latent data
    OUTLIERS = 4  #: voxels the base layer does not carry, stored exactly (tiles that have any)

    @classmethod
    def name_of(cls, value: int) -> str:
        try:
            return cls(value).name.lower()
        except ValueError:
            return {3: "model"}.get(value, f"kind-{value}")


@dataclass(frozen=True)
class TileGrid:
    shape: tuple[int, int, int]
    tile_shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or len(self.tile_shape) != 3:
            raise CorruptHeaderError("tile grid needs a 3D shape and a 3D tile shape")
        if any(int(s) < 1 for s in self.shape) or any(int(t) < 1 for t in self.tile_shape):
            raise CorruptHeaderError(
                f"tile grid sizes must be positive: shape {self.shape}, tile {self.tile_shape}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(-(-s // t) for s, t in zip(self.shape, self.tile_shape))  # type: ignore

    @property
    def n_tiles(self) -> int:
        g = self.grid
        return g[0] * g[1] * g[2]

    def tile_number(self, coords: Sequence[int]) -> int:
        g = self.grid
        return (coords[0] * g[1] + coords[1]) * g[2] + coords[2]

    def tile_coords(self, number: int) -> tuple[int, int, int]:
        g = self.grid
        if not 0 <= number < self.n_tiles:
            raise IndexError(f"tile {number} outside grid {g}")
        return (number // (g[1] * g[2]), (number // g[2]) % g[1], number % g[2])

    def tile_region(self, number: int) -> Region:
        """The voxels a tile covers, clipped to the volume."""
        coords = self.tile_coords(number)
        return tuple(  # type: ignore[return-value]
            slice(c * t, min((c + 1) * t, s)) for c, t, s in zip(coords, self.tile_shape, self.shape)
        )

    def tile_extent(self, number: int) -> tuple[int, int, int]:
        return tuple(r.stop - r.start for r in self.tile_region(number))  # type: ignore

    def tiles_in_region(self, region: Region) -> list[int]:
        """Numbers of the tiles that intersect ``region`` (empty for an empty region)."""
        ranges = []
        for r, t in zip(region, self.tile_shape):
            if r.stop <= r.start:
                return []
            ranges.append(range(r.start // t, (r.stop - 1) // t + 1))
        return [self.tile_number(c) for c in itertools.product(*ranges)]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n_tiles))

    def to_json(self) -> dict:
        return {"tile_shape": list(self.tile_shape), "grid": list(self.grid)}


def overlap_slices(outer: Region, inner: Region) -> tuple[Region, Region]:
    """Where ``outer`` and ``inner`` meet: (slices into an ``inner`` block, slices into ``outer``)."""
    src, dst = [], []
    for o, i in zip(outer, inner):
        lo, hi = max(o.start, i.start), min(o.stop, i.stop)
        src.append(slice(lo - i.start, hi - i.start))
        dst.append(slice(lo - o.start, hi - o.start))
    return tuple(src), tuple(dst)  # type: ignore[return-value]


#: Tile shapes by use (``save(layout=...)``, ``dstd compress --layout``); ``default`` is each
#: codec's own. ``training`` suits random patch reads: on the shared scans at 128x
#: (benchmarks/training_patches.py, docs/benchmarks.md) a 96^3 patch fetches 50 KB instead of
#: 75 KB and reads 1.6x faster locally, at +2.6 % MAE; on a 512x512 chest the CPU per 64x96x96
#: patch fell from 301 to 52 ms (issue 26).
LAYOUTS: dict[str, tuple[int, int, int] | None] = {"default": None, "training": (64, 128, 128)}


def check_layout(layout: str) -> None:
    """Refuse a layout name that :data:`LAYOUTS` does not hold."""
    if layout not in LAYOUTS:
        raise InvalidInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def layout_tile_shape(layout: str, shape: Sequence[int]) -> tuple[int, int, int] | None:
    """The tile shape of ``layout`` for a volume of ``shape`` (None: the codec's own), equal
    tiles along each axis."""
    check_layout(layout)
    preferred = LAYOUTS[layout]
    return None if preferred is None else default_tile_shape(shape, preferred, balanced=True)


def default_tile_shape(
    shape: Sequence[int], preferred: Sequence[int], balanced: bool = False
) -> tuple[int, int, int]:
    """``preferred`` clipped to the volume, so small volumes are one tile.

    ``balanced`` keeps the same number of tiles per axis but makes them equal, so no thin tile is
    left at the end (141 slices with 128 preferred: two tiles of 71, not 128 + 13).
    """
    tile = [max(1, min(int(p), int(s))) for p, s in zip(preferred, shape)]
    if balanced:
        tile = [-(-int(s) // -(-int(s) // t)) for s, t in zip(shape, tile)]
    return tuple(tile)  # type: ignore[return-value]
