"""Adapters that give every compared codec the same shape: a quality knob, encode and decode.

Each adapter encodes an int16 HU volume and decodes back to int16 HU (lossy outputs are rounded
and clipped to int16, which is what a user would store). Ratios are always raw int16 bytes over
compressed bytes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .base import BenchCodec, Knob, Payload, to_unsigned, unsigned_bits
from .base import to_int16 as _to_int16
from .video import VIDEO_CODECS

__all__ = [
    "BASELINES",
    "BenchCodec",
    "Knob",
    "Payload",
    "available_bench_codecs",
    "cpu_threads",
    "make_bench_codec",
    "payload_size",
]


def _map_slices(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> list[Any]:
    if threads <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(threads) as pool:  # imagecodecs releases the GIL
        return list(pool.map(fn, items))


class Sperr3D(BenchCodec):
    name, family = "SPERR", "3d lossy"
    knob = Knob("bpp", 16 / 8192, 8.0, raises_ratio=False, guess=lambda r: 16 / r)

    def encode(self, volume, value, threads):
        import imagecodecs

        return [bytes(imagecodecs.sperr_encode(volume.astype(np.float64), value, "bpp", numthreads=threads))]

    def decode(self, payload, shape, threads):
        import imagecodecs

        return _to_int16(imagecodecs.sperr_decode(payload[0], numthreads=threads))


class SZ3(BenchCodec):
    name, family = "SZ3", "3d lossy"
    knob = Knob("abs error bound", 0.05, 4000.0, raises_ratio=True, guess=lambda r: r / 2)
    threaded = False

    def encode(self, volume, value, threads):
        import imagecodecs

        return [bytes(imagecodecs.sz3_encode(volume.astype(np.float32), mode="abs", abs=value))]

    def decode(self, payload, shape, threads):
        import imagecodecs

        return _to_int16(imagecodecs.sz3_decode(payload[0], shape, np.float32))


class ZFP(BenchCodec):
    """ZFP in fixed-accuracy mode (its best rate-distortion mode for error-bounded use). Its
    tolerance acts in powers of two, so some targets are only reachable in fixed-rate mode."""

    name, family = "ZFP accuracy", "3d lossy"
    knob = Knob("tolerance", 0.05, 20000.0, raises_ratio=True, guess=lambda r: 4 * r)
    mode = "FIXED_ACCURACY"

    def encode(self, volume, value, threads):
        import imagecodecs

        return [
            bytes(
                imagecodecs.zfp_encode(
                    volume.astype(np.float32),
                    value,
                    mode=getattr(imagecodecs.ZFP.MODE, self.mode),
                    numthreads=threads,
                )
            )
        ]

    def decode(self, payload, shape, threads):
        import imagecodecs

        return _to_int16(imagecodecs.zfp_decode(payload[0], numthreads=threads))


class ZFPRate(ZFP):
    """ZFP in fixed-rate mode: bits per value set directly (on the 512x512x141 chest it cannot
    go beyond about 111x, where it collapses)."""

    name = "ZFP rate"
    knob = Knob("bits per value", 1 / 64, 16.0, raises_ratio=False, guess=lambda r: 16 / r)
    mode = "FIXED_RATE"


class _SliceCodec(BenchCodec):
    family = "2d lossy (slice by slice)"

    def _encode_slice(self, image: np.ndarray, value: float) -> bytes:
        raise NotImplementedError

    def _decode_slice(self, blob: bytes) -> np.ndarray:
        raise NotImplementedError

    def encode(self, volume, value, threads):
        return _map_slices(lambda s: bytes(self._encode_slice(s, value)), list(volume), threads)

    def decode(self, payload, shape, threads):
        return np.stack(_map_slices(self._decode_slice, payload, threads)).astype(np.int16)


class JPEG2000(_SliceCodec):
    """OpenJPEG, irreversible, 16-bit signed slices; the knob is the target PSNR (dB)."""

    name = "JPEG 2000"
    knob = Knob("psnr", 1.0, 120.0, raises_ratio=False, guess=lambda r: 60.0)

    def _encode_slice(self, image, value):
        import imagecodecs

        return imagecodecs.jpeg2k_encode(np.ascontiguousarray(image), level=value, numthreads=1)

    def _decode_slice(self, blob):
        import imagecodecs

        return imagecodecs.jpeg2k_decode(blob)


class HTJ2K(_SliceCodec):
    """High-throughput JPEG 2000 (OpenJPH), irreversible; the knob is the quantization step."""

    name = "HTJ2K"
    knob = Knob("qstep", 1e-6, 0.9, raises_ratio=True, guess=lambda r: 1e-4 * r)

    def _encode_slice(self, image, value):
        import imagecodecs

        return imagecodecs.htj2k_encode(np.ascontiguousarray(image), level=value, reversible=False)

    def _decode_slice(self, blob):
        import imagecodecs

        return imagecodecs.htj2k_decode(blob)


class JPEGXL(_SliceCodec):
    """libjxl on slices shifted to unsigned with just enough bits for the volume's HU range."""

    name = "JPEG XL"
    knob = Knob("distance", 0.01, 25.0, raises_ratio=True, guess=lambda r: r / 30)

    def encode(self, volume, value, threads):
        shifted, low = to_unsigned(volume)
        bits = unsigned_bits(shifted)
        header = np.array([low, bits], dtype="<i4").tobytes()
        import imagecodecs

        def one(image: np.ndarray) -> bytes:
            return bytes(
                imagecodecs.jpegxl_encode(
                    np.ascontiguousarray(image), distance=value, bitspersample=bits, numthreads=1
                )
            )

        return [header, *_map_slices(one, list(shifted), threads)]

    def decode(self, payload, shape, threads):
        import imagecodecs

        low, _ = np.frombuffer(payload[0], dtype="<i4")
        slices = _map_slices(lambda b: imagecodecs.jpegxl_decode(b, numthreads=1), payload[1:], threads)
        return _to_int16(np.stack(slices).astype(np.int32) + int(low))


class ZstdReference(BenchCodec):
    name, family = "zstd-19 (lossless)", "lossless reference"
    threaded = False

    def encode(self, volume, value, threads):
        import imagecodecs

        return [bytes(imagecodecs.zstd_encode(np.ascontiguousarray(volume).tobytes(), level=19))]

    def decode(self, payload, shape, threads):
        import imagecodecs

        return np.frombuffer(imagecodecs.zstd_decode(payload[0]), dtype=np.int16).reshape(shape)


class BloscReference(BenchCodec):
    name, family = "Blosc-zstd5 shuffle (lossless)", "lossless reference"

    def encode(self, volume, value, threads):
        from numcodecs import Blosc, blosc

        blosc.set_nthreads(threads)
        return [bytes(Blosc("zstd", 5, Blosc.SHUFFLE).encode(np.ascontiguousarray(volume)))]

    def decode(self, payload, shape, threads):
        from numcodecs import Blosc, blosc

        blosc.set_nthreads(threads)
        return np.frombuffer(Blosc().decode(payload[0]), dtype=np.int16).reshape(shape)


class DstdCodec(BenchCodec):
    """One of our registered codecs, through the real ``.dstd`` writer and reader."""

    family = "dstd"
    knob_option = "ratio"  # the codec option the knob's value is passed as

    def __init__(self, codec_id: str, options: dict | None = None, label: str | None = None) -> None:
        from ..codecs.registry import get_codec_class

        self.codec_id, self.options = codec_id, dict(options or {})
        self.name = f"dstd {label or codec_id}"
        cls = get_codec_class(codec_id)
        self.knob = None if cls.exact else Knob("ratio", 2.0, 4096.0, raises_ratio=True, guess=lambda r: r)

    def encode(self, volume, value, threads):
        from ..io.dstd_files import save as save_dstd

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "v.dstd"
            options = dict(self.options, **({} if value is None else {self.knob_option: float(value)}))
            with _torch_threads(threads):
                save_dstd(volume, path, codec=self.codec_id, codec_options=options)
            return [path.read_bytes()]

    def decode(self, payload, shape, threads):
        from ..container.volume import open_volume

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "v.dstd"
            path.write_bytes(payload[0])
            with open_volume(path) as volume, _torch_threads(threads):
                return volume.read()


@contextlib.contextmanager
def _torch_threads(threads: int):
    """Hold torch (the learned parts) to the thread count being measured."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


BASELINES: dict[str, Callable[[], BenchCodec]] = {
    "sperr": Sperr3D,
    "sz3": SZ3,
    "zfp": ZFP,
    "zfp-rate": ZFPRate,
    "htj2k": HTJ2K,
    "jpeg2000": JPEG2000,
    "jpegxl": JPEGXL,
    "zstd": ZstdReference,
    "blosc": BloscReference,
    **VIDEO_CODECS,
}


def available_bench_codecs() -> list[str]:
    """Ids usable with ``dstd bench --codecs``: ours as ``dstd-<id>``, then the baselines."""
    from ..codecs.registry import available_codecs

    return [f"dstd-{c}" for c in available_codecs()] + [f"dstd-{v}" for v in DSTD_VARIANTS] + list(BASELINES)


#: Variants of our codecs worth measuring beside the defaults (ablations).
DSTD_VARIANTS: dict[str, tuple[str, dict]] = {
    # deepstd as it was before the AV1 base layer: SPERR + the learned refinement.
    "deepstd-sperr": ("deepstd", {"base": "sperr", "model": "default"}),
    # ... and its SPERR base alone: what the network adds there (named deepstd-wavelet before).
    "deepstd-sperr-bare": ("deepstd", {"base": "sperr", "model": None}),
    # the AV1 base with the (opt-in) refinement: what the network adds on AV1.
    "deepstd-refined": ("deepstd", {"model": "default"}),
}


def make_bench_codec(name: str) -> BenchCodec:
    if name.removeprefix("dstd-") in DSTD_VARIANTS:
        label = name.removeprefix("dstd-")
        codec_id, options = DSTD_VARIANTS[label]
        return DstdCodec(codec_id, options, label)
    if name.startswith("dstd-"):
        return DstdCodec(name.removeprefix("dstd-"))
    if name not in BASELINES:
        raise InvalidInputError(
            f"unknown benchmark codec {name!r}; choose from {', '.join(available_bench_codecs())}"
        )
    return BASELINES[name]()


def payload_size(payload: Payload) -> int:
    return sum(len(b) for b in payload)


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
