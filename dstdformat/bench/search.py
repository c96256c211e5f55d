"""Find a codec's knob value that lands within a tolerance of a target compression ratio."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from .codecs import Knob

TOLERANCE = 0.05
MAX_EVALUATIONS = 16


@dataclass
class SearchResult:
    value: float | None
    ratio: float
    reached: bool
    evaluations: int
    tried: list[tuple[float | None, float]] = field(default_factory=list)
    note: str = ""  # why a target was missed when the knob's steps straddle it


def search_ratio(
    ratio_at: Callable[[float | None], float],
    knob: Knob | None,
    target: float,
    tolerance: float = TOLERANCE,
    max_evaluations: int = MAX_EVALUATIONS,
) -> SearchResult:
    """Regula falsi in log(knob)-log(ratio) space, bracketed, falling back to bisection.

    ``ratio_at(value)`` encodes and returns the achieved ratio; it must be monotone in the
    knob's direction (``knob.raises_ratio``). A codec without a knob is evaluated once; an
    integer knob (a CRF) is searched over the integers (:func:`_search_integer`).
    """
    if knob is None:
        r = ratio_at(None)
        return SearchResult(None, r, abs(r / target - 1) <= tolerance, 1, [(None, r)])
    if knob.integer:
        return _search_integer(ratio_at, knob, target, tolerance, max_evaluations)

    sign = 1.0 if knob.raises_ratio else -1.0
    lo_u, hi_u = sorted((sign * math.log(knob.low), sign * math.log(knob.high)))
    goal = math.log(target)
    tried: list[tuple[float | None, float]] = []

    def evaluate(u: float) -> float:
        value = math.exp(sign * u)
        r = ratio_at(value)
        tried.append((value, r))
        return math.log(r)

    def best() -> SearchResult:
        value, r = min(tried, key=lambda t: abs(math.log(t[1]) - goal))
        return SearchResult(value, r, abs(r / target - 1) <= tolerance, len(tried), tried)

    first = knob.guess(target) if knob.guess else math.sqrt(knob.low * knob.high)
    u = min(max(sign * math.log(min(max(first, knob.low), knob.high)), lo_u), hi_u)
    y = evaluate(u)
    if abs(math.exp(y - goal) - 1) <= tolerance:
        return best()
    # Bracket: walk outwards in steps that double until the target is crossed or a bound is hit.
    bracket = _bracket(
        evaluate,
        lambda y: abs(math.exp(y - goal) - 1) <= tolerance,
        (u, y),
        goal,
        (lo_u, hi_u),
        math.log(4.0),
        lambda: max_evaluations - len(tried),
    )
    if bracket is None:
        return best()
    below, above = bracket
    # Refine inside the bracket.
    use_secant = True
    while len(tried) < max_evaluations:
        (u0, y0), (u1, y1) = below, above
        if use_secant and y1 != y0:
            u = u0 + (goal - y0) * (u1 - u0) / (y1 - y0)
            u = min(max(u, u0 + 0.05 * (u1 - u0)), u1 - 0.05 * (u1 - u0))
        else:
            u = 0.5 * (u0 + u1)
        use_secant = not use_secant  # alternate to guarantee progress on ugly curves
        y = evaluate(u)
        if abs(math.exp(y - goal) - 1) <= tolerance:
            break
        if y < goal:
            below = (u, y)
        else:
            above = (u, y)
    return best()


def _search_integer(
    ratio_at: Callable[[float | None], float],
    knob: Knob,
    target: float,
    tolerance: float,
    max_evaluations: int,
) -> SearchResult:
    """The float search's bracketing and regula falsi, on integers in linear knob space (a CRF is
    already a log-quantizer scale). No integer is encoded twice; when no integer lands within the
    tolerance the bracket shrinks to two neighbours and the closer one is kept, with a note."""
    sign = 1 if knob.raises_ratio else -1  # u = sign * value: the ratio rises with u
    lo_u, hi_u = sorted((sign * math.ceil(knob.low), sign * math.floor(knob.high)))
    goal = math.log(target)
    seen: dict[int, float] = {}  # u -> log ratio
    tried: list[tuple[float | None, float]] = []

    def evaluate(u: int) -> float:
        if u not in seen:
            r = ratio_at(sign * u)
            tried.append((sign * u, r))
            seen[u] = math.log(r)
        return seen[u]

    def hit(y: float) -> bool:
        return abs(math.exp(y - goal) - 1) <= tolerance

    def best(note: str = "") -> SearchResult:
        value, r = min(tried, key=lambda t: abs(math.log(t[1]) - goal))
        reached = abs(r / target - 1) <= tolerance
        return SearchResult(value, r, reached, len(tried), tried, "" if reached else note)

    first = knob.guess(target) if knob.guess else 0.5 * (knob.low + knob.high)
    u = min(max(round(sign * first), lo_u), hi_u)
    y = evaluate(u)
    if hit(y):
        return best()
    bracket = _bracket(evaluate, hit, (u, y), goal, (lo_u, hi_u), 4, lambda: max_evaluations - len(tried))
    if bracket is None:
        return best()
    below, above = bracket
    use_secant = True
    while above[0] - below[0] > 1 and len(tried) < max_evaluations:
        (u0, y0), (u1, y1) = below, above
        if use_secant and y1 != y0:
            u = round(u0 + (goal - y0) * (u1 - u0) / (y1 - y0))
        else:
            u = (u0 + u1) // 2
        u = min(max(u, u0 + 1), u1 - 1)
        use_secant = not use_secant
        y = evaluate(u)
        if hit(y):
            return best()
        if y < goal:
            below = (u, y)
        else:
            above = (u, y)
    if abs(above[0] - below[0]) == 1:
        (v0, r0), (v1, r1) = sorted((sign * u, math.exp(seen[u])) for u in (below[0], above[0]))
        return best(f"{knob.name} is an integer: {v0} gives {r0:.1f}x, {v1} gives {r1:.1f}x")
    return best()


def _bracket(evaluate, hit, start: tuple, goal: float, bounds: tuple, step, evaluations_left):
    """(below, above): points (u, log ratio) on both sides of ``goal``, found by walking out from
    ``start`` in steps that double; None when a hit, a bound or the evaluation budget ends the
    search first (the caller then keeps the best point tried)."""
    u, y = start
    lo_u, hi_u = bounds
    below = (u, y) if y < goal else None
    above = (u, y) if y > goal else None
    while below is None or above is None:
        if evaluations_left() <= 0:
            return None
        if below is None:  # need a smaller ratio: move u down
            if above[0] <= lo_u:
                return None
            u = max(lo_u, above[0] - step)
        else:
            if below[0] >= hi_u:
                return None
            u = min(hi_u, below[0] + step)
        step *= 2
        y = evaluate(u)
        if hit(y):
            return None
        if y < goal:
            below = (u, y)
        else:
            above = (u, y)
    return below, above
