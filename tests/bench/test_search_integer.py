"""The ratio search on integer knobs (video CRFs): integers only, neighbours tried, no repeats."""

from __future__ import annotations

import pytest

from dstdformat.bench.base import Knob
from dstdformat.bench.search import search_ratio

CRF = Knob("crf", 0, 63, raises_ratio=True, guess=lambda r: 20.0, integer=True)


def _counting(fn):
    calls = []

    def ratio_at(value):
        calls.append(value)
        return fn(value)

    return ratio_at, calls


@pytest.mark.parametrize("target", [3.0, 40.0, 300.0, 1500.0])
def test_integer_search_lands_when_steps_allow(target):
    ratio_at, calls = _counting(lambda crf: 2.5 * 1.11**crf)  # 11% steps: always within 5%
    found = search_ratio(ratio_at, CRF, target)
    assert found.reached and abs(found.ratio / target - 1) <= 0.05 and found.note == ""
    assert all(isinstance(v, int) for v in calls) and len(set(calls)) == len(calls)
    assert found.evaluations == len(calls) <= 10 and isinstance(found.value, int)


def test_integer_search_between_steps_keeps_the_closest_neighbour():
    ratio_at, calls = _counting(lambda crf: 2.0 ** (crf / 2))  # 41% steps
    found = search_ratio(ratio_at, CRF, 2.0**10.25)  # between crf 20 (1024x) and 21 (1448x)
    assert not found.reached and found.value in (20, 21) and {20, 21} <= set(calls)
    assert "crf is an integer: 20 gives 1024.0x, 21 gives 1448.2x" == found.note
    closer = search_ratio(lambda crf: 2.0 ** (crf / 2), CRF, 1100.0)
    assert closer.value == 20 and not closer.reached and closer.ratio == 1024.0


def test_integer_search_decreasing_knob_and_bounds():
    quantizer = Knob("q", 1, 100, raises_ratio=False, integer=True)
    found = search_ratio(lambda q: 1000.0 / q, quantizer, 50.0)  # q = 20; 19 and 21 are within 5%
    assert found.reached and found.value in (19, 20, 21) and isinstance(found.value, int)
    top = search_ratio(lambda crf: 1.0 + crf, CRF, 1000.0)  # at most 64x
    assert not top.reached and top.value == 63 and top.note == ""
    bottom = search_ratio(lambda crf: 10.0 + crf, CRF, 2.0)  # at least 10x
    assert not bottom.reached and bottom.value == 0


def test_float_knobs_search_as_before():
    found = search_ratio(lambda v: 1 + 3 * v**0.7, Knob("x", 1e-3, 1e4, True), 37.0)
    assert found.reached and not float(found.value).is_integer()
