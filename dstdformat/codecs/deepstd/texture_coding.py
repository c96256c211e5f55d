"""Coding the texture tiles with the base layer at the rate the mode asks for.

``ratio`` counts the raw bytes against everything in the file (exact voxels, headers, shape code),
``quality`` gives every tile the lowest rate that reaches a PSNR, ``max_error`` bounds every voxel
(SPERR only: its point-wise mode is the bound). Returns per tile the stream and its rate in bits
per voxel (what the refinement network is told), plus the header's record of the base layer.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidInputError
from ...progress import track
from ...tiling import TileGrid
from ..base import ContainerCosts
from . import outliers, rate
from .base_layers import BaseLayer, av1, av1_rate, bounded, sperr

#: Header bytes per tile (its rate, maybe its outlier flag and, for AV1, its CRF).
STATE_PER_TILE = 14
AV1_STATE_PER_TILE = 4


@dataclass
class TextureSettings:
    """What the codec asks of the texture: its mode and value, the base layer, its options."""

    mode: str
    value: float
    base: str
    clamp_ratio: bool = False
    preset: int = av1.DEFAULT_PRESET
    #: Code with SPERR when AV1 cannot reach the ratio (base="auto" on a tiny volume).
    sperr_fallback: bool = False


@dataclass
class CodedTexture:
    streams: list[bytes]
    bits_per_voxel: list[float]
    base_record: dict | None


def base_record(settings: TextureSettings, window: tuple[float, float], crfs: list[int]) -> dict:
    return {
        "codec": "av1",
        **av1.library_record(),
        "preset": settings.preset,
        "params": av1.ENCODER_PARAMS,
        "samples": av1.SampleMap.for_window(*window).to_json(),
        "crf": crfs,
    }


def code_texture(
    settings: TextureSettings,
    source: np.ndarray,
    grid: TileGrid,
    exact: dict[int, bytes],
    raw_bytes: int,
    extra_bytes: int,
    costs: ContainerCosts,
    window: tuple[float, float],
    far: tuple[float, float],
    progress: bool,
) -> CodedTexture:
    """The base layer over ``grid``'s tiles of ``source`` (stored units, clipped to ``window``)."""
    tiles = list(grid)

    def tile_block(tile: int) -> tuple[np.ndarray, np.ndarray]:
        raw = source[grid.tile_region(tile)]
        return raw, np.clip(raw.astype(np.float64), *window)

    if settings.mode == "quality":
        return _code_quality(settings, tiles, grid, tile_block, window, far, progress)
    masks_bytes = sum(map(len, exact.values()))
    budget = raw_bytes / settings.value
    per_tile = 2 * costs.per_section_bytes + STATE_PER_TILE
    if settings.base == "av1":
        per_tile += AV1_STATE_PER_TILE
        extra_bytes += len(json.dumps(base_record(settings, window, [])))
    overhead = costs.fixed_bytes + masks_bytes + extra_bytes + per_tile * len(tiles)
    texture_budget = budget - overhead
    floor_bytes = 40 * len(tiles)
    if texture_budget < floor_bytes and settings.clamp_ratio:
        texture_budget = floor_bytes
    elif texture_budget < floor_bytes:
        raise InvalidInputError(
            f"ratio {settings.value:g} is out of reach for this volume: its budget of "
            f"{budget:.0f} bytes is taken by {masks_bytes} bytes of exact out-of-window "
            f"voxels and {overhead - masks_bytes} bytes of headers and shape code; ask for at "
            f"most {raw_bytes / (overhead + floor_bytes):.0f}x"
            + (
                "; this is one slice (a 2D image is stored as a volume of one slice), where a "
                "file's fixed costs weigh most: a lower ratio or the lossless codec suits it"
                if grid.shape[0] == 1
                else ""
            )
        )
    if settings.base == "av1":
        samples = av1.SampleMap.for_window(*window)

        @functools.cache  # both presets code every tile several times
        def tile_samples(tile: int) -> np.ndarray:
            return samples.to_samples(tile_block(tile)[1])

        probe = av1_rate.TileEncoder(tile_samples, tiles, av1.PROBE_PRESET, progress)
        final = av1_rate.TileEncoder(tile_samples, tiles, settings.preset, progress)
        try:
            streams, crfs = av1_rate.code_ratio_staged(
                probe,
                final,
                texture_budget,
                av1_rate.first_crf(settings.value),
                settings.clamp_ratio and not settings.sperr_fallback,
            )
        except InvalidInputError:
            if not settings.sperr_fallback:
                raise
        else:
            return CodedTexture(streams, _bits(streams, grid), base_record(settings, window, crfs))
        # AV1's smallest streams are over the budget: SPERR, whose rate goes down to nothing.
        texture_budget += len(json.dumps(base_record(settings, window, []))) + AV1_STATE_PER_TILE * len(tiles)
    textures: list[bytes] = []
    voxels = sum(int(np.prod(sperr.padded_shape(grid.tile_extent(t)))) for t in tiles)
    passes = 0

    def encode_all(bpv: float) -> int:
        nonlocal passes
        passes += 1
        textures.clear()
        desc = f"SPERR layer (pass {passes})"
        for tile in track(tiles, enabled=progress, desc=desc, unit="tile", leave=False):
            textures.append(bounded.encode_sperr_rate(tile_block(tile)[1], bpv, f"tile {tile}"))
        return sum(map(len, textures))

    bpv, _ = rate.rate_for_budget(encode_all, texture_budget, 8.0 * texture_budget / voxels)
    return CodedTexture(textures, [bpv] * len(tiles), None)


def _bits(streams: list[bytes], grid: TileGrid) -> list[float]:
    return [8.0 * len(s) / float(np.prod(grid.tile_extent(t))) for t, s in zip(grid, streams)]


def _code_quality(
    settings: TextureSettings,
    tiles: list[int],
    grid: TileGrid,
    tile_block,
    window: tuple[float, float],
    far: tuple[float, float],
    progress: bool,
) -> CodedTexture:
    peak = window[1] - window[0]
    streams, rates, crfs = [], [], []
    samples = av1.SampleMap.for_window(*window)
    layer = BaseLayer("av1", samples)  # the decoder's own path, so PSNR is what readers get
    desc = "AV1 base layer" if settings.base == "av1" else "SPERR layer"
    for tile in track(tiles, enabled=progress, desc=desc, unit="tile"):
        raw, clipped = tile_block(tile)
        counted = ~outliers.outlier_mask(raw, *far)
        if settings.base != "av1":
            bpv, payload = rate.rate_for_quality(clipped, settings.value, peak, counted, what=f"tile {tile}")
            streams.append(payload)
            rates.append(bpv)
            continue
        tile_samples = samples.to_samples(clipped)
        tried: dict[tuple[int, int], tuple[bytes, float]] = {}

        def attempt(
            crf: int,
            preset: int,
            tile_samples=tile_samples,
            clipped=clipped,
            counted=counted,
            tried=tried,
            tile=tile,
        ) -> float:
            if (preset, crf) not in tried:
                stream = bounded.encode_av1(tile_samples, crf, preset, f"tile {tile}")
                decoded = layer.decode(
                    stream, clipped.shape, what="the tile just coded", trusted=True, dtype=np.float64
                )
                tried[(preset, crf)] = stream, rate.psnr(clipped, decoded, peak, counted)
            return tried[(preset, crf)][1]

        # Bisect on the fast probe, then on the kept preset near its answer (the kept preset
        # reaches a PSNR at a higher CRF than the probe: its search starts there and goes up).
        guess = av1_rate.crf_for_quality(lambda c: attempt(c, av1.PROBE_PRESET), settings.value)
        crf = av1_rate.crf_for_quality(
            lambda c: attempt(c, settings.preset), settings.value, lo=guess, hi=guess + 8
        )
        if (settings.preset, crf) not in tried:
            attempt(crf, settings.preset)
        stream = tried[(settings.preset, crf)][0]
        streams.append(stream)
        crfs.append(crf)
    if settings.base != "av1":
        return CodedTexture(streams, rates, None)
    return CodedTexture(streams, _bits(streams, grid), base_record(settings, window, crfs))


def code_max_error(
    value: float,
    array: np.ndarray,
    grid: TileGrid,
    exact: dict[int, bytes],
    low: float,
    high: float,
    far: tuple[float, float],
    progress: bool,
) -> tuple[list[bytes], list[float]]:
    """Each tile coded to the bound; whatever the SPERR layer misses is stored exactly."""
    tolerance = math.floor(value) if array.dtype.kind in "iu" else value * (1 - 1e-6)
    if tolerance <= 0:
        raise InvalidInputError(
            f"max_error {value:g} is below one step of {array.dtype.name}; use the lossless codec"
        )
    textures, rates = [], []
    for tile in track(list(grid), enabled=progress, desc="SPERR layer", unit="tile"):
        raw = array[grid.tile_region(tile)]
        clipped = np.clip(raw.astype(np.float64), low, high)
        payload = bounded.encode_sperr_bound(clipped, tolerance, f"tile {tile}")
        decoded = to_dtype(sperr.decode(payload, clipped.shape, trusted=True), array.dtype, low, high)
        # Whatever the SPERR layer misses (it should not) is stored exactly too.
        missed = np.abs(decoded.astype(np.float64) - raw) > value
        missed |= outliers.outlier_mask(raw, *far)
        if missed.any():
            exact[tile] = outliers.encode(raw, missed)
        textures.append(payload)
        rates.append(8.0 * len(payload) / clipped.size)
    return textures, rates


def to_dtype(block: np.ndarray, dtype: np.dtype, low: float, high: float) -> np.ndarray:
    """Decoded values as the stored dtype: clipped to the window, rounded for integers."""
    block = np.clip(block, low, high)
    if np.dtype(dtype).kind in "iu":
        block = np.rint(block)
    return block.astype(dtype)
