"""``DeepSTDCodec``: the deepstd codec as a zarr v3 array-to-bytes codec (``serializer=``).

The zarr v3 format has no ``compressor=``; a lossy codec that turns an array chunk into bytes is
an array-to-bytes codec. This one wraps :class:`~dstdformat.interop.numcodecs_deepstd.DeepSTD`
(same parameters, same chunk streams) and registers under the name ``deepstd`` through the
``zarr.codecs`` entry point, so ``zarr.open`` in a fresh process finds it. It works inside zarr's
sharding codec like any other serializer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec, ArrayBytesCodecPartialDecodeMixin
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration

from ..codecs.deepstd.params import DeepSTDParams
from ..errors import CodecError
from .numcodecs_deepstd import CHUNK_DTYPES, DeepSTD

if TYPE_CHECKING:
    from typing import Self

    from zarr.abc.store import ByteGetter
    from zarr.core.array_spec import ArraySpec
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType
    from zarr.core.indexing import SelectorTuple

CODEC_NAME = "deepstd"
#: The codec's parameters (declared once, in DeepSTDParams) and the chunk codecs' own.
CHUNK_PARAMETERS = (*(f.name for f in fields(DeepSTDParams)), "model_sha256", "slope", "intercept")


@dataclass(frozen=True, init=False)
class DeepSTDCodec(ArrayBytesCodecPartialDecodeMixin, ArrayBytesCodec):
    """``zarr.create_array(..., serializer=DeepSTDCodec(ratio=64), compressors=None)``; takes the
    numcodecs :class:`DeepSTD`'s parameters (the codec's own, plus ``model_sha256``, ``slope``,
    ``intercept``)."""

    is_fixed_size = False

    #: The resolved configuration (default ratio, model id and hash pinned), as sorted pairs.
    configuration: tuple[tuple[str, Any], ...]
    _inner: DeepSTD = field(repr=False, compare=False)

    def __init__(self, **options: Any) -> None:
        inner = DeepSTD(**options)
        config = inner.get_config()
        config.pop("id")
        pairs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))
        object.__setattr__(self, "configuration", pairs)
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name: str) -> Any:
        """The configuration's values as attributes (``codec.ratio``), None where unset."""
        if name.startswith("_") or name == "configuration":
            raise AttributeError(name)
        if name in CHUNK_PARAMETERS:
            value = getattr(self._inner, name)
            return tuple(value) if name == "window" else value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        config = self._inner.get_config()
        config.pop("id")
        return {"name": CODEC_NAME, "configuration": config}

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid
    ) -> None:
        native = dtype.to_native_dtype()
        if native.name not in CHUNK_DTYPES:
            raise CodecError(f"DeepSTDCodec stores {', '.join(CHUNK_DTYPES)} arrays, not {native.name}")
        if len(shape) not in (2, 3):
            raise CodecError(f"DeepSTDCodec stores 2D or 3D arrays, not {len(shape)}D")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_batch([(chunk_bytes, chunk_spec)])[0]  # type: ignore[return-value]

    def _decode_batch(self, items: list[tuple[Buffer | None, ArraySpec]]) -> list[NDBuffer | None]:
        """All chunks zarr hands over at once go through the refinement network as one batch
        (zarr's ``codec_pipeline.batch_size`` sets how many)."""
        present = [(n, b, spec) for n, (b, spec) in enumerate(items) if b is not None]
        if not present:
            return [None] * len(items)
        arrays = self._inner.decode_many([b.as_numpy_array() for _, b, _ in present])
        out: list[NDBuffer | None] = [None] * len(items)
        for (n, _, spec), array in zip(present, arrays):
            out[n] = self._check_decoded(array, spec)
        return out

    async def decode(
        self,
        chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]],
    ) -> Iterable[NDBuffer | None]:
        return await asyncio.to_thread(self._decode_batch, list(chunks_and_specs))

    def _check_decoded(self, array: np.ndarray, chunk_spec: ArraySpec) -> NDBuffer:
        if array.shape != chunk_spec.shape:
            raise CodecError(f"chunk decoded to shape {array.shape}, the array expects {chunk_spec.shape}")
        expected = chunk_spec.dtype.to_native_dtype()
        if array.dtype != expected:
            raise CodecError(f"chunk decoded to {array.dtype}, the array holds {expected}")
        return chunk_spec.prototype.nd_buffer.from_numpy_array(array)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        array = np.asarray(chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(self._inner.encode(array))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def decode_partial(
        self,
        batch_info: Iterable[tuple[ByteGetter, SelectorTuple, ArraySpec]],
    ) -> Iterable[NDBuffer | None]:
        """zarr reads through here whenever the codec can decode parts: whole chunks of the batch
        go through the network together, partial ones decode only what they need."""
        items = list(batch_info)
        fetched = await asyncio.gather(*[getter.get(prototype=spec.prototype) for getter, _, spec in items])
        return await asyncio.to_thread(self._decode_partial_batch, items, fetched)

    def _decode_partial_batch(self, items, fetched) -> list[NDBuffer | None]:
        results: list[NDBuffer | None] = [None] * len(items)
        whole = [
            n
            for n, ((_, selection, spec), data) in enumerate(zip(items, fetched))
            if data is not None and _is_whole(selection, spec.shape)
        ]
        for n, decoded in zip(whole, self._decode_batch([(fetched[n], items[n][2]) for n in whole])):
            results[n] = decoded
        for n, ((_, selection, spec), data) in enumerate(zip(items, fetched)):
            if data is not None and n not in whole:
                results[n] = self._decode_selection(data, selection, spec)
        return results

    async def _decode_partial_single(
        self, byte_getter: ByteGetter, selection: SelectorTuple, chunk_spec: ArraySpec
    ) -> NDBuffer | None:
        """Decode only the tiles and refinement blocks under ``selection`` (a chunk holding several
        tiles need not be decoded whole to read one slice of it)."""
        chunk_bytes = await byte_getter.get(prototype=chunk_spec.prototype)
        if chunk_bytes is None:
            return None
        return await asyncio.to_thread(self._decode_selection, chunk_bytes, selection, chunk_spec)

    def _decode_selection(
        self, chunk_bytes: Buffer, selection: SelectorTuple, chunk_spec: ArraySpec
    ) -> NDBuffer:
        from ..container.volume import open_volume

        selection = selection if isinstance(selection, tuple) else (selection,)
        with open_volume(memoryview(chunk_bytes.as_numpy_array())) as volume:
            self._inner._check_model(volume.header["codec"].get("model"))
            shape = tuple(volume.metadata.attributes.get("chunk_shape", volume.shape))
            if shape != tuple(chunk_spec.shape):
                raise CodecError(f"chunk holds shape {shape}, the array expects {chunk_spec.shape}")
            box = _bounding_box(selection, shape)
            if box is None or "core_shape" in volume.metadata.attributes:
                # fancy selections, and edge chunks stored without zarr's padding: decode the
                # chunk, let numpy select
                whole = self._inner.decode_many([chunk_bytes.as_numpy_array()])[0]
                return chunk_spec.prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(whole[selection]))
            lead = (slice(0, 1),) * (3 - len(shape))
            block = volume.read_region(lead + tuple(slice(lo, hi) for lo, hi in box))
        block = block.reshape(tuple(hi - lo for lo, hi in box))
        local = tuple(s if isinstance(s, slice) else s - lo for s, (lo, _) in zip(selection, box))
        local = tuple(
            slice(s.start - lo, s.stop - lo, s.step) if isinstance(s, slice) else s
            for s, (lo, _) in zip(local, box)
        )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(block[local]))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("deepstd chunks have a variable size")


def _is_whole(selection, shape: tuple[int, ...]) -> bool:
    selection = selection if isinstance(selection, tuple) else (selection,)
    return len(selection) == len(shape) and all(
        isinstance(s, slice) and s.indices(n) == (0, n, 1) for s, n in zip(selection, shape)
    )


def _bounding_box(selection: tuple, shape: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """[(start, stop)] per axis covering a selection of integers and slices, or None."""
    if len(selection) != len(shape):
        return None
    box = []
    for s, n in zip(selection, shape):
        if isinstance(s, (int, np.integer)):
            index = int(s) + n if s < 0 else int(s)
            box.append((index, index + 1))
        elif isinstance(s, slice):
            start, stop, step = s.indices(n)
            if step < 1 or stop <= start:
                return None
            last = start + (len(range(start, stop, step)) - 1) * step
            box.append((start, last + 1))
        else:
            return None
    return box


def register() -> None:
    """Register with zarr (the entry point does this for fresh processes)."""
    from zarr.registry import register_codec

    register_codec(CODEC_NAME, DeepSTDCodec)
