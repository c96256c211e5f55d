"""Video codecs over the slice stack, run as a user would from PyPI through PyAV.

The whole volume is one sequence (slice k is frame k), so inter prediction works across slices,
which is what makes these codecs strong on CT. HU values are mapped linearly onto the codec's
sample range over a fixed window starting at -1024 HU (values outside are clipped, as a user
would); the payload is the raw packets (no container), decoded with the standard decoders.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np

from ..codecs.deepstd.base_layers.av1 import DEFAULT_PRESET, ENCODER_PARAMS, scheduling_kept
from ..errors import InvalidInputError
from ..metadata import HU_WINDOW
from .base import BenchCodec, Knob, Payload, to_int16

#: The HU window every adapter codes: -1024 HU (air) up to 3071 HU (dense bone, metal clipped).
WINDOW_LOW, WINDOW_HIGH = HU_WINDOW


def _av():
    """PyAV, or a clear error (it ships SVT-AV1, dav1d, x265 and libvpx in its wheel)."""
    try:
        import av
    except ImportError:
        raise InvalidInputError("the video codec benchmarks need PyAV: pip install av") from None
    return av


def _crf_knob(low: int, high: int, crf_at_200x: float, per_doubling: float) -> Knob:
    """An integer CRF knob whose first guess follows log2(ratio), as measured on a chest slab."""

    def guess(ratio: float) -> float:
        return min(high, max(low, crf_at_200x + per_doubling * math.log2(max(ratio, 1.0) / 200)))

    return Knob("crf", low, high, raises_ratio=True, guess=guess, integer=True)


class VideoCodec(BenchCodec):
    """One encoder/decoder pair from PyAV; the knob is the encoder's integer CRF."""

    family = "video (slices as frames)"
    encoder = decoder = pix_fmt = ""
    bits = 10
    chroma = True  # 4:2:0 formats: constant mid-grey chroma planes follow the luma rows
    align = 2  # frame sizes are padded (edge replication) to a multiple of this, then cropped
    min_size = 2  # ... and to at least this many samples each way

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """HU per sample level: the window over the levels (~4 for 10-bit, 1 for 12-bit, ~16 for 8-bit)."""
        return (WINDOW_HIGH - WINDOW_LOW) / self.levels

    def options(self, crf: int, threads: int) -> dict[str, str]:
        raise NotImplementedError

    def coded_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return tuple(
            max(self.min_size, -(-int(s) // self.align) * self.align)  # type: ignore[return-value]
            for s in shape[1:]
        )

    def to_samples(self, volume: np.ndarray) -> np.ndarray:
        samples = np.clip(np.rint((volume.astype(np.float32) - WINDOW_LOW) / self.step), 0, self.levels)
        return samples.astype(np.uint8 if self.bits == 8 else np.uint16)

    def encode(self, volume: np.ndarray, value: float | None, threads: int) -> Payload:
        av = _av()
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration otherwise
        low, high = int(self.knob.low), int(self.knob.high)
        crf = int(round(value)) if value is not None else (low + high) // 2
        if not low <= crf <= high:
            raise InvalidInputError(f"{self.name}: crf must be in {low}..{high}, got {value}")
        height, width = self.coded_size(volume.shape)
        samples = self.to_samples(volume)
        samples = np.pad(
            samples, [(0, 0), (0, height - samples.shape[1]), (0, width - samples.shape[2])], mode="edge"
        )
        context = av.CodecContext.create(self.encoder, "w")
        context.width, context.height, context.pix_fmt = width, height, self.pix_fmt
        context.time_base, context.framerate = Fraction(1, 25), 25
        context.thread_count = max(1, threads)
        context.options = self.options(crf, max(1, threads))
        chroma = np.full((height // 2, width), 1 << (self.bits - 1), samples.dtype)
        packets: list[bytes] = []
        with scheduling_kept() as settle:  # SVT-AV1 makes its threads real-time otherwise
            for number, image in enumerate(samples):
                plane = np.concatenate([image, chroma]) if self.chroma else image
                frame = av.VideoFrame.from_ndarray(plane, format=self.pix_fmt)
                frame.pts = number
                packets += [bytes(p) for p in context.encode(frame)]
                if number == 0:
                    settle()
            packets += [bytes(p) for p in context.encode(None)]
            del context
        return packets

    def decode(self, payload: Payload, shape: tuple[int, ...], threads: int) -> np.ndarray:
        av = _av()
        context = av.CodecContext.create(self.decoder, "r")
        context.thread_count = max(1, threads)
        rows, cols = shape[1], shape[2]  # also drops the chroma rows 4:2:0 frames come back with
        frames = [f for p in payload for f in context.decode(av.Packet(p))]
        frames += list(context.decode(None))
        if len(frames) != shape[0]:
            raise InvalidInputError(f"{self.name}: decoded {len(frames)} frames, expected {shape[0]}")
        samples = np.stack([f.to_ndarray()[:rows, :cols] for f in frames])
        return to_int16(samples.astype(np.float32) * np.float32(self.step) + np.float32(WINDOW_LOW))


class AV1(VideoCodec):
    """SVT-AV1 at preset 4, 10-bit 4:2:0 (its Main profile), decoded by dav1d."""

    name = "AV1"
    encoder, decoder, pix_fmt, bits = "libsvtav1", "libdav1d", "yuv420p10le", 10
    min_size = 8  # SVT-AV1 refuses frames under 4 samples; 8 is its smallest block
    knob = _crf_knob(1, 63, 20, 10)

    def options(self, crf, threads):
        return {"crf": str(crf), "preset": "4", "svtav1-params": f"lp={threads}"}


class AV1AtDeepSTDSettings(AV1):
    """Bare AV1 with the settings of deepstd's AV1 base layer (slower preset, no temporal
    filtering): the like-for-like baseline, where :class:`AV1` is what a user runs by default."""

    name = "AV1 (deepstd settings)"

    def options(self, crf, threads):
        return {
            "crf": str(crf),
            "preset": str(DEFAULT_PRESET),
            "svtav1-params": f"{ENCODER_PARAMS}:lp={threads}",
        }


class _X265(VideoCodec):
    """x265 at preset medium, 4:0:0 (grey) HEVC, decoded by FFmpeg's HEVC decoder."""

    encoder, decoder, chroma = "libx265", "hevc", False
    # x265's cuTree writes past its buffers on frames narrower than about 50 samples (heap
    # corruption, seen with valgrind and as aborts at 34..48 wide): never give it small frames.
    min_size = 64
    knob = _crf_knob(0, 51, 21, 5)

    def options(self, crf, threads):
        return {"crf": str(crf), "preset": "medium", "x265-params": f"log-level=error:pools={threads}"}


class HEVC12(_X265):
    name, pix_fmt, bits = "HEVC 12-bit", "gray12le", 12


class HEVC10(_X265):
    name, pix_fmt, bits = "HEVC 10-bit", "gray10le", 10


class VP9(VideoCodec):
    """libvpx-vp9 in constant-quality mode (``b:v`` 0), 8-bit 4:2:0: 16 HU per level."""

    name = "VP9"
    encoder, decoder, pix_fmt, bits = "libvpx-vp9", "vp9", "yuv420p", 8
    knob = _crf_knob(0, 63, 30, 9)

    def options(self, crf, threads):
        return {"crf": str(crf), "b:v": "0", "row-mt": "1"}


#: ``dstd bench --codecs`` names of the video adapters.
VIDEO_CODECS: dict[str, type[VideoCodec]] = {
    "av1": AV1,
    "av1-deepstd-settings": AV1AtDeepSTDSettings,
    "hevc-12bit": HEVC12,
    "hevc-10bit": HEVC10,
    "vp9": VP9,
}
