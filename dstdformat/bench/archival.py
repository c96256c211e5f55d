"""Adapters for the tiers an archive stores: lossless and error-bounded (``max_error=e``).

Every codec here is what a user can install and call on an int16 CT volume: imagecodecs'
JPEG-LS (CharLS), JPEG XL (libjxl) at several efforts, JPEG 2000 (OpenJPEG) and HTJ2K (OpenJPH)
in their reversible modes, FFV1 through PyAV, zstd and Blosc, SPERR with a point-wise bound,
and our own codecs through the real ``.dstd`` writer. For the bounded tier the knob is the
maximum absolute error in HU (an integer); lossless codecs take no knob.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np

from ..errors import InvalidInputError
from .base import BenchCodec, Payload, to_unsigned, unsigned_bits
from .base import to_int16 as _to_int16
from .codecs import BloscReference, DstdCodec, ZstdReference, _map_slices

__all__ = ["BOUNDED_CODECS", "LOSSLESS_CODECS", "make_tier_codec"]


def _to_unsigned(volume: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Slices shifted to uint16 and the shift as a payload header."""
    shifted, low = to_unsigned(volume)
    return shifted, np.array([low], "<i4").tobytes()


def _from_unsigned(slices: list[np.ndarray], header: bytes) -> np.ndarray:
    low = int(np.frombuffer(header, "<i4")[0])
    return _to_int16(np.stack(slices).astype(np.int32) + low)


class JPEGLS(BenchCodec):
    """CharLS on uint16 slices; ``value`` is JPEG-LS NEAR (0 = lossless), the guaranteed bound."""

    name, family = "JPEG-LS", "2d (slice by slice)"

    def encode(self, volume, value, threads):
        import imagecodecs

        shifted, header = _to_unsigned(volume)
        near = int(value or 0)
        return [
            header,
            *_map_slices(lambda s: bytes(imagecodecs.jpegls_encode(s, level=near)), list(shifted), threads),
        ]

    def decode(self, payload, shape, threads):
        import imagecodecs

        return _from_unsigned(_map_slices(imagecodecs.jpegls_decode, payload[1:], threads), payload[0])


class JPEGXLLossless(BenchCodec):
    family = "2d (slice by slice)"

    def __init__(self, effort: int) -> None:
        self.effort, self.name = effort, f"JPEG XL e{effort}"

    def encode(self, volume, value, threads):
        import imagecodecs

        shifted, header = _to_unsigned(volume)
        bits = unsigned_bits(shifted)

        def one(image: np.ndarray) -> bytes:
            return bytes(
                imagecodecs.jpegxl_encode(
                    image, lossless=True, effort=self.effort, bitspersample=bits, numthreads=1
                )
            )

        return [header, *_map_slices(one, list(shifted), threads)]

    def decode(self, payload, shape, threads):
        import imagecodecs

        slices = _map_slices(lambda b: imagecodecs.jpegxl_decode(b, numthreads=1), payload[1:], threads)
        return _from_unsigned(slices, payload[0])


class _ReversibleSlices(BenchCodec):
    family = "2d (slice by slice)"
    encode_slice: Callable[[np.ndarray], bytes]
    decode_slice: Callable[[bytes], np.ndarray]

    def encode(self, volume, value, threads):
        return _map_slices(lambda s: bytes(self.encode_slice(np.ascontiguousarray(s))), list(volume), threads)

    def decode(self, payload, shape, threads):
        return np.stack(_map_slices(self.decode_slice, payload, threads)).astype(np.int16)


class JPEG2000Lossless(_ReversibleSlices):
    name = "JPEG 2000 (reversible)"

    @staticmethod
    def encode_slice(image):
        import imagecodecs

        return imagecodecs.jpeg2k_encode(image, level=0, reversible=True, numthreads=1)

    @staticmethod
    def decode_slice(blob):
        import imagecodecs

        return imagecodecs.jpeg2k_decode(blob, numthreads=1)


class HTJ2KLossless(BenchCodec):
    """OpenJPH reversible on uint16 slices: given int16 slices holding -32768 it returned a wrong
    voxel in about one fresh process of eight (as a user would store CT: shifted, unsigned)."""

    name, family = "HTJ2K (reversible)", "2d (slice by slice)"

    def encode(self, volume, value, threads):
        import imagecodecs

        shifted, header = _to_unsigned(volume)
        return [
            header,
            *_map_slices(
                lambda s: bytes(imagecodecs.htj2k_encode(s, reversible=True)), list(shifted), threads
            ),
        ]

    def decode(self, payload, shape, threads):
        import imagecodecs

        return _from_unsigned(_map_slices(imagecodecs.htj2k_decode, payload[1:], threads), payload[0])


class FFV1(BenchCodec):
    """FFmpeg's FFV1 (level 3, range coder, large contexts) over the slice stack, 16-bit grey."""

    name, family = "FFV1", "video (slice stack)"

    def encode(self, volume, value, threads):
        import av

        shifted, header = _to_unsigned(volume)
        context = av.CodecContext.create("ffv1", "w")
        context.width, context.height = shifted.shape[2], shifted.shape[1]
        context.pix_fmt, context.time_base = "gray16le", Fraction(1, 25)
        context.options = {"level": "3", "coder": "1", "context": "1", "slices": "4", "threads": str(threads)}
        packets: Payload = [header, np.array(shifted.shape, "<i4").tobytes()]
        for number, image in enumerate(shifted):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray16le")
            frame.pts = number
            packets += [bytes(p) for p in context.encode(frame)]
        packets += [bytes(p) for p in context.encode(None)]
        packets.insert(2, bytes(context.extradata or b""))  # level 3 keeps its setup there
        return packets

    def decode(self, payload, shape, threads):
        import av

        slices_, rows, columns = np.frombuffer(payload[1], "<i4")
        context = av.CodecContext.create("ffv1", "r")
        context.width, context.height, context.pix_fmt = int(columns), int(rows), "gray16le"
        context.extradata = payload[2] or None
        context.options = {"threads": str(threads)}
        frames = []
        for blob in [*payload[3:], None]:
            packet = None if blob is None else av.Packet(blob)
            frames += [f.to_ndarray() for f in context.decode(packet)]
        if len(frames) != slices_:
            raise InvalidInputError(f"FFV1 decoded {len(frames)} of {slices_} slices")
        return _from_unsigned(frames, payload[0])


class SperrBounded(BenchCodec):
    """SPERR's point-wise error mode on the whole volume: |error| <= e before rounding, so the
    int16 result keeps the integer bound."""

    name, family = "SPERR (point-wise bound)", "3d"

    def encode(self, volume, value, threads):
        import imagecodecs

        return [
            bytes(
                imagecodecs.sperr_encode(volume.astype(np.float64), float(value), "pwe", numthreads=threads)
            )
        ]

    def decode(self, payload, shape, threads):
        import imagecodecs

        return _to_int16(imagecodecs.sperr_decode(payload[0], numthreads=threads))


class DstdBounded(DstdCodec):
    """Our codec at ``max_error=value`` (base layer + exact outliers)."""

    knob_option = "max_error"


#: Lossless tier: id -> adapter (``dstd bench --tier lossless --codecs ...``).
LOSSLESS_CODECS: dict[str, Callable[[], BenchCodec]] = {
    "dstd-lossless": lambda: DstdCodec("lossless"),
    "dstd-predictive": lambda: DstdCodec("predictive"),
    "dstd-predictive-2d": lambda: DstdCodec("predictive", {"inter_slice": False}, "predictive 2d"),
    "jpegls": JPEGLS,
    "jpegxl-e2": lambda: JPEGXLLossless(2),
    "jpegxl-e3": lambda: JPEGXLLossless(3),
    "jpegxl-e5": lambda: JPEGXLLossless(5),
    "jpegxl-e7": lambda: JPEGXLLossless(7),
    "jpeg2000": JPEG2000Lossless,
    "htj2k": HTJ2KLossless,
    "ffv1": FFV1,
    "zstd": ZstdReference,
    "blosc": BloscReference,
}

#: Error-bounded tier: id -> adapter taking the bound in HU.
BOUNDED_CODECS: dict[str, Callable[[], BenchCodec]] = {
    "dstd-predictive": lambda: DstdBounded("predictive", {}, "predictive max_error"),
    "dstd-deepstd": lambda: DstdBounded("deepstd", {"model": None}, "deepstd max_error"),
    "jpegls": JPEGLS,
    "sperr": SperrBounded,
}


def make_tier_codec(tier: str, name: str) -> BenchCodec:
    table = {"lossless": LOSSLESS_CODECS, "bounded": BOUNDED_CODECS}[tier]
    if name not in table:
        raise InvalidInputError(f"unknown {tier} benchmark codec {name!r}; choose from {', '.join(table)}")
    return table[name]()
