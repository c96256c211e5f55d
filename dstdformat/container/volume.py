"""The lazy volume object returned by :func:`dstdformat.open`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..codecs.base import BatchDecoding, DecodeContext, VolumeCodec
from ..errors import CodecError, DstdError, InvalidInputError, StorageError
from ..metadata import ScanMetadata
from ..progress import track
from ..storage.retry import RetryPolicy
from ..storage.sources import ByteSource, IOStats, open_source
from ..tiling import Region
from .indexing import plan_index
from .reader import DstdReader


class Volume:
    """A ``.dstd`` volume opened for reading. Indexing reads and decodes only the tiles it needs.

    Opening fetches the header and index (at most two small requests) and imports no codec;
    the codec is loaded on the first voxel read.
    """

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._closed = False
        try:
            self._reader = DstdReader(source)
        except DstdError as exc:
            # A file that is not a .dstd, or a damaged one: the message names it (in a
            # collection or a training loop it may be one of thousands).
            message = str(exc)
            if source.description in message or type(exc).__init__ is not DstdError.__init__:
                raise
            raise type(exc)(f"{source.description}: {message}") from None
        self._codec: VolumeCodec | None = None
        self._unrefined: VolumeCodec | None = None
        h = self._reader.header
        self._ctx = DecodeContext(h.shape, h.dtype, h.grid, h.codec_params, h.codec_state, h.model)

    # -- description ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._reader.header.shape

    @property
    def dtype(self) -> np.dtype:
        return self._reader.header.dtype

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded array."""
        return self.size * self.dtype.itemsize

    @property
    def metadata(self) -> ScanMetadata:
        return self._reader.header.metadata

    @property
    def spacing(self) -> tuple[float, float, float]:
        assert self.metadata.spacing is not None
        return self.metadata.spacing

    @property
    def affine(self) -> np.ndarray:
        assert self.metadata.affine is not None
        return self.metadata.affine.copy()

    @property
    def header(self) -> dict[str, Any]:
        """The raw JSON header (a copy is not made: do not modify)."""
        return self._reader.header.raw

    @property
    def codec_id(self) -> str:
        return self._reader.header.codec_id

    @property
    def description(self) -> str:
        """Where the file is (its path or URL), as messages name it."""
        return self._source.description

    @property
    def file_size(self) -> int:
        return self._reader.file_size

    @property
    def ratio(self) -> float:
        """Compression ratio of the whole file: decoded bytes / file bytes."""
        return self.nbytes / self.file_size

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        return self._reader.header.grid.tile_shape

    @property
    def io_stats(self) -> IOStats:
        """Bytes fetched and requests made so far (opening included)."""
        return self._source.stats

    @property
    def reader(self) -> DstdReader:
        return self._reader

    @property
    def decode_context(self) -> DecodeContext:
        """What the codec needs to decode a region (with ``reader.read_sections`` as fetch)."""
        return self._ctx

    # -- decoding ------------------------------------------------------------------------------
    @property
    def codec(self) -> VolumeCodec:
        if self._codec is None:
            from ..codecs.registry import get_codec_class

            h = self._reader.header
            cls = get_codec_class(h.codec_id)
            if h.codec_version > cls.codec_version:
                raise CodecError(
                    f"file uses codec {h.codec_id!r} version {h.codec_version}; this dstdformat "
                    f"supports up to version {cls.codec_version}"
                )
            try:
                self._codec = cls.from_config(h.codec_params)
            except InvalidInputError as exc:
                raise CodecError(f"file's codec parameters are invalid: {exc}") from None
        return self._codec

    def _decoder(self, refine: bool) -> VolumeCodec:
        """The file's codec, or the same without its learned refinement (fast previews)."""
        if refine:
            return self.codec
        if self._unrefined is None:
            self._unrefined = self.codec.without_refinement()
        return self._unrefined

    def read_region(self, region: Region, *, refine: bool = True, scaled: bool = False) -> np.ndarray:
        """Decode a step-1 region given as three slices inside the volume; ``refine=False``
        skips the learned refinement (the base layer and exact voxels only); ``scaled=True``
        returns :meth:`scale` of the stored values."""
        self._require_open("read")
        out = self._decoder(refine).decode_region(self._ctx, region, self._reader.read_sections)
        out = self._checked(out, tuple(r.stop - r.start for r in region))
        return self.scale(out) if scaled else out

    def scale(self, stored: np.ndarray) -> np.ndarray:
        """Stored values under the file's slope and intercept (HU for a CT from a NIfTI with
        scl_slope/scl_inter or a DICOM with Rescale Slope/Intercept), what nibabel's
        ``get_fdata`` and MONAI's readers give: float32 (float64 for float64 files), also where
        the slope is 1 and the intercept 0, so that scaled reads have one dtype."""
        slope, intercept = self.metadata.slope, self.metadata.intercept
        if slope == 1.0 and intercept == 0.0:
            return stored.astype(self.scaled_dtype)
        values = stored.astype(np.float64) * slope + intercept
        return values.astype(self.scaled_dtype, copy=False)

    @property
    def scaled_dtype(self) -> np.dtype:
        """The dtype of scaled values: float64 for float64 files, float32 for all others."""
        return np.dtype(np.float64 if self.dtype == np.float64 else np.float32)

    @property
    def scaled(self) -> ScaledView:
        """``vol.scaled[k0:k1, ...]``: like indexing, in scaled values (:meth:`scale`)."""
        return ScaledView(self)

    def _require_open(self, action: str) -> None:
        if self._closed:
            raise StorageError(f"{self._source.description} is closed; open it again to {action}")

    def _checked(self, out: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
        """``out`` if it is what a region of shape ``expected`` decodes to; a codec that returns
        anything else is a CodecError, never data handed on."""
        if out.shape != expected or out.dtype != self.dtype:
            raise CodecError(
                f"codec {self.codec_id!r} returned {out.shape} {out.dtype} for a region of "
                f"{expected} {self.dtype}"
            )
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        region, view = plan_index(key, self.shape)
        return self.read_region(region)[view]

    def read(self, *, progress: bool = False, refine: bool = True, scaled: bool = False) -> np.ndarray:
        """The whole volume as a numpy array, decoded one slab of tiles at a time;
        ``refine=False`` skips the learned refinement (a fast preview of lossy files);
        ``scaled=True`` gives scaled values (:meth:`scale`)."""
        out = np.empty(self.shape, dtype=self.scaled_dtype if scaled else self.dtype)
        slabs = list(self.slabs(refine=refine))
        for region in track(slabs, enabled=progress, desc="decoding", total=len(slabs), unit="slab"):
            out[region] = self.read_region(region, refine=refine, scaled=scaled)
        return out

    def slabs(self, *, refine: bool = True) -> Iterator[Region]:
        """Slabs along axis 0, in order, about a tile row deep: the unit of streamed decoding.
        Their edges fall on the codec's own decoding blocks where it has them."""
        depth = self.tile_shape[0]
        align = self._decoder(refine).slab_alignment(self._ctx)
        if align > 0:
            depth = max(align, round(depth / align) * align)
        for z in range(0, self.shape[0], depth):
            yield (slice(z, min(z + depth, self.shape[0])), slice(0, self.shape[1]), slice(0, self.shape[2]))

    def to_dask(self, chunks: tuple[int, int, int] | None = None):
        """A lazy dask array over this volume; chunks default to the file's tiles, so each dask
        task decodes whole tiles and reads them once."""
        try:
            import dask.array as da
        except ImportError:
            raise DstdError("Volume.to_dask() needs dask: pip install 'dstdformat[dask]'") from None

        return da.from_array(
            self,
            chunks=chunks or self.tile_shape,
            lock=False,
            asarray=True,
            fancy=False,
            name=f"dstd-{self.header.get('original_sha256', id(self))}",
        )

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self.read()
        return data if dtype is None else data.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    # -- lifetime ------------------------------------------------------------------------------
    def __reduce__(self) -> tuple:
        """Pickled as its byte source (a path, a URL with its options, or the bytes), so that
        ``to_dask()`` and xarray graphs run on dask.distributed: the unpickled Volume opens the
        file again (header and index, at most two small requests) with caches of its own."""
        self._require_open("pickle")
        return (Volume, (self._source,))

    def close(self) -> None:
        self._closed = True
        self._source.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<dstdformat.Volume shape={self.shape} dtype={self.dtype.name} "
            f"codec={self.codec_id!r} spacing={tuple(round(s, 4) for s in self.spacing)} "
            f"file={self._source.description!r}>"
        )


class ScaledView:
    """A volume indexed in scaled values (:meth:`Volume.scale`): ``vol.scaled[z]``."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        region, view = plan_index(key, self.volume.shape)
        return self.volume.read_region(region, scaled=True)[view]

    def __repr__(self) -> str:
        return f"<scaled values of {self.volume!r}>"


def read_together(volumes: Sequence[Volume], batch: int | None = None) -> list[np.ndarray]:
    """Whole volumes decoded at once: where their codecs are equal and can decode in batches
    (:class:`~dstdformat.codecs.base.BatchDecoding`), a learned layer runs over all their blocks
    together, ``batch`` crops at a time (None: all); otherwise each is read on its own."""
    if not volumes:
        return []
    codec = volumes[0].codec
    if not isinstance(codec, BatchDecoding) or any(v.codec != codec for v in volumes[1:]):
        return [v.read() for v in volumes]
    for v in volumes:
        v._require_open("read")
    requests = [
        (v.decode_context, tuple(slice(0, n) for n in v.shape), v.reader.read_sections) for v in volumes
    ]
    arrays = codec.decode_regions(requests, batch)
    return [v._checked(array, v.shape) for v, array in zip(volumes, arrays)]


def open_volume(
    path_or_url: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> Volume:
    """Open a ``.dstd`` file from a local path or any fsspec URL, lazily (remote reads retry
    transient failures under ``retry``)."""
    source = open_source(path_or_url, storage_options, retry)
    try:
        return Volume(source)
    except BaseException:
        source.close()
        raise
