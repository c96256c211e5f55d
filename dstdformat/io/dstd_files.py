"""Writing scans into ``.dstd`` files: :func:`save` is ``dstdformat.save``, here so that the CLI,
the archive and the training steps use it without importing the user-facing facade."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..codecs.base import VolumeCodec
from ..container.volume import Volume
from ..container.writer import WriteResult, write_volume
from ..errors import InvalidInputError
from ..metadata import Scan, ScanMetadata
from ..tiling import layout_tile_shape


def save(
    data: Any,
    path: str | os.PathLike[str],
    codec: str | VolumeCodec | None = None,
    *,
    tile_shape: tuple[int, int, int] | None = None,
    layout: str | None = None,
    codec_options: dict[str, Any] | None = None,
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
    **metadata: Any,
) -> WriteResult:
    """Compress a 3D volume into a ``.dstd`` file (local path or fsspec URL), atomically.

    ``data`` is an array indexed ``[k, j, i]`` (axis 0 = slices), a :class:`Scan` or an open
    :class:`Volume`. Keyword arguments set metadata: ``spacing``, ``affine``, ``slope``,
    ``intercept``, ``modality``, ``original_dtype``, ``attributes``, ``provenance``; they
    override what a Scan or Volume carries. Without a ``codec`` the volume is stored losslessly
    with the best of them for its dtype (:func:`~dstdformat.codecs.registry.default_codec`:
    ``predictive`` for integer scans of up to 16 bits, ``lossless`` (Blosc-zstd) otherwise).
    ``layout="training"`` (also accepted in ``codec_options``) writes tiles for random patch
    reads (:data:`~dstdformat.tiling.LAYOUTS`); ``tile_shape`` sets them exactly.
    """
    if isinstance(data, Scan):
        array, base = data.array, data.metadata
    elif isinstance(data, Volume):
        array, base = data.read(), data.metadata
    else:
        array, base = data, ScanMetadata()
    dtype = array.dtype if hasattr(array, "dtype") else np.asarray(array).dtype
    codec_options = dict(codec_options or {})
    if "layout" in codec_options:  # a container choice, spelt among the codec's for CLIs and archives
        if layout is not None:
            raise InvalidInputError("give layout once: as an argument or in codec_options")
        layout = codec_options.pop("layout")
    if layout is not None:
        if tile_shape is not None:
            raise InvalidInputError("give tile_shape or layout, not both")
        tile_shape = layout_tile_shape(layout, np.shape(array))
    _refuse_codec_options_as_metadata(codec, dtype, metadata)
    meta = base.replace(**metadata) if metadata else base
    if codec is None:
        from ..codecs.registry import default_codec

        if codec_options:
            raise InvalidInputError(
                "codec_options only apply when codec is given by id: name the codec they are for "
                "(e.g. codec='lossless' or 'predictive')"
            )
        codec = default_codec(dtype)
    elif isinstance(codec, str):
        from ..codecs.registry import get_codec

        codec = get_codec(codec, **(codec_options or {}))
    elif not isinstance(codec, VolumeCodec):
        raise InvalidInputError(f"codec must be a codec id or a VolumeCodec, got {codec!r}")
    elif codec_options:
        raise InvalidInputError("codec_options only apply when codec is given by id")
    return write_volume(
        path,
        array,
        codec=codec,
        metadata=meta,
        tile_shape=tile_shape,
        progress=progress,
        storage_options=storage_options,
    )


def _refuse_codec_options_as_metadata(codec: Any, dtype: np.dtype, metadata: dict[str, Any]) -> None:
    """``save(scan, path, codec="predictive", max_error=4)`` reads naturally but would set a
    metadata field: name where the option goes instead of "unknown metadata field"."""
    from ..metadata import FIELDS

    stray = sorted(set(metadata) - set(FIELDS))
    if not stray or not isinstance(codec, (str, type(None))):
        return
    from ..codecs.registry import default_codec, get_codec_class

    try:
        codec_id = codec or default_codec(dtype).codec_id
        options = get_codec_class(codec_id).user_options
    except InvalidInputError:  # an unknown codec id: the codec lookup says so, naming the ids
        return
    named = [name for name in stray if name in options]
    if named:
        given = ", ".join(f"{name!r}: {metadata[name]!r}" for name in named)
        raise InvalidInputError(
            f"{', '.join(named)} {'is an option' if len(named) == 1 else 'are options'} of codec "
            f"{codec_id!r}, not metadata: pass codec={codec_id!r}, codec_options={{{given}}}"
        )
