"""Region plans: a region's base layer decoded and its refinement inputs cut, so that callers
holding many regions (a batch of zarr chunks, a shape-coded file's texture) run the network once
over all their crops, then complete each region."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...tiling import Region, SectionKind
from ..base import DecodeContext, Fetch
from . import outliers
from .decoding import GAIN_STEPS, BaseCache, Blocks, DecodeState, assemble, paste, scatter, to_dtype


class RegionPlan:
    """A region whose SPERR layer is decoded and whose refinement inputs are cut (``jobs``:
    (HU crop, rate-code crop) per block); :meth:`complete` takes the network's outputs."""

    def __init__(self, ctx: DecodeContext, region: Region, state: DecodeState, refiner) -> None:
        self.ctx, self.region, self.state, self.refiner = ctx, region, state, refiner
        # (kept region, its slices in the crop, base-layer crop, gain step); gain > 0 blocks
        # have a job, in order.
        self.blocks: list[tuple[Region, Region, np.ndarray, int]] = []
        self.jobs: list[tuple[np.ndarray, np.ndarray]] = []
        self.exact: list[tuple[Region, np.ndarray, np.ndarray]] = []

    def complete(self, refined: list[np.ndarray]) -> np.ndarray:
        ctx, region, state = self.ctx, self.region, self.state
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=ctx.dtype)
        jobs = iter(refined)
        for keep, inner, block, gain in self.blocks:
            block = block[inner]
            if gain:
                correction = (next(jobs)[inner] - state.intercept) / state.slope - block
                block = block + (gain / GAIN_STEPS) * correction
            paste(out, region, to_dtype(block, ctx.dtype, *state.window), keep)
        for tile_region, index, values in self.exact:
            scatter(out, region, tile_region, index, values)
        return out


def refine_all(refiner, jobs: list[tuple[np.ndarray, np.ndarray]], batch: int = 1) -> list[np.ndarray]:
    """Run the network over ``jobs``, ``batch`` same-shaped crops at a time (order kept).

    Every crop is computed the same way alone or in a batch (per-sample convolutions), up to
    floating-point reduction order."""
    if refiner is None or not jobs:
        return []
    out: list[np.ndarray | None] = [None] * len(jobs)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for n, (hu, _) in enumerate(jobs):
        by_shape.setdefault(hu.shape, []).append(n)
    for indices in by_shape.values():
        for start in range(0, len(indices), max(1, batch)):
            group = indices[start : start + max(1, batch)]
            results = refiner.refine_many([jobs[n] for n in group], refiner.device)
            for n, result in zip(group, results):
                out[n] = result
    return out  # type: ignore[return-value]


def plan_region(
    ctx: DecodeContext, region: Region, fetch: Fetch, load_refiner: Callable[[], Any] | None, cache: BaseCache
) -> RegionPlan:
    """Decode the base layer under ``region`` (through ``cache``) and cut the network's crops;
    ``load_refiner`` gives the network (None: no refinement), asked once the state is read."""
    state = DecodeState.from_context(ctx)
    refiner = load_refiner() if load_refiner is not None else None
    grid = ctx.grid
    # Output is computed per refinement block (per tile without a model), each from its own
    # crop, so any region is the same as that region of a full decode.
    blocks = state.blocks(ctx) if refiner is not None else Blocks(ctx.shape, grid, None, 0, "tile")
    crops = {b: blocks.crop(b) for b in blocks.in_region(region)}
    needed = sorted({t for crop in crops.values() for t in grid.tiles_in_region(crop)})
    in_region = grid.tiles_in_region(region)
    base = {t: b for t in needed if (b := cache.get_tile(t)) is not None}
    keys = [(SectionKind.TEXTURE, t) for t in needed if t not in base]
    keys += [(SectionKind.OUTLIERS, t) for t in in_region if t in state.outlier_tiles]
    payloads = fetch(keys)

    def base_block(tile: int) -> np.ndarray:
        if tile not in base:
            extent = grid.tile_extent(tile)
            # Without a model a tile's output is its own base layer, so the decoder may stop at
            # the region's last slice in it (the slices past it are never pasted, nor cached).
            first = grid.tile_region(tile)[0].start
            depth = min(region[0].stop - first, extent[0]) if refiner is None else extent[0]
            base[tile] = state.base.decode(
                payloads[(SectionKind.TEXTURE, tile)],
                extent,
                what=f"texture section of tile {tile}",
                dtype=np.float32,
                depth=depth,
            )
            if depth == extent[0]:
                cache.put(tile, base[tile])
        return base[tile]

    plan = RegionPlan(ctx, region, state, refiner)
    for number, crop in crops.items():
        block = assemble(grid, crop, base_block)
        keep = blocks.keep(number)
        inner = tuple(slice(k.start - c.start, k.stop - c.start) for k, c in zip(keep, crop))
        gain = state.gain(number) if refiner is not None else 0
        plan.blocks.append((keep, inner, block, gain))
        if gain:
            rates = assemble(
                grid, crop, lambda t: np.full(grid.tile_extent(t), state.rate_code(t), np.float32)
            )
            plan.jobs.append((block * state.slope + state.intercept, rates))
    for tile in in_region:
        if tile in state.outlier_tiles:
            plan.exact.append(
                (
                    grid.tile_region(tile),
                    *outliers.decode(
                        payloads[(SectionKind.OUTLIERS, tile)],
                        grid.tile_extent(tile),
                        ctx.dtype,
                        f"outlier section of tile {tile}",
                    ),
                )
            )
    return plan


def complete_together(plans: list[RegionPlan], batch: int | None = None) -> list[np.ndarray]:
    """Complete every plan, running the network over all their jobs at once where they share one
    (``batch`` same-shaped crops at a time; default: all of them)."""
    refiners = {id(p.refiner): p.refiner for p in plans if p.refiner is not None}
    if len(refiners) == 1:
        jobs = [job for p in plans for job in p.jobs]
        refined = refine_all(next(iter(refiners.values())), jobs, batch or max(1, len(jobs)))
    else:  # plans of different models (or none): no shared batch
        refined = [out for p in plans for out in refine_all(p.refiner, p.jobs)]
    arrays, start = [], 0
    for plan in plans:
        arrays.append(plan.complete(refined[start : start + len(plan.jobs)]))
        start += len(plan.jobs)
    return arrays
