"""Writing a ``.dstd`` file: encode sections to a spool, then assemble and publish atomically."""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .._version import __version__
from ..codecs.base import ContainerCosts, VolumeCodec
from ..errors import InvalidInputError
from ..metadata import ScanMetadata
from ..metrics import error_summary
from ..storage.writing import atomic_output, check_writable
from ..tiling import MAX_TILE_VOXELS, TileGrid, default_tile_shape
from .format import (
    FOOTER_SIZE,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    INDEX_RECORD_SIZE,
    MAX_HEADER_LENGTH,
    PREAMBLE_SIZE,
    Footer,
    Preamble,
    SectionEntry,
    crc32,
    pack_index,
    relative_index_crc32,
)
from .header import build_header, encode_header, file_stats, pack_header

#: Encoded sections stay in memory up to this size, then spill to a temporary file.
SPOOL_MEMORY = 256 * 1024 * 1024
#: Packed header bytes besides the metadata's that codecs aiming at a file size plan for (an
#: estimate made before the codec state exists; measured 126-140 for deepstd files).
HEADER_ESTIMATE = 150


@dataclass(frozen=True)
class WriteResult:
    path: str
    file_size: int
    raw_nbytes: int
    header: dict[str, Any]

    @property
    def ratio(self) -> float:
        return self.raw_nbytes / self.file_size


def prepare_array(data: Any) -> np.ndarray:
    """A C-contiguous little-endian 3D array, or a clear error."""
    array = np.asarray(data)
    if array.ndim != 3:
        raise InvalidInputError(
            f"expected a 3D volume, got an array with {array.ndim} dimensions {array.shape}; "
            "add an axis of length 1 for a single slice (array[None])"
        )
    if array.size == 0:
        raise InvalidInputError(f"cannot store an empty volume (shape {array.shape})")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)


def write_volume(
    path_or_url: str | os.PathLike[str],
    data: Any,
    *,
    codec: VolumeCodec,
    metadata: ScanMetadata | None = None,
    tile_shape: Sequence[int] | None = None,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
    record_error: bool = True,
) -> WriteResult:
    """Encode ``data`` with ``codec`` and write a complete ``.dstd`` file atomically. A lossy
    file records the error a reader will get (``stats.error``) unless ``record_error=False``."""
    check_writable(path_or_url, storage_options)
    return _encode(
        data,
        codec=codec,
        metadata=metadata,
        tile_shape=tile_shape,
        progress=progress,
        open_output=lambda: atomic_output(path_or_url, storage_options),
        name=os.fspath(path_or_url),
        record_error=record_error,
    )


def encode_volume(
    data: Any,
    *,
    codec: VolumeCodec,
    metadata: ScanMetadata | None = None,
    tile_shape: Sequence[int] | None = None,
) -> bytes:
    """A complete ``.dstd`` stream in memory (e.g. one zarr chunk); read back with ``open(bytes)``."""
    buffer = io.BytesIO()
    _encode(
        data,
        codec=codec,
        metadata=metadata,
        tile_shape=tile_shape,
        progress=False,
        open_output=lambda: contextlib.nullcontext(buffer),
        name="<memory>",
        record_error=False,
    )  # a zarr chunk: the decode would double every chunk's cost
    return buffer.getvalue()


def container_costs(metadata: ScanMetadata | None) -> ContainerCosts:
    """What this writer adds to a file besides the sections, told to the codec: preamble, footer
    and a header holding this scan's metadata, packed as the writer packs it."""
    try:
        metadata_bytes = len(pack_header({"metadata": (metadata or ScanMetadata()).to_json()}))
    except InvalidInputError:  # the header refuses it later, naming the field
        metadata_bytes = 0
    return ContainerCosts(
        fixed_bytes=PREAMBLE_SIZE + FOOTER_SIZE + HEADER_ESTIMATE + metadata_bytes,
        per_section_bytes=INDEX_RECORD_SIZE,
        header_bytes_of=_packed_bytes_of,
    )


def _packed_bytes_of(value: Any) -> int:
    """What ``value`` adds to a packed header (estimated alone: in a header, DEFLATE finds more
    to refer back to)."""
    return max(0, len(pack_header({"value": value})) - _PACKED_EMPTY)


_PACKED_EMPTY = len(pack_header({"value": None}))


def _encode(
    data: Any,
    *,
    codec: VolumeCodec,
    metadata: ScanMetadata | None,
    tile_shape: Sequence[int] | None,
    progress: bool,
    open_output: Callable[[], ContextManager[BinaryIO]],
    name: str,
    record_error: bool,
) -> WriteResult:
    array = prepare_array(data)
    codec.check_array(array)
    metadata = metadata or ScanMetadata()
    if metadata.original_dtype is None:
        metadata = metadata.replace(original_dtype=array.dtype.name)
    tile = default_tile_shape(
        array.shape,
        tile_shape or codec.preferred_tile_shape,
        balanced=tile_shape is None and codec.balanced_tiles,
    )
    if tile_shape is not None and any(int(t) < 1 for t in tile_shape):
        raise InvalidInputError(f"tile_shape must be positive, got {tuple(tile_shape)}")
    if math.prod(tile) > MAX_TILE_VOXELS:
        raise InvalidInputError(f"tile_shape {tuple(tile)} has more than {MAX_TILE_VOXELS} voxels")
    grid = TileGrid(array.shape, tile)  # type: ignore[arg-type]
    original_sha256 = hashlib.sha256(memoryview(array).cast("B")).hexdigest()

    encoded = codec.encode(array, grid, progress=progress, metadata=metadata, costs=container_costs(metadata))
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
        relative: list[SectionEntry] = []
        for section in encoded.sections:
            payload = section.payload
            relative.append(
                SectionEntry(int(section.kind), int(section.tile), spool.tell(), len(payload), crc32(payload))
            )
            spool.write(payload)
        payload_nbytes = spool.tell()

        description = codec.describe()
        description["state"] = encoded.state
        header = build_header(
            shape=array.shape,
            dtype=array.dtype,
            metadata=metadata,
            codec=description,
            grid=grid,
            payload_nbytes=payload_nbytes,
            original_sha256=original_sha256,
            writer=f"dstdformat {__version__}",
        )
        # Binds this header to its sections: a file spliced from two files fails the check.
        header["stats"]["index_crc32"] = relative_index_crc32(relative)
        if not codec.exact and record_error:
            header["stats"]["error"] = _decoded_error(array, metadata, header, relative, spool)
        header_bytes = encode_header(header)
        if len(header_bytes) > MAX_HEADER_LENGTH:
            raise InvalidInputError(
                f"header is {len(header_bytes)} bytes; the limit is {MAX_HEADER_LENGTH} "
                "(attributes too large?)"
            )
        head, tail = _framing(header_bytes, relative, payload_nbytes)
        # What a reader derives (format 2 stores none of it), for the caller's WriteResult.
        header["stats"].update(file_stats(array.nbytes, len(head) + payload_nbytes + len(tail)))

        spool.seek(0)
        with open_output() as out:
            out.write(head)
            shutil.copyfileobj(spool, out, 16 * 1024 * 1024)
            out.write(tail)
            file_size = out.tell()
    return WriteResult(name, file_size, array.nbytes, header)


def _framing(header_bytes: bytes, relative: list[SectionEntry], payload_nbytes: int) -> tuple[bytes, bytes]:
    """What goes before the sections (preamble + header) and after them (index + footer), with
    the index's offsets made absolute."""
    data_start = PREAMBLE_SIZE + len(header_bytes)
    index = pack_index(
        [SectionEntry(e.kind, e.tile, data_start + e.offset, e.length, e.crc32) for e in relative]
    )
    preamble = Preamble(FORMAT_MAJOR, FORMAT_MINOR, 0, PREAMBLE_SIZE, len(header_bytes), crc32(header_bytes))
    footer = Footer(data_start + payload_nbytes, len(index), crc32(index))
    return preamble.pack() + header_bytes, index + footer.pack()


def _decoded_error(
    array: np.ndarray, metadata: ScanMetadata, header: dict, relative: list[SectionEntry], spool: BinaryIO
) -> dict:
    """What a reader will get, measured: the file decoded as a reader decodes it (refinement
    included) against the original. Costs one decode (AV1 without refinement: ~1 s for a
    512x512x300 scan)."""
    from ..storage.sources import MemorySource
    from .volume import Volume

    spool.seek(0)
    payload = spool.read()
    head, tail = _framing(encode_header(header), relative, len(payload))
    data = head + payload + tail
    with Volume(MemorySource(data, "the file being written")) as volume:
        decoded = volume.read()
    return error_summary(array, decoded, metadata.slope, metadata.intercept)
