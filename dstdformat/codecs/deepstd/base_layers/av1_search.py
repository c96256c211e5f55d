"""The AV1 base layer's rate searches: a CRF per tile, in quarter steps, for a byte budget.

Files keep streams of a slow preset (3), ten times slower than the probe preset (10), so the
kept preset must code each tile about once (issue: rate control within 3 encodes of the volume).
:func:`code_ratio_predicted` gets every tile's relative size from one probe pass, measures the
presets' size factor on one tile coded by the kept preset, and then codes the tiles in turn,
each at the CRF that spends what the budget has left on the tiles still to code, so that an
error on one tile is spent by the ones after it. Measured on a 512x512x300 chest at 256x: 1.0-1.2
kept-preset encodes and 2 probe passes of the volume, against 2 and 7 before, at the same MAE.
Quality searches (:func:`crf_for_quality`) bisect on the probe and then on the kept preset near
the probe's answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ....progress import track
from . import av1, bounded
from .contract import BudgetOutOfReach

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


#: Kept-preset bytes per probe byte at the same CRF, until a tile has measured it (preset 3
#: against 10: 0.82-0.87 on training CT at CRF 15-28, 0.53-0.71 on a 512x512 chest at 16-36).
PROBE_SIZE_FACTOR = 0.75
#: The kept preset's total may miss the budget by this fraction before the last tile is coded
#: again.
TOLERANCE = 0.02
#: Past this miss, the last tile is searched for on the kept preset alone (tiny tiles).
LANDING_TOLERANCE = 0.05
#: Kept-preset encodes of a tile at most (the first tile, which measures the presets' size
#: factor, and the last, which lands the total, may need more than one).
KEPT_PASSES = 3
#: The first tile is coded again when what it measured moves its CRF by more than this many
#: quarter steps (a CRF: ~8% of its bytes; the tiles after it spend the difference).
CALIBRATION_STEPS = 4
#: Slopes of log2(size) per quarter step are held in this range (sizes of tiny tiles are noisy).
SLOPE_RANGE = (-0.25, -0.005)
_DEFAULT_SLOPE = LOG2_SIZE_PER_CRF / av1.CRF_STEPS


class SizeCurves:
    """Every tile's predicted kept-preset bytes at a quarter step, from the streams coded so far.

    The probe's curve of a tile is log-linear through its two nearest probe streams. A tile the
    kept preset coded twice: log-linear through its two nearest kept streams; once: through that
    stream at the probe's slope there. A tile it has not coded: the probe's curve times the
    kept/probe factor at that step, over the tiles it has coded (their kept curves against their
    probe curves; the presets' sizes do not fall at the same rate, so the factor moves with the
    CRF: 0.53 at CRF 16 to 0.71 at 36 on one chest), :data:`PROBE_SIZE_FACTOR` before any.
    """

    def __init__(self, probe: TileEncoder, final: TileEncoder) -> None:
        self.probe, self.final = probe, final

    @staticmethod
    def _points(encoder: TileEncoder, tile: int) -> dict[int, int]:
        return {s: len(b) for (t, s), b in encoder.streams.items() if t == tile}

    @staticmethod
    def _curve(points: dict[int, int], steps: float, slope: float | None = None) -> tuple[float, float]:
        """(log2 bytes at ``steps``, the slope used): from the nearest of ``points``, through
        the two nearest unless ``slope`` is given (the default slope for one point)."""
        near = sorted(points, key=lambda s: (abs(s - steps), s))[:2]
        if slope is None and len(near) == 2:
            slope = (math.log2(points[near[1]]) - math.log2(points[near[0]])) / (near[1] - near[0])
        slope = _DEFAULT_SLOPE if slope is None else min(max(slope, SLOPE_RANGE[0]), SLOPE_RANGE[1])
        return math.log2(points[near[0]]) + slope * (steps - near[0]), slope

    def predictor(self) -> Callable[[int, float], float]:
        """(tile, steps) -> predicted kept-preset bytes, from what is known now."""
        probe = {t: self._points(self.probe, t) for t in self.final.tiles}
        kept = {t: self._points(self.final, t) for t in self.final.tiles}
        coded = [t for t in self.final.tiles if kept[t]]

        factors: dict[float, float] = {}  # a search asks every tile at one step in turn

        def log2_kept(tile: int, steps: float) -> float:
            slope = None if len(kept[tile]) > 1 else self._curve(probe[tile], steps)[1]
            return self._curve(kept[tile], steps, slope)[0]

        def factor_at(steps: float) -> float:
            if steps not in factors:
                factors[steps] = (
                    sum(2.0 ** log2_kept(t, steps) for t in coded)
                    / sum(2.0 ** self._curve(probe[t], steps)[0] for t in coded)
                    if coded
                    else PROBE_SIZE_FACTOR
                )
            return factors[steps]

        def predict(tile: int, steps: float) -> float:
            if kept[tile]:
                return 2.0 ** log2_kept(tile, steps)
            return factor_at(steps) * 2.0 ** self._curve(probe[tile], steps)[0]

        return predict


def _common_steps(predict: Callable[[int, float], float], tiles: list[int], budget: float) -> int:
    """The one quarter step at which ``tiles`` are predicted to take ``budget``."""
    lo, hi = float(av1.MIN_CRF * av1.CRF_STEPS), float(av1.MAX_CRF * av1.CRF_STEPS)

    def total(steps: float) -> float:
        return sum(predict(t, steps) for t in tiles)

    if total(lo) <= budget:
        return round(lo)
    if total(hi) >= budget:
        return round(hi)
    for _ in range(40):  # 40 halvings pin the crossing far below a quarter step
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) > budget else (lo, mid)
    return round((lo + hi) / 2)


def code_ratio_predicted(
    probe: TileEncoder, final: TileEncoder, budget: float, first_crf: float, clamp: bool
) -> tuple[list[bytes], list[int | float]]:
    """Streams of ``final`` (the kept preset) and CRFs of every tile for ``budget`` bytes.

    One probe pass gives each tile's relative size (a second where the tiles will sit far from
    it). The kept preset codes the median tile first, which measures the presets' size factor,
    again while that moves its CRF by more than :data:`CALIBRATION_STEPS`; then the others from
    the smallest up, each at the one CRF that spends what is left on the tiles still to code;
    the largest, last, lands the total, and is coded again while it misses by more than
    :data:`TOLERANCE`. No tile is coded more than :data:`KEPT_PASSES` times, most once, except
    where sizes do not behave: past :data:`LANDING_TOLERANCE` the last tile is searched for
    (:func:`code_ratio`, bounded)."""
    start = round(first_crf * av1.CRF_STEPS)
    probe.total(start)
    curves = SizeCurves(probe, final)
    sizes = curves.predictor()
    by_size = sorted(final.tiles, key=lambda t: sizes(t, start))
    first = by_size[len(by_size) // 2]
    order = [first] + [t for t in by_size if t != first]
    chosen: dict[int, int] = {}

    def spent() -> int:
        return sum(len(final.stream(t, chosen[t])) for t in chosen)

    near = CALIBRATION_STEPS if len(order) > 1 else 0
    for _ in range(KEPT_PASSES):
        steps = _common_steps(curves.predictor(), order, budget)
        probed = {s for _, s in probe.streams}
        if not min(probed) - CALIBRATION_STEPS <= steps <= max(probed) + CALIBRATION_STEPS:
            probe.total(steps)  # the probe's curves then interpolate where the tiles will be
            steps = _common_steps(curves.predictor(), order, budget)
        if first in chosen and abs(steps - chosen[first]) <= near:
            break
        chosen[first] = steps
        final.stream(first, steps)
    for done, tile in enumerate(
        track(order[1:], enabled=final.progress, desc=final.label, unit="tile", leave=False), 1
    ):
        chosen[tile] = _common_steps(curves.predictor(), order[done:], budget - spent())
        final.stream(tile, chosen[tile])
    last = order[-1]
    others = spent() - len(final.stream(last, chosen[last]))
    tried = [steps for (t, steps) in final.streams if t == last]

    def miss(steps: int) -> float:
        return abs(others + len(final.stream(last, steps)) - budget)

    for _ in range(KEPT_PASSES - len(tried)):
        if miss(chosen[last]) <= TOLERANCE * budget:
            break
        steps = _common_steps(curves.predictor(), [last], budget - others)
        if steps in tried:
            break
        chosen[last] = steps
        tried.append(steps)
        final.stream(last, steps)
    chosen[last] = min(tried, key=miss)
    if miss(chosen[last]) > LANDING_TOLERANCE * budget:
        # Sizes that do not behave (a tiny tile's stream barely shrinks with the CRF): the last
        # tile searched for on the kept preset alone, from its streams so far.
        alone = TileEncoder(final.samples_of, [last], final.preset, False)
        alone.streams = final.streams
        _, crfs = code_ratio(alone, budget - others, chosen[last] / av1.CRF_STEPS, True, TOLERANCE)
        chosen[last] = min([chosen[last], round(crfs[0] * av1.CRF_STEPS)], key=miss)
    total = spent()
    coarsest = av1.MAX_CRF * av1.CRF_STEPS
    if not clamp and total > budget and all(s == coarsest for s in chosen.values()):
        raise BudgetOutOfReach(total, budget, f"AV1 at crf {av1.MAX_CRF}")
    return (
        [final.stream(t, chosen[t]) for t in final.tiles],
        [av1.crf_of_steps(chosen[t]) for t in final.tiles],
    )
