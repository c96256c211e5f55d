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


def search_ratio(ratio_at: Callable[[float | None], float], knob: Knob | None, target: float,
                 tolerance: float = TOLERANCE,
                 max_evaluations: int = MAX_EVALUATIONS) -> SearchResult:
    """Regula falsi in log(knob)-log(ratio) space, bracketed, falling back to bisection.

    ``ratio_at(value)`` encodes and returns the achieved ratio; it must be monotone in the
    knob's direction (``knob.raises_ratio``). A codec without a knob is evaluated once.
    """
    if knob is None:
        r = ratio_at(None)
        return SearchResult(None, r, abs(r / target - 1) <= tolerance, 1, [(None, r)])

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
    below = (u, y) if y < goal else None
    above = (u, y) if y > goal else None
    step = math.log(4.0)
    while below is None or above is None:
        if len(tried) >= max_evaluations:
            return best()
        if below is None:  # need a smaller ratio: move u down
            if above[0] <= lo_u:
                return best()
            u = max(lo_u, above[0] - step)
        else:
            if below[0] >= hi_u:
                return best()
            u = min(hi_u, below[0] + step)
        step *= 2
        y = evaluate(u)
        if abs(math.exp(y - goal) - 1) <= tolerance:
            return best()
        if y < goal:
            below = (u, y)
        elif y > goal:
            above = (u, y)
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
