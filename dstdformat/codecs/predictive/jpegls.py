"""JPEG-LS (CharLS through imagecodecs) as a plane coder: the best installable lossless and
near-lossless coder that decodes at >= 50 MB/s on two cores (docs/benchmarks.md, archive tiers).

CharLS writes ~86 bytes of headers per plane (a SPIFF directory, the frame, the coding
parameters, the scan), all of which follow from the plane's shape, sample bits and NEAR: tiles
store the entropy-coded data alone where the headers rebuild byte for byte (``strip``/``dress``).
"""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np

from ...errors import CorruptSectionError
from .planes import PlaneCoder

_SOI, _SOF55, _LSE, _SOS, _APP8 = 0xFFD8, 0xFFF7, 0xFFF8, 0xFFDA, 0xFFE8
_EOI = b"\xff\xd9"
_SEGMENT = struct.Struct(">HH")  # marker, length
_FRAME = struct.Struct(">BHHB")  # bits per sample, rows, columns, components
# SPIFF header (ITU T.84 Annex F, as CharLS writes it): magic, version 2.0, profile 0, one
# component, height, width, colour space 10 (greyscale), bits, compression 6 (JPEG-LS),
# resolution units 1 with 300 x 300.
_SPIFF = struct.Struct(">6sBBBBIIBBBBII")
_SPIFF_END = b"\x00\x00\x00\x01\xff\xd8"  # the SPIFF end-of-directory entry


def _segment(marker: int, body: bytes) -> bytes:
    return _SEGMENT.pack(marker, len(body) + 2) + body


def default_thresholds(maxval: int, near: int) -> tuple[int, int, int]:
    """T1, T2, T3 of JPEG-LS's default coding parameters (ITU T.87 C.2.4.1.1.1)."""

    def clamp(value: int, low: int) -> int:
        return value if low <= value <= maxval else low

    factor = (min(maxval, 4095) + 128) // 256
    t1 = clamp(factor * (3 - 2) + 2 + 3 * near, near + 1)
    t2 = clamp(factor * (7 - 3) + 3 + 5 * near, t1)
    return t1, t2, clamp(factor * (21 - 4) + 4 + 7 * near, t2)


def dressed(bare: bytes, rows: int, columns: int, bits: int, near: int) -> bytes:
    """The stream CharLS writes around the entropy-coded data ``bare`` of a plane."""
    spiff = _SPIFF.pack(b"SPIFF\0", 2, 0, 0, 1, rows, columns, 10, bits, 6, 1, 300, 300)
    parts = [
        struct.pack(">H", _SOI),
        _segment(_APP8, spiff),
        _segment(_APP8, _SPIFF_END),
        _segment(_SOF55, struct.pack(">BHHBBBB", bits, rows, columns, 1, 1, 0x11, 0)),
    ]
    if bits > 8:  # CharLS states the parameters of 16-bit planes; 8-bit planes use the defaults
        maxval = (1 << bits) - 1
        parts.append(_segment(_LSE, struct.pack(">BHHHHH", 1, maxval, *default_thresholds(maxval, near), 64)))
    parts.append(_segment(_SOS, struct.pack(">BBBBBB", 1, 1, 0, near, 0, 0)))
    return b"".join(parts) + bare + _EOI


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

    def strip(self, stream: bytes, shape: tuple[int, int], bits: int, near: int) -> bytes | None:
        offset = 2
        while offset + _SEGMENT.size <= len(stream):
            marker, length = _SEGMENT.unpack_from(stream, offset)
            offset += 2 + length
            if marker == _SOS:
                bare = stream[offset : -len(_EOI)]
                return bare if dressed(bare, *shape, bits, near) == stream else None
        return None

    def dress(self, bare: bytes, shape: tuple[int, int], bits: int, near: int, what: str) -> bytes:
        if not (bits in (8, 16) and 0 <= near <= self.max_near and all(0 < n < 1 << 16 for n in shape)):
            raise CorruptSectionError(f"{what}: no JPEG-LS stream of {bits} bits, NEAR {near}, {shape}")
        return dressed(bare, *shape, bits, near)

    def library_versions(self) -> dict[str, str]:
        import imagecodecs

        return {"imagecodecs": imagecodecs.__version__, "charls": imagecodecs.jpegls_version()}
