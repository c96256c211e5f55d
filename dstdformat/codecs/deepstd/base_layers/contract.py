"""The base-layer contract: what rate control and the decoder ask of a classical coder.

A base layer codes a tile of stored values, already clipped to the HU window, as one stream. It
declares what it can guarantee (the modes it serves), how large a tile it takes and which deepstd
format version first knew it; it encodes at a knob (its own unit: AV1's CRF, SPERR's bits per
voxel) and decodes; and it gives rate control the two searches only it can do well (a knob per
tile for a byte budget, and the lowest rate that reaches a PSNR). Rate control
(:mod:`..rate_control`) does the bookkeeping around them the same way for every layer: the
budget left after headers and exact voxels, the one "out of reach" verdict, the bound check.

Adding a base layer is one module with a subclass of :class:`BaseLayerCoder` and one line in
:data:`.BASE_LAYERS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from ....errors import InvalidInputError
from ....tiling import TileGrid

#: A tile number -> that tile's block, clipped to the window (float64), as rate control hands it.
TileBlocks = Callable[[int], np.ndarray]
#: A stream -> the PSNR (dB) its decode reaches on the tile it codes.
QualityOf = Callable[[bytes], float]


class BudgetOutOfReach(InvalidInputError):
    """Even the layer's smallest streams are over the budget: ``smallest`` bytes."""

    def __init__(self, smallest: int, budget: float, setting: str) -> None:
        super().__init__(
            f"out of reach: the smallest streams ({setting}) take {smallest} bytes, more than "
            f"the budget of {budget:.0f}"
        )
        self.smallest = smallest


class BaseLayerCoder(ABC):
    """One base layer, set up for one file: for writing (:meth:`for_encoding`) or for reading the
    header's record of it (:meth:`from_record`)."""

    #: The id files record (``state["base"]["codec"]``) and users choose (``base=``).
    layer_id: ClassVar[str]
    #: How progress bars and ``dstd info`` name it.
    label: ClassVar[str]
    #: The modes it serves: ``ratio`` and ``quality`` (any lossy layer), ``max_error`` (a layer
    #: that bounds every voxel by itself).
    modes: ClassVar[frozenset[str]]
    #: Longest tile edge it codes.
    max_extent: ClassVar[int]
    #: The lowest deepstd codec version whose readers know this layer.
    format_version: ClassVar[int]
    #: Bytes its header record adds per tile (rate control counts them before coding).
    record_bytes_per_tile: ClassVar[int] = 0

    @classmethod
    @abstractmethod
    def for_encoding(cls, window: tuple[float, float], preset: int | None = None) -> BaseLayerCoder:
        """The layer that codes values clipped to ``window`` (``preset``: a speed setting, where
        the layer has one)."""

    @classmethod
    @abstractmethod
    def from_record(cls, record: dict | None, n_tiles: int) -> BaseLayerCoder:
        """The layer a header describes; ValueError, KeyError or TypeError when it is malformed."""

    @abstractmethod
    def record(self, knobs: Sequence[float]) -> dict | None:
        """What the header keeps about this layer (id, libraries, settings, per-tile knobs: the
        tolerance in ``max_error`` mode), or None where files record nothing (the layer files
        had before there was a choice)."""

    @abstractmethod
    def encode(self, block: np.ndarray, knob: float, what: str) -> bytes:
        """``block`` (window-clipped float64) at ``knob``, bounded by a deadline and retried."""

    def encode_bound(self, block: np.ndarray, tolerance: float, what: str) -> bytes:
        """``block`` with every voxel within ``tolerance``: only layers serving ``max_error``."""
        raise InvalidInputError(f"the {self.label} cannot bound the error of every voxel")

    @abstractmethod
    def decode(
        self,
        payload: bytes,
        shape: tuple[int, int, int],
        *,
        what: str,
        trusted: bool = False,
        dtype: np.dtype | type = np.float32,
        depth: int | None = None,
    ) -> np.ndarray:
        """The tile in stored units; ``trusted`` streams (just encoded here) skip the isolation
        that streams from files get. ``depth``: only the first ``depth`` slices are needed (a
        layer that can stop early leaves the rest unset; others decode everything)."""

    @abstractmethod
    def rate_of(self, stream: bytes, knob: float, shape: tuple[int, ...]) -> float:
        """The rate (bits per voxel) the header records for a tile coded at ``knob``: what the
        refinement network is told, so it must stay what the shipped networks were trained on."""

    @abstractmethod
    def code_budget(
        self, blocks: TileBlocks, grid: TileGrid, budget: float, ratio: float, clamp: bool, progress: bool
    ) -> tuple[list[bytes], list[float]]:
        """Streams and knobs of every tile, their total as close to ``budget`` bytes as the knob
        allows (``ratio``: the asked ratio, for a first guess). :class:`BudgetOutOfReach` when even
        the smallest streams are over, unless ``clamp`` (then the smallest)."""

    @abstractmethod
    def code_quality(
        self, block: np.ndarray, target_db: float, quality_of: QualityOf, what: str
    ) -> tuple[bytes, float]:
        """The smallest stream of ``block`` (and its knob) whose decode reaches ``target_db`` as
        ``quality_of`` measures it; the finest the layer has when none does."""

    @classmethod
    def summary(cls, record: dict | None) -> str:
        """One line for ``dstd info`` about a file's record of this layer."""
        return cls.label
