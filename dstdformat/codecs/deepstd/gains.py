"""Refinement gains: per block, how much of the network's correction a file applies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...progress import track
from ..base import DecodeContext, Fetch, Section
from .decoding import GAIN_STEPS, MAX_GAIN, DecodeState
from .region_plan import RegionPlan, refine_all

PlanRegion = Callable[[DecodeContext, tuple, Fetch], RegionPlan]


def choose_gains(
    array: np.ndarray, ctx: DecodeContext, sections: list[Section], plan_region: PlanRegion, progress: bool
) -> list[int]:
    """Per refinement block, how much of the network's correction to apply: the least-squares
    gain against the original (which only the encoder has), in steps of 1/GAIN_STEPS.

    The network was trained on other scans; where its correction does not fit this one
    (measured: the 512x512 chest at 128x, where applying it whole raised the MAE), the gain
    turns it down or off, and gain 0 blocks skip the network at decode time.
    """
    low, high = ctx.state["stored_window"]
    payloads = {(sec.kind, sec.tile): sec.payload for sec in sections}
    blocks = DecodeState.from_context(ctx).blocks(ctx)  # exactly the decoder's blocks
    gains = []
    for number in track(range(blocks.count), enabled=progress, desc="refinement gains", unit="block"):
        region = blocks.keep(number)
        plan = plan_region(ctx, region, lambda keys: {k: payloads[k] for k in keys})
        ((keep, inner, base, _),) = plan.blocks
        refined = (refine_all(plan.refiner, plan.jobs)[0] - plan.state.intercept) / plan.state.slope
        correction = (refined - base)[inner]
        target = np.clip(array[region].astype(np.float64), low, high) - base[inner]
        counted = (array[region] >= low) & (array[region] <= high)
        denominator = float(np.sum(correction[counted] ** 2))
        gain = float(np.sum(correction[counted] * target[counted])) / denominator if denominator else 0.0
        gains.append(int(np.clip(round(gain * GAIN_STEPS), 0, MAX_GAIN)))
    return gains
