"""Training pairs of the refinement network: each volume coded once per ratio by the codec's own
base layer, and random aligned (decoded, original) crops of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..metadata import HU_WINDOW
from ..model.refine import HU_SCALE, rate_code


@dataclass
class CodedVolume:
    original: np.ndarray  # float32 HU, clipped to the window
    decoded: np.ndarray  # float32 HU, SPERR layer output
    rate: float  # rate code the network is told
    ratio: float


def code_volume(hu: np.ndarray, ratio: float, tile_shape: Sequence[int], base: str = "sperr") -> CodedVolume:
    """Clip and code ``hu`` tile by tile with the codec's base layer: SPERR at 16/ratio bits per
    voxel, or AV1 through the codec's own rate control at ``ratio`` (int16 raw bytes)."""
    from ..codecs.deepstd.base_layers import base_layer
    from ..tiling import TileGrid, default_tile_shape

    clipped = np.clip(hu.astype(np.float64), *HU_WINDOW)
    grid = TileGrid(hu.shape, default_tile_shape(hu.shape, tile_shape, balanced=True))
    decoded = np.empty(hu.shape, dtype=np.float32)
    layer = base_layer(base).for_encoding(HU_WINDOW)
    if base == "av1":
        from ..codecs.deepstd.rate_control import RateTarget, TextureJob, code_texture
        from ..container.writer import container_costs

        job = TextureJob(clipped, grid, HU_WINDOW, raw_bytes=2 * hu.size, costs=container_costs(None))
        streams = code_texture(layer, RateTarget("ratio", float(ratio), clamp_ratio=True), job, False).streams
        bpv = 8.0 * sum(map(len, streams)) / hu.size
    else:
        bpv = 16.0 / ratio
        streams = [layer.encode(clipped[grid.tile_region(t)], bpv, "training tile") for t in grid]
    for tile, stream in zip(grid, streams):
        decoded[grid.tile_region(tile)] = layer.decode(
            stream, grid.tile_extent(tile), what="training tile", trusted=True
        )
    return CodedVolume(clipped.astype(np.float32), decoded, rate_code(bpv), float(ratio))


class PairSampler:
    """Random aligned crops of (decoded, original) with left-right / front-back flips."""

    def __init__(
        self,
        coded: Sequence[CodedVolume],
        crop: tuple[int, int, int],
        rng: np.random.Generator,
        augment: str = "flips",
    ) -> None:
        self.coded = [c for c in coded if all(s >= k for s, k in zip(c.original.shape, crop))]
        if not self.coded:
            raise ValueError(f"no training volume is at least {crop} voxels")
        if augment not in ("flips", "strong"):
            raise ValueError(f"augment must be 'flips' or 'strong', not {augment!r}")
        self.crop, self.rng, self.augment = crop, rng, augment

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = np.empty((batch, 1, *self.crop), dtype=np.float32)
        y = np.empty_like(x)
        rates = np.empty_like(x)
        for b in range(batch):
            c = self.coded[self.rng.integers(len(self.coded))]
            start = [self.rng.integers(0, s - k + 1) for s, k in zip(c.original.shape, self.crop)]
            region = tuple(slice(s, s + k) for s, k in zip(start, self.crop))
            dec, orig = c.decoded[region], c.original[region]
            for axis in (1, 2):
                if self.rng.random() < 0.5:
                    dec, orig = np.flip(dec, axis), np.flip(orig, axis)
            if self.augment == "strong":
                if self.rng.random() < 0.5:
                    dec, orig = np.flip(dec, 0), np.flip(orig, 0)
                if self.crop[1] == self.crop[2] and self.rng.random() < 0.5:
                    dec, orig = dec.transpose(0, 2, 1), orig.transpose(0, 2, 1)
            x[b, 0], y[b, 0], rates[b, 0] = dec / HU_SCALE, orig / HU_SCALE, c.rate
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(rates)
