"""``DeepSTD``: the deepstd codec as a numcodecs codec, for zarr arrays of the v2 format.

Each chunk becomes a small, self-describing ``.dstd`` stream (shape, dtype, intensity scaling and
the model's id and SHA-256 are in its header), so a chunk decodes on its own, in any process that
has dstdformat installed: the ``numcodecs.codecs`` entry point lets a fresh process with only
``import zarr`` find the codec.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy

from ..errors import CodecError, InvalidInputError

#: Chunk dtypes accepted (CT is int16 or uint16; uint8 for windowed exports; float32 in HU).
CHUNK_DTYPES = ("int16", "uint16", "uint8", "float32")


class DeepSTD(Codec):
    """Lossy CT chunks: ``DeepSTD(ratio=64)``, ``DeepSTD(quality=45)`` or ``DeepSTD(max_error=10)``.

    ``slope``/``intercept`` say how stored values map to HU (e.g. uint16 stored as HU + 1024:
    ``intercept=-1024``). The model is pinned by id and SHA-256 in the config, so an array
    written with one model refuses to decode with another.
    """

    codec_id = "deepstd"

    def __init__(self, ratio: float | None = None, quality: float | None = None,
                 max_error: float | None = None, window: tuple[float, float] = (-1024.0, 3071.0),
                 model: str | None = "default", model_sha256: str | None = None,
                 slope: float = 1.0, intercept: float = 0.0) -> None:
        from ..codecs.deepstd import DeepSTDVolumeCodec

        volume_codec = DeepSTDVolumeCodec(ratio=ratio, quality=quality, max_error=max_error,
                                          window=tuple(window), model=model)
        self.ratio, self.quality, self.max_error = ratio, quality, max_error
        if volume_codec.mode == "ratio":
            self.ratio = volume_codec.value
        self.window = [float(w) for w in volume_codec.window]
        self.model = volume_codec.model
        self.slope, self.intercept = float(slope), float(intercept)
        if self.slope == 0:
            raise InvalidInputError("slope must not be 0")
        self.model_sha256 = None
        if self.model is not None:
            from ..model.zoo import find_model

            found = find_model(self.model, model_sha256)  # CodecError when missing or different
            self.model, self.model_sha256 = found.id, found.sha256

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"id": self.codec_id}
        for name in ("ratio", "quality", "max_error"):
            if getattr(self, name) is not None:
                config[name] = float(getattr(self, name))
        config.update(window=self.window, model=self.model, model_sha256=self.model_sha256,
                      slope=self.slope, intercept=self.intercept)
        return config

    def _volume_codec(self):
        from ..codecs.deepstd import DeepSTDVolumeCodec

        return DeepSTDVolumeCodec(ratio=self.ratio, quality=self.quality, max_error=self.max_error,
                                  window=tuple(self.window), model=self.model)

    def encode(self, buf: Any) -> bytes:
        from ..container.writer import encode_volume
        from ..metadata import ScanMetadata

        chunk = np.asarray(buf)
        chunk = check_chunk(chunk)
        volume = np.ascontiguousarray(chunk.reshape((1,) * (3 - chunk.ndim) + chunk.shape))
        metadata = ScanMetadata(slope=self.slope, intercept=self.intercept,
                                attributes={"chunk_shape": list(chunk.shape)})
        return encode_volume(volume, codec=self._volume_codec(), metadata=metadata)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        array = self.decode_many([buf])[0]
        if out is None:
            return array
        if isinstance(out, np.ndarray) and out.shape == array.shape:
            np.copyto(out, array, casting="no")  # any memory order
            return out
        return ndarray_copy(array, out)  # numcodecs' convention: a flat buffer of the right size

    def decode_many(self, bufs: list[Any], batch: int | None = None) -> list[np.ndarray]:
        """Decode several chunks, running the refinement network over all their blocks in
        batches of ``batch`` same-shaped crops (default: all of them at once)."""
        import dstdformat

        from ..codecs.deepstd.codec import refine_all

        plans, shapes = [], []
        for buf in bufs:
            data = ensure_contiguous_ndarray(buf).view("u1")
            with dstdformat.open(memoryview(data)) as volume:
                self._check_model(volume.header["codec"].get("model"))
                region = tuple(slice(0, s) for s in volume.shape)
                plans.append(volume.codec.plan_region(volume.decode_context, region,
                                                      volume.reader.read_sections))
                shapes.append(volume.metadata.attributes.get("chunk_shape", list(volume.shape)))
        refiners = {id(p.refiner): p.refiner for p in plans if p.refiner is not None}
        if len(refiners) == 1:
            jobs = [job for p in plans for job in p.jobs]
            refined = refine_all(next(iter(refiners.values())), jobs, batch or max(1, len(jobs)))
        else:  # chunks of different models (or none): no shared batch
            refined = [out for p in plans for out in refine_all(p.refiner, p.jobs)]
        arrays, start = [], 0
        for plan, shape in zip(plans, shapes):
            array = plan.complete(refined[start:start + len(plan.jobs)])
            start += len(plan.jobs)
            if int(np.prod(shape)) != array.size:
                raise CodecError(f"chunk header says shape {shape} for {array.size} voxels")
            arrays.append(array.reshape(shape))
        return arrays

    def _check_model(self, recorded: dict | None) -> None:
        if recorded is not None and self.model_sha256 is not None \
                and recorded.get("sha256") != self.model_sha256:
            raise CodecError(
                f"chunk was written with model {recorded.get('id')} sha256 "
                f"{str(recorded.get('sha256'))[:16]}..., this codec pins {self.model_sha256[:16]}..."
            )

    def __repr__(self) -> str:
        config = self.get_config()
        config.pop("id")
        return "DeepSTD(" + ", ".join(f"{k}={v!r}" for k, v in config.items() if v is not None) + ")"


def check_chunk(chunk: np.ndarray) -> np.ndarray:
    """A 2D or 3D chunk of a supported dtype, or a clear error."""
    if chunk.dtype.name not in CHUNK_DTYPES:
        raise InvalidInputError(
            f"DeepSTD codes {', '.join(CHUNK_DTYPES)} chunks, got {chunk.dtype.name}; "
            "cast first (CT is usually int16) or use a lossless compressor"
        )
    if chunk.ndim not in (2, 3):
        raise InvalidInputError(f"DeepSTD codes 2D or 3D chunks, got {chunk.ndim}D {chunk.shape}")
    return chunk
