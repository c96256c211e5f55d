"""dstdformat: CT volumes in ``.dstd`` files, compressed and read back lazily, region by region.

``save`` and ``open`` are the whole everyday API. Importing this package does not import torch;
the learned codec loads it only when a learned section must be encoded or decoded.
"""

from __future__ import annotations

import os
from typing import Any

from ._version import __version__
from .container.volume import Volume, open_volume
from .container.writer import WriteResult
from .errors import (
    ChecksumError,
    CodecError,
    CorruptFileError,
    CorruptHeaderError,
    CorruptIndexError,
    CorruptSectionError,
    DstdError,
    FileMissingError,
    InvalidInputError,
    LabelMismatchError,
    NotADstdFileError,
    PatchTooLargeError,
    StorageError,
    TruncatedFileError,
    UnknownCodecError,
    UnsupportedDtypeError,
    UnsupportedImageError,
    UnsupportedVersionError,
)
from .io.dstd_files import save as _save
from .metadata import Scan, ScanMetadata
from .storage.retry import RetryPolicy

#: ``dstdformat.save(data, path, codec=None, *, tile_shape, codec_options, progress,
#: storage_options, **metadata)``: see :func:`dstdformat.io.dstd_files.save`.
save = _save


def open(
    path_or_url: str | os.PathLike[str],  # noqa: A001 - the natural name, like zarr.open
    storage_options: dict[str, Any] | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> Volume:
    """Open a ``.dstd`` file lazily from a local path or any fsspec URL (s3://, https://, ...).

    Remote reads retry transient failures (timeouts, dropped connections, HTTP 429/5xx) under
    ``retry`` (default: 5 attempts with exponential backoff, 60 s per request)."""
    return open_volume(path_or_url, storage_options, retry=retry)


def open_collection(pattern: str | os.PathLike[str], storage_options: dict[str, Any] | None = None):
    """The scans of an archive made by ``dstd archive`` (its folder or URL), as a mapping from scan
    name to :class:`Volume` with each scan's catalog record in ``.catalog``; or every ``.dstd``
    file matching a glob (local or any fsspec URL), by file name. Files are opened the first time
    they are looked up."""
    from .container.collection import open_collection as _open_collection

    if not any(c in os.fspath(pattern) for c in "*?["):
        from .archive.collection import is_archive, open_archive_collection

        if is_archive(pattern, storage_options):
            return open_archive_collection(pattern, storage_options)

    return _open_collection(pattern, storage_options)


def __getattr__(name: str) -> Any:
    # The CT readers import nibabel/h5py/pydicom; load them only when asked for.
    if name in ("read_scan", "write_scan"):
        from . import io

        return getattr(io, name)
    # numcodecs / zarr codecs import zarr and numcodecs; load them only when asked for.
    if name == "DeepSTD":
        from .interop.numcodecs_deepstd import DeepSTD

        return DeepSTD
    if name == "DeepSTDCodec":
        from .interop.zarr_deepstd import DeepSTDCodec

        return DeepSTDCodec
    raise AttributeError(f"module 'dstdformat' has no attribute {name!r}")


__all__ = [
    "RetryPolicy",
    "ChecksumError",
    "DeepSTD",
    "DeepSTDCodec",
    "CodecError",
    "CorruptFileError",
    "CorruptHeaderError",
    "CorruptIndexError",
    "CorruptSectionError",
    "DstdError",
    "FileMissingError",
    "InvalidInputError",
    "LabelMismatchError",
    "NotADstdFileError",
    "PatchTooLargeError",
    "Scan",
    "ScanMetadata",
    "StorageError",
    "TruncatedFileError",
    "UnknownCodecError",
    "UnsupportedDtypeError",
    "UnsupportedImageError",
    "UnsupportedVersionError",
    "Volume",
    "WriteResult",
    "__version__",
    "open",
    "open_collection",
    "read_scan",
    "save",
    "write_scan",
]


def __dir__() -> list[str]:
    """The public names only (not ``os``, ``Any`` or ``annotations``), lazy ones included."""
    return sorted(__all__)
