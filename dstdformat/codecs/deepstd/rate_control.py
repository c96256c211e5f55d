"""Rate control over the base-layer contract: every tile coded at the rate the mode asks for.

``ratio`` counts the raw bytes against everything in the file (exact voxels, headers, shape code)
and hands the layer the budget left for its streams; ``quality`` gives every tile the lowest rate
that reaches a PSNR; ``max_error`` bounds every voxel (layers that serve it), and stores exactly
whatever a layer misses. The searches over each layer's knob are the layer's
(:meth:`~.base_layers.BaseLayerCoder.code_budget`, ``code_quality``); the accounting, the fallback
of ``base="auto"`` and the one verdict on an unreachable ratio are here, for every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import InvalidInputError
from ...progress import track
from ...tiling import TileGrid
from ..base import ContainerCosts
from . import outliers
from .base_layers import FALLBACK, BaseLayerCoder, BudgetOutOfReach, base_layer
from .decoding import to_dtype

#: Header bytes per tile that every layer costs (its rate, maybe its outlier flag).
STATE_PER_TILE = 14
#: Streams of fewer bytes than this per tile are refused (or, clamped, given this much).
FLOOR_BYTES_PER_TILE = 40


@dataclass(frozen=True)
class RateTarget:
    """What the codec asks: its mode (``ratio``, ``quality``, ``max_error``) and value;
    ``clamp_ratio`` lowers an unreachable ratio instead of refusing it; ``fallback`` codes with
    the fallback layer when the chosen one cannot reach the ratio (``base="auto"``)."""

    mode: str
    value: float
    clamp_ratio: bool = False
    fallback: bool = False


@dataclass
class TextureJob:
    """The tiles to code: ``source`` in stored units on ``grid``, ``window`` the values the base
    layer sees (the rest clipped), ``far`` the limits past which voxels are stored exactly (they
    are left out of PSNRs), and what else the file holds: ``outlier_payloads`` (the outlier
    section of each tile that has one), ``raw_bytes`` of the scan, ``extra_bytes`` of shape code
    and its header, the container's ``costs``."""

    source: np.ndarray
    grid: TileGrid
    window: tuple[float, float]
    far: tuple[float, float] = (-math.inf, math.inf)
    outlier_payloads: dict[int, bytes] = field(default_factory=dict)
    raw_bytes: int = 0
    extra_bytes: int = 0
    costs: ContainerCosts = field(default_factory=ContainerCosts)

    def raw(self, tile: int) -> np.ndarray:
        return self.source[self.grid.tile_region(tile)]

    def clipped(self, tile: int) -> np.ndarray:
        return np.clip(self.raw(tile), *self.window, dtype=np.float64)


@dataclass
class CodedTexture:
    """Per tile its stream and the rate the header records (bits per voxel, what the refinement
    is told), and the header's record of the layer that coded them (None for SPERR)."""

    streams: list[bytes]
    bits_per_voxel: list[float]
    base_record: dict | None


def code_texture(layer: BaseLayerCoder, target: RateTarget, job: TextureJob, progress: bool) -> CodedTexture:
    """The base layer over ``job``'s tiles at ``target`` (``job.outlier_payloads`` gains what
    ``max_error`` stores exactly)."""
    if target.mode == "quality":
        return _code_quality(layer, target.value, job, progress)
    if target.mode == "max_error":
        return _code_max_error(layer, target.value, job, progress)
    return _code_ratio(layer, target, job, progress)


def _code_ratio(layer: BaseLayerCoder, target: RateTarget, job: TextureJob, progress: bool) -> CodedTexture:
    tiles = list(job.grid)
    outlier_bytes = sum(map(len, job.outlier_payloads.values()))
    budget = job.raw_bytes / target.value
    per_tile = 2 * job.costs.per_section_bytes + STATE_PER_TILE
    overhead = job.costs.fixed_bytes + outlier_bytes + job.extra_bytes + per_tile * len(tiles)

    def layer_costs(candidate: BaseLayerCoder) -> int:
        record = candidate.record([])
        fixed = 0 if record is None else job.costs.header_bytes_of(record)
        return fixed + candidate.record_bytes_per_tile * len(tiles)

    texture_budget = budget - overhead - layer_costs(layer)
    floor_bytes = FLOOR_BYTES_PER_TILE * len(tiles)
    if texture_budget < floor_bytes and not target.clamp_ratio:
        raise _out_of_reach(target, job, budget, outlier_bytes, overhead + layer_costs(layer), floor_bytes)
    texture_budget = max(texture_budget, floor_bytes)
    try:
        streams, knobs = layer.code_budget(
            job.clipped,
            job.grid,
            texture_budget,
            target.value,
            target.clamp_ratio and not target.fallback,
            progress,
        )
    except BudgetOutOfReach as exc:
        if not target.fallback:
            costs = overhead + layer_costs(layer)
            raise _out_of_reach(target, job, budget, outlier_bytes, costs, exc.smallest) from None
        # The layer's smallest streams are over the budget: the fallback's rate goes down to nothing.
        fallback = base_layer(FALLBACK).for_encoding(job.window)
        texture_budget += layer_costs(layer) - layer_costs(fallback)
        layer = fallback
        streams, knobs = layer.code_budget(
            job.clipped, job.grid, texture_budget, target.value, target.clamp_ratio, progress
        )
    return _coded(layer, job, streams, knobs)


def _out_of_reach(
    target: RateTarget, job: TextureJob, budget: float, outlier_bytes: int, overhead: int, smallest: int
) -> InvalidInputError:
    """The one message for a ratio no stream can reach, whichever check found it."""
    return InvalidInputError(
        f"ratio {target.value:g} is out of reach for this volume: its budget of {budget:.0f} "
        f"bytes is taken by {outlier_bytes} bytes of out-of-window voxels and "
        f"{overhead - outlier_bytes} bytes of headers and shape code, and the base layer's smallest "
        f"streams need {smallest} bytes; ask for at most {job.raw_bytes / (overhead + smallest):.0f}x"
        + (
            "; this is one slice (a 2D image is stored as a volume of one slice), where a "
            "file's fixed costs weigh most: a lower ratio or the lossless codec suits it"
            if job.grid.shape[0] == 1
            else ""
        )
    )


def _coded(layer: BaseLayerCoder, job: TextureJob, streams: list[bytes], knobs: list[float]) -> CodedTexture:
    rates = [layer.rate_of(s, k, job.grid.tile_extent(t)) for t, s, k in zip(job.grid, streams, knobs)]
    return CodedTexture(streams, rates, layer.record(knobs))


def _code_quality(layer: BaseLayerCoder, target_db: float, job: TextureJob, progress: bool) -> CodedTexture:
    peak = job.window[1] - job.window[0]
    streams, knobs = [], []
    for tile in track(list(job.grid), enabled=progress, desc=layer.label, unit="tile"):
        clipped = job.clipped(tile)
        counted = ~outliers.outlier_mask(job.raw(tile), *job.far)

        def quality_of(stream: bytes, clipped=clipped, counted=counted) -> float:
            # The decoder's own path, so the PSNR is what readers get.
            decoded = layer.decode(
                stream, clipped.shape, what="the tile just coded", trusted=True, dtype=np.float64
            )
            return psnr(clipped, decoded, peak, counted)

        stream, knob = layer.code_quality(clipped, target_db, quality_of, f"tile {tile}")
        streams.append(stream)
        knobs.append(knob)
    return _coded(layer, job, streams, knobs)


def _code_max_error(layer: BaseLayerCoder, value: float, job: TextureJob, progress: bool) -> CodedTexture:
    """Each tile coded to the bound; whatever the layer misses (it should not) is stored exactly."""
    dtype = job.source.dtype
    tolerance = math.floor(value) if dtype.kind in "iu" else value * (1 - 1e-6)
    if tolerance <= 0:
        raise InvalidInputError(
            f"max_error {value:g} is below one step of {dtype.name}; use the lossless codec"
        )
    streams, rates = [], []
    for tile in track(list(job.grid), enabled=progress, desc=layer.label, unit="tile"):
        raw, clipped = job.raw(tile), job.clipped(tile)
        payload = layer.encode_bound(clipped, tolerance, f"tile {tile}")
        decoded = layer.decode(
            payload, clipped.shape, what="the tile just coded", trusted=True, dtype=np.float64
        )
        missed = np.abs(to_dtype(decoded, dtype, *job.window).astype(np.float64) - raw) > value
        missed |= outliers.outlier_mask(raw, *job.far)
        if missed.any():
            job.outlier_payloads[tile] = outliers.encode(raw, missed)
        streams.append(payload)
        rates.append(8.0 * len(payload) / clipped.size)
    return CodedTexture(streams, rates, layer.record([tolerance] * len(streams)))


def psnr(reference: np.ndarray, decoded: np.ndarray, peak: float, counted: np.ndarray | None = None) -> float:
    """PSNR over the voxels in ``counted`` (all when None)."""
    error = (reference - decoded) ** 2
    if counted is not None:
        if not counted.any():
            return math.inf
        error = error[counted]
    mse = float(np.mean(error))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
