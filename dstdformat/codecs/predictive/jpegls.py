"""JPEG-LS (CharLS through imagecodecs) as a plane coder: the best installable lossless and
near-lossless coder that decodes at >= 50 MB/s on two cores (docs/benchmarks.md, archive tiers)."""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np

from ...errors import CorruptSectionError
from .planes import PlaneCoder

_SOI, _SOF55 = 0xFFD8, 0xFFF7
_SEGMENT = struct.Struct(">HH")  # marker, length
_FRAME = struct.Struct(">BHHB")  # bits per sample, rows, columns, components


def frame_of(payload: bytes, what: str) -> tuple[int, int, int, int]:
    """(bits per sample, rows, columns, components) of a JPEG-LS stream's frame header, read
    without decoding, so that a forged size is refused before CharLS allocates for it."""
    if len(payload) < 4 or struct.unpack_from(">H", payload)[0] != _SOI:
        raise CorruptSectionError(f"{what} is not a JPEG-LS stream")
    offset = 2
    while offset + _SEGMENT.size <= len(payload):
        marker, length = _SEGMENT.unpack_from(payload, offset)
        if marker >> 8 != 0xFF or length < 2:
            break
        if marker == _SOF55 and offset + 4 + _FRAME.size <= len(payload):
            return _FRAME.unpack_from(payload, offset + 4)
        offset += 2 + length
    raise CorruptSectionError(f"{what} has no JPEG-LS frame header")


class JpegLsPlanes(PlaneCoder):
    """CharLS: LOCO-I prediction and context-adaptive Golomb coding; ``near`` is JPEG-LS NEAR."""

    coder_id: ClassVar[str] = "jpegls"
    max_near: ClassVar[int] = 255

    def encode(self, plane: np.ndarray, near: int) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpegls_encode(plane, level=near))

    def frame_size(self, payload: bytes, what: str) -> tuple[int, int]:
        bits, rows, columns, components = frame_of(payload, what)
        if components != 1 or not 2 <= bits <= 16:
            raise CorruptSectionError(
                f"{what} holds {components} components of {bits} bits; expected 1 of 2..16"
            )
        return rows, columns

    def decode_stream(self, payload: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.jpegls_decode(payload)

    def library_versions(self) -> dict[str, str]:
        import imagecodecs

        return {"imagecodecs": imagecodecs.__version__, "charls": imagecodecs.jpegls_version()}
