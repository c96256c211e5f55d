"""AV1 base layer: a tile's slices coded as the frames of one closed AV1 sequence.

Why AV1: measured on our chest CT, prediction from slice to slice (inter frames) beats every 3D
wavelet coder we can install at the rates the codec is used at (docs/benchmarks.md). SVT-AV1
encodes and dav1d decodes, both shipped inside the PyAV wheel. Main profile is 10-bit 4:2:0: the
window's values map linearly onto 1024 luma levels (``SampleMap``) and the two chroma planes are
a constant mid-grey, which costs a few bytes a frame.

Section payload (little-endian): ``b"DAV1"``, ``u8`` version (0), ``u8`` flags (0), ``u16``
frames, ``u16`` coded width, ``u16`` coded height, then ``frames`` x ``u32`` packet lengths and
the packets (one AV1 temporal unit per displayed frame, in display order). The coded width and
height are the tile's, rounded up to :data:`ALIGN` by edge replication.
"""

from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ....errors import CodecError, CorruptSectionError, InvalidInputError

NAME = "av1"
ENCODER, DECODER = "libsvtav1", "libdav1d"
PIXEL_FORMAT = "yuv420p10le"
BIT_DEPTH = 10
LEVELS = (1 << BIT_DEPTH) - 1
#: Frame edges are padded to a multiple of this (4:2:0 needs even sizes; 8 is SVT-AV1's block).
ALIGN = 8
#: SVT-AV1 speed preset (0 slowest .. 13 fastest) of the streams files keep. Measured on training
#: scans (Lung-PET-CT-Dx A0001 soft and sharp kernels, 64 slices of 512x512; BD-rate at equal MAE
#: against preset 4 with SVT-AV1's defaults): preset 3 without temporal filtering -9.3% / -7.2%
#: at 2x the time, preset 2 -12.9% / -11.7% at 3x, preset 1 -19% at 6x. Preset 3 keeps encoding
#: above 5 MB/s on 2 cores; the rate search runs at :data:`PROBE_PRESET`.
DEFAULT_PRESET = 3
#: The fast preset the rate search predicts sizes with (10x faster than preset 3, streams 10-20%
#: smaller at the same CRF, a factor the search measures and corrects).
PROBE_PRESET = 10
#: SVT-AV1 options besides CRF and preset. Temporal filtering (denoising the frames a keyframe
#: and alt-refs are predicted from) smooths CT noise that MAE counts: off, -2% to -3% of the rate.
ENCODER_PARAMS = "enable-tf=0"
#: Frame shapes SVT-AV1 hangs on (see :func:`coded_size`): a side under NARROW_MIN beside one over
#: NARROW_LONG.
NARROW_MIN, NARROW_LONG = 32, 64
MIN_CRF, MAX_CRF = 1, 63
#: CRFs are quarter steps (SVT-AV1's extended CRF, given through ``svtav1-params``): one whole
#: step moves a stream by about 8%, too coarse to land a one-tile volume within 5% of a ratio.
CRF_STEPS = 4
MAX_FRAMES = 4096
_MAGIC = b"DAV1"
_VERSION = 0
_HEAD = struct.Struct("<4sBBHHH")
_LENGTH = struct.Struct("<I")

# SVT-AV1 prints its configuration to stderr at every encoder start unless told otherwise.
os.environ.setdefault("SVT_LOG", "1")


def _av():
    try:
        import av
    except ImportError:
        raise CodecError("the AV1 base layer needs PyAV: pip install 'av>=14'") from None
    return av


@contextmanager
def scheduling_kept() -> Iterator[Callable[[], None]]:
    """Run an encoder without letting it change this process's scheduling; yields ``settle``,
    to call once the encoder has started its threads (after its first frame).

    SVT-AV1 running as root moves the thread that opens an encoder to real-time ``SCHED_FIFO``
    priority 99 and leaves it there, and its worker threads run at that priority too (measured:
    42 threads at FIFO 99 while a 256x256 tile encoded). Threads started later inherit it, and on
    a machine with few cores real-time threads that spin (torch's OpenMP workers, a thread pool
    waiting for the GIL, the encoder's own workers) starve everything else: a test run stalled for
    over an hour that way. ``settle`` puts the encoder's threads back to the caller's policy; the
    caller's own thread is put back on exit. Threads that were running before (the caller's
    others) are left as their owners set them.
    """
    getter = getattr(os, "sched_getscheduler", None)
    if getter is None:  # not Linux: nothing to put back
        yield lambda: None
        return
    policy, param = getter(0), os.sched_getparam(0)
    own, earlier = threading.get_native_id(), set(_thread_ids())

    def settle() -> None:
        for tid in [t for t in _thread_ids() if t not in earlier] + [own]:
            try:
                if (getter(tid), os.sched_getparam(tid).sched_priority) != (policy, param.sched_priority):
                    os.sched_setscheduler(tid, policy, param)
            except OSError:  # the thread ended meanwhile; lowering a priority is always allowed
                pass

    try:
        yield settle
    finally:
        settle()


def _thread_ids() -> list[int]:
    """This process's threads (Linux: /proc/self/task)."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def library_record() -> dict:
    """What the header records about the libraries that wrote the stream."""
    av = _av()
    versions = getattr(av, "library_versions", {}) or {}
    record = {"encoder": ENCODER, "decoder": DECODER, "pyav": str(av.__version__)}
    if "libavcodec" in versions:
        record["libavcodec"] = ".".join(str(v) for v in versions["libavcodec"])
    return record


@dataclass(frozen=True)
class SampleMap:
    """How stored values map to 10-bit samples: ``sample = round((value - low) / step)``."""

    low: float
    step: float

    @classmethod
    def for_window(cls, low: float, high: float) -> SampleMap:
        return cls(float(low), (float(high) - float(low)) / LEVELS)

    def to_samples(self, values: np.ndarray) -> np.ndarray:
        """Samples of ``values``, computed in float32 (half the memory traffic of float64): exact
        for integer values in the default window, whose quotients stay >= 1e-4 from a half step;
        elsewhere a value within float32's error of a half step may round either way."""
        samples = np.subtract(values, self.low, dtype=np.float32)  # in place from here on
        samples *= np.float32(1.0 / self.step)
        np.rint(samples, out=samples)
        np.clip(samples, 0, LEVELS, out=samples)
        return samples.astype(np.uint16)

    def to_values(self, samples: np.ndarray, dtype=np.float32) -> np.ndarray:
        return (samples.astype(dtype) * dtype(self.step) + dtype(self.low)).astype(dtype, copy=False)

    def to_json(self) -> dict:
        return {"bit_depth": BIT_DEPTH, "low": self.low, "step": self.step}

    @classmethod
    def from_json(cls, record: object) -> SampleMap:
        if not isinstance(record, dict) or record.get("bit_depth") != BIT_DEPTH:
            raise ValueError(f"AV1 sample map must be 10-bit {{bit_depth, low, step}}, got {record!r}")
        low, step = float(record["low"]), float(record["step"])
        # Bounds that keep low + 1023 x step well inside float32 (a forged map cannot overflow).
        if not (math.isfinite(low) and abs(low) < 1e9 and math.isfinite(step) and 0 < step < 1e6):
            raise ValueError(f"AV1 sample map has a bad low {low!r} or step {step!r}")
        return cls(low, step)


def coded_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of the frames of a tile of ``shape`` (slices, rows, columns).

    Frames narrower than :data:`NARROW_MIN` next to a side longer than :data:`NARROW_LONG` are
    widened to NARROW_MIN: SVT-AV1 4.1 never returns from the flush of such frames (found by
    ``benchmarks/write_stress.py``: every 8..24 x 72..4096 frame, any CRF, preset and frame
    count, hung; 32 x anything and 8..24 x up to 64 encode). No file can hold such a stream
    from before, since its encode never ended.
    """
    height, width = (max(ALIGN, -(-int(s) // ALIGN) * ALIGN) for s in shape[1:3])
    if min(height, width) < NARROW_MIN and max(height, width) > NARROW_LONG:
        height, width = max(height, NARROW_MIN), max(width, NARROW_MIN)
    return height, width


def is_crf(value: object) -> bool:
    """Whether ``value`` is a CRF files may record: a quarter step in MIN_CRF..MAX_CRF."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and MIN_CRF <= value <= MAX_CRF
        and float(value * CRF_STEPS).is_integer()
    )


def crf_of_steps(steps: int) -> int | float:
    """The CRF of ``steps`` quarter steps; whole CRFs as ints (recorded as before: ``55``)."""
    whole, part = divmod(int(steps), CRF_STEPS)
    return whole if part == 0 else steps / CRF_STEPS


def check_encodable(samples: np.ndarray, crf: float) -> None:
    """Refuse a block or CRF the encoder cannot take, before any encoder starts."""
    if samples.ndim != 3 or not 1 <= samples.shape[0] <= MAX_FRAMES:
        raise InvalidInputError(f"AV1 tiles are 3D with 1..{MAX_FRAMES} slices, got {samples.shape}")
    if not is_crf(crf):
        raise InvalidInputError(
            f"AV1 crf must be in {MIN_CRF}..{MAX_CRF} in steps of {1 / CRF_STEPS}, got {crf}"
        )
    height, width = coded_size(samples.shape)
    if height > 65535 or width > 65535:
        raise InvalidInputError(f"AV1 frames are at most 65535 samples wide, got {samples.shape}")


def encode(samples: np.ndarray, crf: float, preset: int = DEFAULT_PRESET) -> bytes:
    """Code a (slices, rows, columns) uint16 block of 10-bit samples as one closed sequence, in
    this process with no deadline (the codec calls :func:`.bounded.encode_av1`, which runs this in
    a helper process it can abandon)."""
    av = _av()
    check_encodable(samples, crf)
    height, width = coded_size(samples.shape)
    padded = np.pad(
        samples, [(0, 0), (0, height - samples.shape[1]), (0, width - samples.shape[2])], mode="edge"
    )
    context = av.CodecContext.create(ENCODER, "w")
    context.width, context.height, context.pix_fmt = width, height, PIXEL_FORMAT
    context.time_base, context.framerate = Fraction(1, 25), 25
    params = ENCODER_PARAMS if float(crf).is_integer() else f"{ENCODER_PARAMS}:crf={float(crf):g}"
    context.options = {"crf": str(int(crf)), "preset": str(int(preset)), "svtav1-params": params}
    chroma = np.full((height // 2, width), 1 << (BIT_DEPTH - 1), np.uint16)
    packets: list[bytes] = []
    with scheduling_kept() as settle:
        for number, frame_samples in enumerate(padded):
            frame = av.VideoFrame.from_ndarray(np.concatenate([frame_samples, chroma]), format=PIXEL_FORMAT)
            frame.pts = number
            packets += [bytes(p) for p in context.encode(frame)]
            if number == 0:  # the encoder and its threads exist now
                settle()
        packets += [bytes(p) for p in context.encode(None)]
        del context  # its threads end here, before the caller's priority is back
    if len(packets) != len(padded) or not all(packets):
        raise CodecError(f"the AV1 encoder wrote {len(packets)} packets for {len(padded)} frames")
    head = _HEAD.pack(_MAGIC, _VERSION, 0, len(packets), width, height)
    return b"".join([head, *(_LENGTH.pack(len(p)) for p in packets), *packets])


def _parse(payload: bytes) -> tuple[tuple[int, int, int], list[bytes]]:
    """(frames, coded height, coded width) and the packets, checked for self-consistency."""
    if len(payload) < _HEAD.size:
        raise CorruptSectionError(f"too short for an AV1 stream ({len(payload)} bytes)")
    magic, version, _flags, frames, width, height = _HEAD.unpack_from(payload)
    if magic != _MAGIC or version != _VERSION or not frames:
        raise CorruptSectionError(
            f"not an AV1 tile stream (magic {magic!r}, version {version}, {frames} frames)"
        )
    start = _HEAD.size + _LENGTH.size * frames
    if len(payload) < start:
        raise CorruptSectionError("AV1 stream is cut inside its packet table")
    lengths = [_LENGTH.unpack_from(payload, _HEAD.size + _LENGTH.size * n)[0] for n in range(frames)]
    if 0 in lengths or start + sum(lengths) != len(payload):
        raise CorruptSectionError(
            f"AV1 packet lengths (total {sum(lengths)}) do not fill the "
            f"{len(payload) - start} bytes that follow them"
        )
    packets, offset = [], start
    for length in lengths:
        packets.append(payload[offset : offset + length])
        offset += length
    return (frames, height, width), packets


def check(payload: bytes, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The coded block shape of a section, after checking it against the tile it must hold."""
    coded, _ = _parse(payload)
    expected = (int(shape[0]), *coded_size(shape))
    if coded != expected:
        raise CorruptSectionError(
            f"AV1 stream holds {coded[0]} frames of {coded[2]}x{coded[1]}; "
            f"the tile needs {expected[0]} of {expected[2]}x{expected[1]}"
        )
    return expected  # type: ignore[return-value]


def decode_coded(payload: bytes, depth: int | None = None) -> np.ndarray:
    """All coded samples (frames, coded height, coded width) of a stream; any misfit is a
    CorruptSectionError. With ``depth``, the decoder stops after that many frames (the packets
    are one temporal unit per shown frame, in display order, so the first ``depth`` packets hold
    the first ``depth`` frames, bit for bit as a full decode gives them); later frames are unset.

    Runs the C decoder on the bytes: call it on untrusted data only inside a helper process.
    """
    av = _av()
    (frames, height, width), packets = _parse(payload)
    context = av.CodecContext.create(DECODER, "r")
    # One thread: with its frame threads, dav1d deadlocked in dav1d_flush when the context was
    # freed after an error on a forged stream (found by tests/codecs/test_deepstd_av1.py); one
    # thread still decodes a 512x512x300 scan at ~240 MB/s (docs/benchmarks.md). dav1d also
    # refuses frames larger than max_pixels before allocating them.
    context.thread_count = 1
    context.options = {"max_pixels": str(height * width), "threads": "1"}
    out = np.empty((frames, height, width), np.uint16)
    wanted = frames if depth is None else max(1, min(int(depth), frames))
    count = 0

    def take(decoded) -> None:
        nonlocal count
        for frame in decoded:
            if count >= frames:
                raise CorruptSectionError(f"AV1 stream holds more than {frames} frames")
            if (frame.format.name, frame.height, frame.width) != (PIXEL_FORMAT, height, width):
                raise CorruptSectionError(
                    f"AV1 frame {count} is {frame.format.name} {frame.width}x{frame.height}, "
                    f"expected {PIXEL_FORMAT} {width}x{height}"
                )
            out[count] = frame.to_ndarray()[:height]
            count += 1

    try:
        for packet in packets[:wanted]:
            take(context.decode(av.Packet(packet)))
        take(context.decode(None))
    except CorruptSectionError:
        raise
    except Exception as exc:  # FFmpeg errors, value errors from PyAV
        raise CorruptSectionError(f"AV1 stream does not decode: {type(exc).__name__}: {exc}") from None
    if count != wanted:
        raise CorruptSectionError(f"AV1 stream decoded to {count} frames, expected {wanted}")
    if int(out[:wanted].max(initial=0)) > LEVELS:
        raise CorruptSectionError("AV1 stream decoded to samples above 10 bits")
    return out
