"""The AV1 base layer under the contract; its knob is a CRF per tile, in quarter steps.

Its rate searches: size falls about 2x per 9 CRF steps (measured at preset 4 on chest CT), so the ratio search
predicts from that slope, corrects by secant on the measured sizes, brackets the budget between
two neighbouring quarter CRF steps (SVT-AV1's extended CRF; a whole step moves a stream by ~8%,
a quarter by ~2%) and then moves single tiles between them until the total is as close to the
budget as one tile's step allows. Each (tile, CRF) is encoded at most once per preset.

The search runs on a fast probe preset, whose streams are 10-20% smaller than the kept preset's
at the same CRF; the kept preset then codes the probe's answer once, and where the total misses
the budget the probe's budget is scaled by the measured factor and only tiles whose CRF moved are
coded again; should that still miss, the search runs on the kept preset
(:func:`code_ratio_staged`). Quality searches bisect on the probe and then on the
kept preset near the probe's answer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from ....errors import CorruptSectionError
from ....progress import track
from ....tiling import TileGrid
from . import av1, bounded
from .contract import BaseLayerCoder, BudgetOutOfReach, QualityOf, TileBlocks

#: Measured slope of log2(size) per CRF step (negative: higher CRF, smaller stream).
LOG2_SIZE_PER_CRF = -1.0 / 9.0
MAX_PASSES = 9


class TileEncoder:
    """Encodes tiles at a CRF, remembering every stream it made. CRFs are given in quarter steps
    (``steps = 4 x crf``) so that the search runs on integers."""

    def __init__(
        self, samples_of: Callable[[int], np.ndarray], tiles: list[int], preset: int, progress: bool
    ) -> None:
        self.samples_of, self.tiles, self.preset, self.progress = samples_of, tiles, preset, progress
        self.label = f"AV1 base layer, preset {preset}"
        self.streams: dict[tuple[int, int], bytes] = {}
        self.passes = 0

    def stream(self, tile: int, steps: int) -> bytes:
        key = (tile, steps)
        if key not in self.streams:
            self.streams[key] = bounded.encode_av1(
                self.samples_of(tile), av1.crf_of_steps(steps), self.preset, f"tile {tile}"
            )
        return self.streams[key]

    def total(self, steps: int) -> int:
        if all((t, steps) in self.streams for t in self.tiles):
            return sum(len(self.streams[(t, steps)]) for t in self.tiles)
        self.passes += 1
        desc = f"{self.label} (pass {self.passes}, crf {av1.crf_of_steps(steps)})"
        return sum(
            len(self.stream(t, steps))
            for t in track(self.tiles, enabled=self.progress, desc=desc, unit="tile", leave=False)
        )


def _bracket(sizes: dict[int, int], budget: float) -> tuple[int | None, int | None]:
    """(a, b): the highest step tried whose total is over the budget, and the lowest above it
    that is within. Sizes are nearly but not strictly monotone (tiny tiles), hence this reading."""
    over = [c for c in sizes if sizes[c] > budget]
    a = max(over) if over else None
    under = [c for c in sizes if sizes[c] <= budget and (a is None or c > a)]
    return a, (min(under) if under else None)


def code_ratio(
    encoder: TileEncoder,
    budget: float,
    first_crf: float,
    clamp: bool,
    tolerance: float = 0.0,
    unit: int = 1,
) -> tuple[list[bytes], list[int | float]]:
    """Streams and CRFs of every tile, their total as close to ``budget`` bytes as CRF moves of
    ``unit`` quarter steps allow (1: quarter CRFs, 4: whole ones), or, with ``tolerance``, the
    first CRF whose total is within that fraction of the budget (each pass of a slow preset costs
    seconds). A budget below the smallest stream is an error unless ``clamp``."""
    per_step = LOG2_SIZE_PER_CRF / av1.CRF_STEPS
    lo, hi = av1.MIN_CRF * av1.CRF_STEPS, av1.MAX_CRF * av1.CRF_STEPS
    sizes: dict[int, int] = {}
    steps = min(max(unit * round(first_crf * av1.CRF_STEPS / unit), lo), hi)
    reach = 0  # one-sided moves grow at least twofold, so a shallow slope cannot stall the search
    for _ in range(MAX_PASSES):
        sizes[steps] = encoder.total(steps)
        if tolerance and abs(sizes[steps] - budget) <= tolerance * budget:
            crf = av1.crf_of_steps(steps)
            return [encoder.stream(t, steps) for t in encoder.tiles], [crf] * len(encoder.tiles)
        a, b = _bracket(sizes, budget)
        if a is not None and b is not None:
            if b - a == unit:
                break
            slope = (math.log2(sizes[b]) - math.log2(sizes[a])) / (b - a)
            guess = a + (math.log2(budget) - math.log2(sizes[a])) / min(slope, -1e-3 / unit)
            steps = min(max(unit * round(guess / unit), a + unit), b - unit)
        else:
            if (a is None and min(sizes) == lo) or (b is None and a == hi):
                break
            start = a if b is None else b
            guess = start + (math.log2(budget) - math.log2(sizes[start])) / per_step
            direction = 1 if b is None else -1
            reach = max(unit * abs(round((guess - start) / unit)), 2 * reach, unit)
            steps = min(max(start + direction * reach, lo), hi)
        if steps in sizes:
            break
    a, b = _bracket(sizes, budget)
    if b is None and hi not in sizes:  # the search stopped short: is the coarsest enough?
        sizes[hi] = encoder.total(hi)
        a, b = _bracket(sizes, budget)
    if b is None:
        if not clamp:
            coarsest = max(sizes)
            raise BudgetOutOfReach(sizes[coarsest], budget, f"AV1 at crf {av1.crf_of_steps(coarsest)}")
        chosen = {t: hi for t in encoder.tiles}
    else:
        chosen = _mix_neighbours(encoder, sizes, a, b, budget, unit)
    return (
        [encoder.stream(t, chosen[t]) for t in encoder.tiles],
        [av1.crf_of_steps(chosen[t]) for t in encoder.tiles],
    )


def _mix_neighbours(
    encoder: TileEncoder, sizes: dict[int, int], a: int | None, b: int, budget: float, unit: int = 1
) -> dict[int, int]:
    """Every tile at step ``b`` (within the budget); where ``a`` is the next finer step, single
    tiles move to it while the total stays near the budget."""
    chosen = {t: b for t in encoder.tiles}
    if a != b - unit:
        return chosen
    total = sizes[b]
    gains = sorted(
        ((len(encoder.stream(t, a)) - len(encoder.stream(t, b)), t) for t in encoder.tiles), reverse=True
    )
    for extra, tile in gains:  # biggest gains first while they fit
        if total + extra <= budget:
            chosen[tile], total = a, total + extra
    left = [(extra, t) for extra, t in gains if chosen[t] == b]
    if left:  # one more step may land closer to the budget from above
        extra, tile = min(left)
        if abs(total + extra - budget) < abs(total - budget):
            chosen[tile] = a
    return chosen


#: The kept preset's total may miss the budget by this much before the probe's budget is corrected
#: (a quarter CRF step moves a tile by about 2%; the presets' size ratio varies more than that).
STAGED_TOLERANCE = 0.03
STAGED_ROUNDS = 2
#: Kept-preset bytes per probe byte at the same CRF, the first round's guess (measured on training
#: CT, preset 3 against 10: 0.82-0.87 at CRF 15-28); later rounds use the measured factor.
PROBE_SIZE_FACTOR = 0.84
#: Past this miss after the rounds, the search runs on the kept preset itself, and stops at the
#: first CRF within FALLBACK_SEARCH_TOLERANCE of the budget (a pass of preset 3 over a 512x512x300
#: volume takes ~10 s on 2 cores).
FALLBACK_TOLERANCE = 0.045
FALLBACK_SEARCH_TOLERANCE = 0.02
#: Volumes of fewer tiles search in quarter CRF steps: one whole step moves a tile by ~8%, and a
#: few tiles cannot mix neighbouring CRFs finely enough to land within 5%. Volumes of more tiles
#: keep whole steps, which take fewer passes.
QUARTER_STEPS_BELOW_TILES = 4


def code_ratio_staged(
    probe: TileEncoder, final: TileEncoder, budget: float, first_crf: float, clamp: bool
) -> tuple[list[bytes], list[int | float]]:
    """Like :func:`code_ratio`, with the search on ``probe`` and the streams from ``final``."""
    # Quarter CRF steps where few tiles cannot mix whole CRFs finely enough; whole steps elsewhere
    # (fewer passes of the slow preset when the probe misleads).
    unit = 1 if len(final.tiles) < QUARTER_STEPS_BELOW_TILES else av1.CRF_STEPS
    probe_budget, best, rounds = budget / PROBE_SIZE_FACTOR, None, []
    for _ in range(STAGED_ROUNDS):
        _, crfs = code_ratio(probe, probe_budget, first_crf, clamp=True, unit=unit)
        streams = [final.stream(t, round(c * av1.CRF_STEPS)) for t, c in zip(final.tiles, crfs)]
        total = sum(map(len, streams))
        rounds.append((float(np.mean(crfs)), total))
        miss = abs(total - budget)
        if best is None or miss < best[0]:
            best = (miss, streams, crfs)
        if miss <= STAGED_TOLERANCE * budget:
            break
        probe_budget *= budget / total
        first_crf = float(np.median(crfs)) if unit == 1 else int(np.median(crfs))
    assert best is not None
    miss, streams, crfs = best
    if miss > FALLBACK_TOLERANCE * budget:
        # The probe misled (content where the presets' sizes do not keep their usual ratio):
        # search on the kept preset itself, from where the probe ended.
        start = _crf_between(rounds, budget) or float(np.median(crfs))
        searched, searched_crfs = code_ratio(final, budget, start, clamp, FALLBACK_SEARCH_TOLERANCE, unit)
        if abs(sum(map(len, searched)) - budget) < miss:
            streams, crfs = searched, searched_crfs
    elif not clamp and min(crfs) == av1.MAX_CRF and sum(map(len, streams)) > budget:
        # Every tile at the coarsest CRF and still over: the kept preset's own search says
        # whether the ratio is out of reach (it raises then), in its words.
        streams, crfs = code_ratio(final, budget, av1.MAX_CRF, clamp, unit=unit)
    return streams, crfs


def _crf_between(rounds: list[tuple[float, int]], budget: float) -> float | None:
    """The CRF the kept preset's measured (mean CRF, total) pairs point to for ``budget``
    (log-linear through the last two), or None when they cannot say."""
    if len(rounds) < 2:
        return None
    (c1, t1), (c2, t2) = rounds[-2:]
    if c1 == c2 or t1 <= 0 or t2 <= 0:
        return None
    slope = (math.log2(t2) - math.log2(t1)) / (c2 - c1)
    if slope >= 0:
        return None
    guess = c2 + (math.log2(budget) - math.log2(t2)) / slope
    return min(max(guess, min(c1, c2) - 4), max(c1, c2) + 4)


def crf_for_quality(
    encode_psnr: Callable[[int], float], target_db: float, lo: int = av1.MIN_CRF, hi: int = av1.MAX_CRF
) -> int:
    """The highest CRF (smallest stream) in ``lo..hi`` whose decode reaches ``target_db``, the
    range widened down to MIN_CRF when ``lo`` does not reach it; MIN_CRF if none does."""
    lo, hi = max(lo, av1.MIN_CRF), min(hi, av1.MAX_CRF)
    if encode_psnr(hi) >= target_db:
        return hi
    while lo > av1.MIN_CRF and encode_psnr(lo) < target_db:
        lo, hi = max(av1.MIN_CRF, lo - max(hi - lo, 4)), lo
    while hi - lo > 1:  # invariant: hi fails; lo passes or is the floor
        mid = (lo + hi) // 2
        if encode_psnr(mid) >= target_db:
            lo = mid
        else:
            hi = mid
    return lo


def first_crf(ratio: float) -> int:
    """A start for the search (measured at 256x: crf 23 on a 512x512 chest, 34 on a sharp-kernel
    chest, 45 on a 3 mm abdomen; lower ratios need about 9 steps less per halving)."""
    return min(max(round(32 + 9 * math.log2(ratio / 256.0)), av1.MIN_CRF), av1.MAX_CRF)


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
        """The staged search (:func:`code_ratio_staged`) from :func:`first_crf`."""
        tiles = list(grid)

        @functools.cache  # both presets code every tile several times
        def tile_samples(tile: int) -> np.ndarray:
            return self.samples.to_samples(blocks(tile))

        probe = TileEncoder(tile_samples, tiles, av1.PROBE_PRESET, progress)
        final = TileEncoder(tile_samples, tiles, self.preset, progress)
        return code_ratio_staged(probe, final, budget, first_crf(ratio), clamp)

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
