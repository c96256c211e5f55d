"""The AV1 base layer under the contract; its knob is a CRF per tile, in quarter steps (SVT-AV1's
extended CRF: a whole step moves a stream by ~8%, a quarter by ~2%). Its rate searches are
:mod:`.av1_search`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ....errors import CorruptSectionError
from ....tiling import TileGrid
from . import av1, bounded
from .av1_search import TileEncoder, code_ratio_predicted, crf_for_quality, first_crf
from .contract import BaseLayerCoder, QualityOf, TileBlocks


class AV1Layer(BaseLayerCoder):
    """A tile's slices as the frames of one closed AV1 sequence (:mod:`.av1`), 10-bit samples of
    the window (:class:`.av1.SampleMap`); the header records the libraries, preset, encoder
    options, sample map and every tile's CRF."""

    layer_id = av1.NAME
    label = "AV1 base layer"
    modes = frozenset({"ratio", "quality"})
    max_extent = av1.MAX_FRAMES
    format_version = 4
    record_bytes_per_tile = 4  # its CRF in the header's list

    def __init__(self, samples: av1.SampleMap, preset: int = av1.DEFAULT_PRESET) -> None:
        self.samples, self.preset = samples, int(preset)

    @classmethod
    def for_encoding(cls, window: tuple[float, float], preset: int | None = None) -> AV1Layer:
        return cls(av1.SampleMap.for_window(*window), av1.DEFAULT_PRESET if preset is None else preset)

    @classmethod
    def from_record(cls, record: dict | None, n_tiles: int) -> AV1Layer:
        if record is None:
            raise ValueError("the AV1 base layer needs its record")
        crf = record["crf"]
        if not (isinstance(crf, list) and len(crf) == n_tiles and all(map(av1.is_crf, crf))):
            raise ValueError(f"crf must be {n_tiles} quarter steps in {av1.MIN_CRF}..{av1.MAX_CRF}")
        return cls(av1.SampleMap.from_json(record["samples"]))

    def record(self, knobs: Sequence[float]) -> dict:
        return {
            "codec": self.layer_id,
            **av1.library_record(),
            "preset": self.preset,
            "params": av1.ENCODER_PARAMS,
            "samples": self.samples.to_json(),
            "crf": list(knobs),
        }

    @classmethod
    def summary(cls, record: dict | None) -> str:
        return f"{cls.label} (preset {(record or {}).get('preset', '?')})"

    def encode(self, block: np.ndarray, knob: float, what: str) -> bytes:
        return bounded.encode_av1(self.samples.to_samples(block), knob, self.preset, what)

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
        """Streams from files decode in this process (helpers with ``DSTD_ISOLATE_AV1=1``, which
        decode whole tiles); ``depth`` stops the decoder after that many frames."""
        from . import isolated

        try:
            coded = av1.check(payload, shape)
            if not trusted and isolated.av1_isolation_enabled():
                av1._av()  # a missing PyAV names the package here, not as a corrupt section
                samples = isolated.decode_isolated(
                    payload, coded, what, dtype=np.uint16, decoder=isolated.AV1
                )
            else:
                samples = av1.decode_coded(payload, depth)
        except CorruptSectionError as exc:
            message = str(exc)
            raise CorruptSectionError(message if message.startswith(what) else f"{what}: {message}") from None
        return self.samples.to_values(samples[:, : shape[1], : shape[2]], np.dtype(dtype).type)

    def rate_of(self, stream: bytes, knob: float, shape: tuple[int, ...]) -> float:
        return 8.0 * len(stream) / float(np.prod(shape))

    def code_budget(
        self, blocks: TileBlocks, grid: TileGrid, budget: float, ratio: float, clamp: bool, progress: bool
    ) -> tuple[list[bytes], list[float]]:
        """The predicted search (:func:`.av1_search.code_ratio_predicted`) from :func:`first_crf`."""
        tiles = list(grid)

        @functools.cache  # both presets code every tile several times
        def tile_samples(tile: int) -> np.ndarray:
            return self.samples.to_samples(blocks(tile))

        probe = TileEncoder(tile_samples, tiles, av1.PROBE_PRESET, progress)
        final = TileEncoder(tile_samples, tiles, self.preset, progress)
        return code_ratio_predicted(probe, final, budget, first_crf(ratio), clamp)

    def code_quality(
        self, block: np.ndarray, target_db: float, quality_of: QualityOf, what: str
    ) -> tuple[bytes, float]:
        """Bisection on the fast probe, then on the kept preset near its answer (the kept preset
        reaches a PSNR at a higher CRF than the probe: its search starts there and goes up)."""
        tile_samples = self.samples.to_samples(block)
        tried: dict[tuple[int, int], tuple[bytes, float]] = {}

        def attempt(crf: int, preset: int) -> float:
            if (preset, crf) not in tried:
                stream = bounded.encode_av1(tile_samples, crf, preset, what)
                tried[(preset, crf)] = stream, quality_of(stream)
            return tried[(preset, crf)][1]

        guess = crf_for_quality(lambda c: attempt(c, av1.PROBE_PRESET), target_db)
        crf = crf_for_quality(lambda c: attempt(c, self.preset), target_db, lo=guess, hi=guess + 8)
        if (self.preset, crf) not in tried:
            attempt(crf, self.preset)
        return tried[(self.preset, crf)][0], crf
