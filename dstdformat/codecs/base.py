"""The contract between the container and a codec: arrays in, section payloads out, and back.

A codec never sees files or URLs. To encode it yields :class:`Section` payloads; to decode a region
it asks ``fetch`` for the sections it needs (already length- and checksum-verified by the
container) and returns the voxels of that region.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidInputError
from ..metadata import ScanMetadata
from ..tiling import Region, TileGrid

SectionKey = tuple[int, int]  # (SectionKind, tile number or NO_TILE)
Fetch = Callable[[list[SectionKey]], Mapping[SectionKey, bytes]]

#: dtypes the container can describe; a codec may accept a subset.
CONTAINER_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


@dataclass(frozen=True)
class Section:
    kind: int
    tile: int
    payload: bytes


@dataclass
class Encoded:
    """What ``encode`` returns: the sections (a lazy iterator) and codec state for the header.

    ``state`` may be filled in while ``sections`` is consumed; the writer reads it afterwards.
    """

    sections: Iterator[Section]
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Guarantee:
    """What a codec promises about decoded voxels: the tier an archive stores a file in."""

    #: "lossless" (every voxel exact), "bounded" (|decoded - original| <= max_error on every
    #: voxel, stored units) or "lossy" (a size or quality target, no per-voxel promise).
    tier: str
    max_error: float | None = None

    def describe(self, slope: float = 1.0) -> str:
        if self.tier == "bounded" and self.max_error is not None:
            return (
                f"bounded: |decoded - original| <= {self.max_error:g} on every voxel "
                f"({self.max_error * abs(slope):g} in physical units)"
            )
        return {"lossless": "lossless: every voxel exact"}.get(self.tier, f"{self.tier}: no per-voxel bound")


@dataclass(frozen=True)
class ContainerCosts:
    """Bytes a file holds besides the sections: what a codec aiming at a ratio of raw bytes to
    *file* bytes must leave room for. The writer knows them and tells the codec, so that no codec
    re-states the container's figures."""

    #: Preamble, footer and header (the header as an estimate: its codec state is not yet known).
    fixed_bytes: int = 0
    #: Each section's record in the index.
    per_section_bytes: int = 0
    #: What a JSON value costs in the header, packed as the writer packs it (format 2 deflates
    #: the header: a base layer's ~250-character record costs ~30 bytes there).
    header_bytes_of: Callable[[Any], int] = field(default=lambda value: len(json.dumps(value)))


@dataclass(frozen=True)
class DecodeContext:
    """What a codec needs to know about a stored volume to decode any part of it."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    grid: TileGrid
    params: Mapping[str, Any]
    state: Mapping[str, Any]
    #: The header's ``codec.model`` member ({"id", "sha256"}) or None.
    model: Mapping[str, Any] | None = None


class VolumeCodec(ABC):
    """Base class of codecs that turn a 3D array into container sections."""

    codec_id: ClassVar[str]
    codec_version: ClassVar[int] = 1
    #: True when decode(encode(x)) == x bit for bit (lets `dstd verify` check the original hash).
    exact: ClassVar[bool] = False
    supported_dtypes: ClassVar[tuple[str, ...]] = CONTAINER_DTYPES
    preferred_tile_shape: ClassVar[tuple[int, int, int]] = (64, 64, 64)
    #: Split each axis into equal tiles of at most the preferred size (for codecs that lose
    #: quality on thin edge tiles).
    balanced_tiles: ClassVar[bool] = False
    #: The options a user sets by name (``codec_options``, ``dstd compress`` flags).
    user_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_options(cls, options: Mapping[str, Any], name_of: Callable[[str], str] = str) -> None:
        """Refuse options this codec does not take, naming each as ``name_of`` spells it (the CLI
        spells ``max_error`` as ``--max-error``), before any data is read."""
        for name in options:
            if name in cls.user_options:
                continue
            if cls.exact:
                raise InvalidInputError(
                    f"{name_of(name)} applies to lossy codecs; {cls.codec_id!r} keeps every voxel exactly"
                )
            takes = ", ".join(map(name_of, cls.user_options)) or "no options"
            raise InvalidInputError(
                f"{name_of(name)} does not apply to codec {cls.codec_id!r} (it takes {takes})"
            )

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON parameters stored in the header; ``from_config`` must rebuild an equal codec."""

    @classmethod
    def from_config(cls, params: Mapping[str, Any]) -> VolumeCodec:
        try:
            return cls(**dict(params))
        except TypeError as exc:
            raise InvalidInputError(f"bad parameters for codec {cls.codec_id!r}: {exc}") from None

    def describe(self) -> dict[str, Any]:
        """The header's ``codec`` member (the writer adds ``state`` after encoding)."""
        return {
            "id": self.codec_id,
            "version": self.codec_version,
            "model": None,
            "params": self.get_config(),
        }

    def check_array(self, array: np.ndarray) -> None:
        """Raise :class:`InvalidInputError` for arrays this codec cannot store."""
        if array.dtype.name not in self.supported_dtypes:
            raise InvalidInputError(
                f"codec {self.codec_id!r} does not support dtype {array.dtype.name}; "
                f"supported: {', '.join(self.supported_dtypes)}"
            )

    @abstractmethod
    def encode(
        self,
        array: np.ndarray,
        grid: TileGrid,
        *,
        progress: bool = False,
        metadata: ScanMetadata | None = None,
        costs: ContainerCosts | None = None,
    ) -> Encoded:
        """Encode a C-contiguous little-endian 3D array into sections.

        ``metadata`` tells lossy codecs how stored values map to physical units (slope, intercept);
        ``costs`` what the container adds, for codecs that aim at a file size.
        """

    @abstractmethod
    def decode_region(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> np.ndarray:
        """Decode exactly ``region`` (step-1 slices inside the volume) as an array of ctx.dtype."""

    def guarantee(self) -> Guarantee:
        """The tier this codec, with these parameters, stores data in."""
        return Guarantee("lossless" if self.exact else "lossy")

    def slab_alignment(self, ctx: DecodeContext) -> int:
        """Slices along axis 0 that decoding works in, when not whole tiles (a codec that computes
        its output in blocks of its own): a whole-volume read cuts its slabs at multiples of this,
        so that no block is computed twice. 0 means the tiles."""
        return 0

    def without_refinement(self) -> VolumeCodec:
        """This codec minus any learned refinement it applies when decoding (itself when it has
        none): what ``Volume.read(refine=False)`` decodes with."""
        return self

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore

    def __hash__(self) -> int:
        return hash((self.codec_id, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class BatchDecoding(ABC):
    """An optional ability of a codec (as zarr's partial-decode mixin is of zarr codecs): decode
    many regions, of one stored volume or several, together, so that a learned layer runs over all
    of them in shared batches. Check with ``isinstance(codec, BatchDecoding)``."""

    @abstractmethod
    def decode_regions(
        self, requests: Sequence[tuple[DecodeContext, Region, Fetch]], batch: int | None = None
    ) -> list[np.ndarray]:
        """``decode_region`` of every request, in order; ``batch`` bounds how many crops a learned
        layer takes at once (None: as many as there are)."""
