"""What every benchmark adapter shares: the quality knob and the encode/decode interface.

Kept apart from ``codecs.py`` so that adapter modules (``video.py``) can build on it while
``codecs.py`` registers them, without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

Payload = list[bytes]


@dataclass(frozen=True)
class Knob:
    """A codec's quality parameter, searched between ``low`` and ``high``: in log space, or over
    the integers when ``integer`` (a CRF cannot be asked for 23.4)."""

    name: str
    low: float
    high: float
    raises_ratio: bool  # True when a larger value gives a higher compression ratio
    guess: Callable[[float], float] | None = None  # target ratio -> first value to try
    integer: bool = False


class BenchCodec:
    name: str = ""
    family: str = ""  # "dstd", "3d lossy", "2d lossy (slice by slice)", "video", "lossless reference"
    knob: Knob | None = None
    threaded: bool = True  # can use several threads (natively or over slices)

    def encode(self, volume: np.ndarray, value: float | None, threads: int) -> Payload:
        raise NotImplementedError

    def decode(self, payload: Payload, shape: tuple[int, ...], threads: int) -> np.ndarray:
        raise NotImplementedError


def to_int16(decoded: np.ndarray) -> np.ndarray:
    """What a user would store: lossy output rounded and clipped to int16."""
    return np.clip(np.rint(decoded), -32768, 32767).astype(np.int16)


def to_unsigned(volume: np.ndarray) -> tuple[np.ndarray, int]:
    """``volume`` shifted to uint16 by its minimum (for codecs that take unsigned samples only)
    and that minimum."""
    low = int(volume.min())
    if int(volume.max()) - low > 65535:
        raise InvalidInputError("this codec needs a value range of at most 16 bits")
    return (volume.astype(np.int32) - low).astype(np.uint16), low


def unsigned_bits(shifted: np.ndarray) -> int:
    """Bits per sample a shifted volume needs (at least 8)."""
    return max(8, int(np.ceil(np.log2(int(shifted.max()) + 1))))
