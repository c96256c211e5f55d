"""Turning a numpy-style basic index into a step-1 region to decode plus a view to apply after."""

from __future__ import annotations

import operator
from typing import Any

from ..tiling import Region


def plan_index(key: Any, shape: tuple[int, ...]) -> tuple[Region, tuple[Any, ...]]:
    """Split ``key`` into the bounding ``region`` to decode and the ``view`` that finishes it.

    Supports integers (negative too), slices with any non-zero step, and one Ellipsis. Fancy and
    boolean indexing are refused rather than silently read whole.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        at = key.index(Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:at] + (slice(None),) * fill + key[at + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: volume is {len(shape)}-dimensional, got {len(key)}")
    key = key + (slice(None),) * (len(shape) - len(key))

    region, view = [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, slice):
            r = range(*k.indices(n))
            if len(r) == 0:
                region.append(slice(0, 0))
                view.append(slice(0, 0))
                continue
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            region.append(slice(lo, hi))
            start, last = r[0] - lo, r[-1] - lo
            stop = last + (1 if r.step > 0 else -1)
            view.append(slice(start, stop if stop >= 0 else None, r.step))
            continue
        if k is None:
            raise IndexError(
                "np.newaxis is not supported when indexing a volume; index first, then add axes to the result"
            )
        try:
            i = operator.index(k)
        except TypeError:
            raise IndexError(
                f"only integers, slices and '...' can index a volume (got {type(k).__name__}); "
                "read a region first, then apply fancy indexing to the array"
            ) from None
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
        i %= n
        region.append(slice(i, i + 1))
        view.append(0)
    return tuple(region), tuple(view)  # type: ignore[return-value]
