"""JPEG XL (libjxl through imagecodecs, lossless modular mode at effort 3) as a plane coder: on
CT slices 1-5 % smaller than JPEG-LS at ~70 MB/s decoding on two cores; lossless only."""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np

from ...errors import CorruptSectionError
from .planes import PlaneCoder

EFFORT = 3
_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


class _Bits:
    """Reads a JPEG XL codestream's fields: least significant bit first."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def read(self, count: int) -> int:
        value = 0
        for i in range(count):
            byte = self.position >> 3
            if byte >= len(self.data):
                raise ValueError("stream ends inside its size header")
            value |= ((self.data[byte] >> (self.position & 7)) & 1) << i
            self.position += 1
        return value

    def u32_size(self) -> int:
        return self.read((9, 13, 18, 30)[self.read(2)]) + 1


def _codestream(payload: bytes, what: str) -> bytes:
    """The start of the codestream: the stream itself, or inside the ISO BMFF container libjxl
    writes when a codestream level must be signalled (``jxlc``, or the first ``jxlp`` box)."""
    if not payload.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return payload
    offset = 0
    while offset + 8 <= len(payload):
        size, kind = struct.unpack_from(">I4s", payload, offset)
        header = 8
        if size == 1 and offset + 16 <= len(payload):
            size, header = struct.unpack_from(">Q", payload, offset + 8)[0], 16
        if kind == b"jxlc":
            return payload[offset + header : offset + header + 32]
        if kind == b"jxlp":
            return payload[offset + header + 4 : offset + header + 36]
        if size < header:
            break
        offset += size
    raise CorruptSectionError(f"{what}: a JPEG XL container without a codestream")


def size_of(payload: bytes, what: str) -> tuple[int, int]:
    """(rows, columns) of a JPEG XL stream, read from its SizeHeader without decoding."""
    payload = _codestream(payload, what)
    if payload[:2] != b"\xff\x0a":
        raise CorruptSectionError(f"{what} is not a JPEG XL codestream")
    try:
        bits = _Bits(payload[2:18])
        if bits.read(1):  # small: multiples of 8 up to 256
            rows = (bits.read(5) + 1) * 8
            ratio = bits.read(3)
            columns = (bits.read(5) + 1) * 8 if ratio == 0 else 0
        else:
            rows = bits.u32_size()
            ratio = bits.read(3)
            columns = bits.u32_size() if ratio == 0 else 0
    except ValueError as exc:
        raise CorruptSectionError(f"{what}: {exc}") from None
    if ratio:
        numerator, denominator = _RATIOS[ratio]
        columns = rows * numerator // denominator
    return rows, columns


class JpegXlPlanes(PlaneCoder):
    """libjxl lossless at effort 3 (its weighted predictor with a fixed context tree)."""

    coder_id: ClassVar[str] = "jpegxl"
    max_near: ClassVar[int] = 0

    def encode(self, plane: np.ndarray, near: int) -> bytes:
        import imagecodecs

        bits = max(8, int(plane.max()).bit_length())
        if bits == 8:  # libjxl refuses 16-bit samples declared as 8 bits
            plane = plane.astype(np.uint8)
        return bytes(
            imagecodecs.jpegxl_encode(plane, lossless=True, effort=EFFORT, bitspersample=bits, numthreads=1)
        )

    def frame_size(self, payload: bytes, what: str) -> tuple[int, int]:
        return size_of(payload, what)

    def decode_stream(self, payload: bytes) -> np.ndarray:
        import imagecodecs

        return imagecodecs.jpegxl_decode(payload, numthreads=1)

    def library_versions(self) -> dict[str, str]:
        import imagecodecs

        return {"imagecodecs": imagecodecs.__version__, "libjxl": imagecodecs.jpegxl_version()}

    def settings(self) -> dict[str, int]:
        return {"effort": EFFORT}
