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

from ..errors import CodecError, InvalidInputError, UnsupportedDtypeError

#: Chunk dtypes accepted (CT is int16 or uint16; uint8 for windowed exports; float32 in HU).
CHUNK_DTYPES = ("int16", "uint16", "uint8", "float32")


class DeepSTD(Codec):
    """Lossy CT chunks: ``DeepSTD(ratio=64)``, ``DeepSTD(quality=45)`` or ``DeepSTD(max_error=10)``.

    ``ratio``, ``quality``, ``max_error``, ``window``, ``model`` and ``base`` are the codec's
    (:class:`~dstdformat.codecs.deepstd.params.DeepSTDParams`). ``slope``/``intercept`` say how
    stored values map to HU (e.g. uint16 stored as HU + 1024: ``intercept=-1024``). The model is
    pinned by id and SHA-256 in the config (``model_sha256``), so an array written with one model
    refuses to decode with another.
    """

    codec_id = "deepstd"

    def __init__(
        self, *, model_sha256: str | None = None, slope: float = 1.0, intercept: float = 0.0, **params: Any
    ) -> None:
        from ..codecs.deepstd.params import DeepSTDParams

        self.params = DeepSTDParams(**params)
        self.base = self.params.base  # as given: "auto" lets each chunk's ratio choose
        self.ratio, self.quality, self.max_error = (
            self.params.ratio,
            self.params.quality,
            self.params.max_error,
        )
        if self.params.mode == "ratio":
            self.ratio = self.params.value
        self.window = list(self.params.window)
        self.model = self.params.resolved_model
        self.slope, self.intercept = float(slope), float(intercept)
        if self.slope == 0:
            raise InvalidInputError("slope must not be 0")
        self.model_sha256 = None
        if self.model is not None:
            from ..zoo.registry import find_model

            # CodecError when missing or different; a path stays a path (it is what finds it)
            self.model_sha256 = find_model(self.model, model_sha256).sha256

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"id": self.codec_id}
        for name in ("ratio", "quality", "max_error"):
            if getattr(self, name) is not None:
                config[name] = float(getattr(self, name))
        config.update(
            window=self.window,
            model=self.model,
            model_sha256=self.model_sha256,
            slope=self.slope,
            intercept=self.intercept,
        )
        if self.base != "auto":  # configs written before the AV1 base layer stay as they were
            config["base"] = self.base
        return config

    def _volume_codec(self):
        from ..codecs.deepstd import DeepSTDVolumeCodec

        return DeepSTDVolumeCodec(
            ratio=self.ratio,
            quality=self.quality,
            max_error=self.max_error,
            window=tuple(self.window),
            model=self.model,
            clamp_ratio=True,
            base=self.base,
        )

    def encode(self, buf: Any) -> bytes:
        from ..container.writer import encode_volume
        from ..metadata import ScanMetadata

        chunk = np.asarray(buf)
        chunk = check_chunk(chunk)
        volume = chunk.reshape((1,) * (3 - chunk.ndim) + chunk.shape)
        attributes: dict[str, Any] = {"chunk_shape": list(chunk.shape)}
        core, fill = trailing_fill(volume)
        if core != volume.shape:
            # zarr pads edge chunks to the full chunk shape with the fill value: store that padding
            # as one number, so the rate goes to the voxels that exist.
            attributes.update(core_shape=list(core), fill=fill)
            volume = volume[: core[0], : core[1], : core[2]]
        metadata = ScanMetadata(slope=self.slope, intercept=self.intercept, attributes=attributes)
        return encode_volume(np.ascontiguousarray(volume), codec=self._volume_codec(), metadata=metadata)

    def decode(self, buf: Any, out: Any = None) -> np.ndarray:
        array = self.decode_many([buf])[0]
        if out is None:
            return array
        if isinstance(out, np.ndarray) and out.dtype == object:
            raise UnsupportedDtypeError("DeepSTD cannot decode into an object array")
        if isinstance(out, np.ndarray) and out.shape == array.shape:
            np.copyto(out, array, casting="no")  # any memory order
            return out
        return ndarray_copy(array, out)  # numcodecs' convention: a flat buffer of the right size

    def decode_many(self, bufs: list[Any], batch: int | None = None) -> list[np.ndarray]:
        """Decode several chunks, running the refinement network over all their blocks in
        batches of ``batch`` same-shaped crops (default: all of them at once)."""
        from contextlib import ExitStack

        from ..container.volume import open_volume, read_together

        with ExitStack() as stack:
            volumes = []
            for buf in bufs:
                data = ensure_contiguous_ndarray(buf).view("u1")
                volume = stack.enter_context(open_volume(memoryview(data)))
                self._check_model(volume.header["codec"].get("model"))
                volumes.append(volume)
            shapes = [_chunk_layout(v.metadata.attributes, v.shape) for v in volumes]
            decoded = read_together(volumes, batch)
        arrays = []
        for array, (shape, padded, fill) in zip(decoded, shapes):
            if padded is not None:
                full = np.full(padded, fill, dtype=array.dtype)
                full[: array.shape[0], : array.shape[1], : array.shape[2]] = array
                array = full
            if int(np.prod(shape)) != array.size:
                raise CodecError(f"chunk header says shape {shape} for {array.size} voxels")
            arrays.append(array.reshape(shape))
        return arrays

    def _check_model(self, recorded: dict | None) -> None:
        if (
            recorded is not None
            and self.model_sha256 is not None
            and recorded.get("sha256") != self.model_sha256
        ):
            raise CodecError(
                f"chunk was written with model {recorded.get('id')} sha256 "
                f"{str(recorded.get('sha256'))[:16]}..., this codec pins {self.model_sha256[:16]}..."
            )

    def __repr__(self) -> str:
        config = self.get_config()
        config.pop("id")
        # Every parameter, None included: model=None (no network) is not the default "auto".
        return "DeepSTD(" + ", ".join(f"{k}={v!r}" for k, v in config.items()) + ")"


def trailing_fill(volume: np.ndarray) -> tuple[tuple[int, int, int], Any]:
    """The shape left after cutting, at the end of each axis, planes that hold only the volume's
    last value (zarr's padding of edge chunks), and that value."""
    fill = volume[-1, -1, -1]
    equal = volume == fill
    core = list(volume.shape)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        view = equal[: core[0], : core[1], : core[2]]
        full_planes = view.all(axis=others)
        keep = len(full_planes) - int(np.argmin(full_planes[::-1])) if not full_planes.all() else 1
        core[axis] = max(1, keep)
    return tuple(core), fill.item()  # type: ignore[return-value]


def _chunk_layout(attributes: dict, stored: tuple[int, ...]):
    """(chunk shape, padded 3D shape or None, fill value) from a chunk stream's attributes."""
    shape = attributes.get("chunk_shape", list(stored))
    if "core_shape" not in attributes:
        return shape, None, None
    core = attributes["core_shape"]
    padded = (1,) * (3 - len(shape)) + tuple(shape)
    if list(stored) != list(core) or any(c > p for c, p in zip(core, padded)):
        raise CodecError(f"chunk header: core {core} does not fit stored {stored} / chunk {shape}")
    return shape, padded, attributes["fill"]


def check_chunk(chunk: np.ndarray) -> np.ndarray:
    """A 2D or 3D chunk of a supported dtype, or a clear error."""
    if chunk.dtype.name not in CHUNK_DTYPES:
        raise UnsupportedDtypeError(
            f"DeepSTD codes {', '.join(CHUNK_DTYPES)} chunks, got {chunk.dtype.name}; "
            "cast first (CT is usually int16) or use a lossless compressor"
        )
    if chunk.ndim not in (2, 3):
        raise InvalidInputError(f"DeepSTD codes 2D or 3D chunks, got {chunk.ndim}D {chunk.shape}")
    return chunk
