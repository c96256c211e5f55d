"""Every error dstdformat raises about files, input and codecs derives from :class:`DstdError`.

Users catch one class; tests and tools can be more precise with the subclasses. Errors about bad
input also derive from ``ValueError`` so code written against plain numpy expectations still works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DstdError(Exception):
    """Base class of all dstdformat errors."""


class NotADstdFileError(DstdError):
    """The bytes do not start with the ``.dstd`` magic number."""


class UnsupportedVersionError(DstdError):
    """The file's format major version is newer than this reader understands."""


class CorruptFileError(DstdError):
    """The file is damaged: a checksum, bound or structural check failed."""


class TruncatedFileError(CorruptFileError):
    """The file ends before the structures it declares."""


class ChecksumError(CorruptFileError):
    """Stored and computed checksums differ for one named part of the file."""


class CorruptHeaderError(CorruptFileError):
    """The preamble or JSON header is malformed or inconsistent."""


class CorruptIndexError(CorruptFileError):
    """The section index (offsets, lengths, kinds) is malformed or inconsistent."""


class CorruptSectionError(CorruptFileError):
    """A section passed its checksum but does not decode to what the header declares."""


class CodecError(DstdError):
    """A codec cannot encode or decode the data it was given."""


class UnknownCodecError(CodecError):
    """No codec with the requested id is registered."""


class InvalidInputError(DstdError, ValueError):
    """An array, metadata value or argument is not acceptable."""


class UnsupportedDtypeError(InvalidInputError, TypeError):
    """An array's dtype is not one the codec codes; also a ``TypeError``, numcodecs' convention
    for codecs given an object array."""


class UnsupportedImageError(InvalidInputError):
    """An input image file cannot be imported (not an image, wrong dimensionality, ...)."""


class PatchTooLargeError(InvalidInputError):
    """A patch asked for does not fit in the scan it is taken from."""


class LabelMismatchError(InvalidInputError):
    """A label volume does not match its scan (another shape, or missing)."""


class StorageError(DstdError):
    """Reading or writing bytes through a storage backend failed."""


class FileMissingError(StorageError, FileNotFoundError):
    """No file (or folder) at the given path or URL; also a ``FileNotFoundError``, so code that
    catches the built-in one keeps working."""


__all__ = [
    "ChecksumError",
    "CodecError",
    "CorruptFileError",
    "CorruptHeaderError",
    "CorruptIndexError",
    "CorruptSectionError",
    "DstdError",
    "FileMissingError",
    "InvalidInputError",
    "NotADstdFileError",
    "StorageError",
    "TruncatedFileError",
    "UnknownCodecError",
    "UnsupportedDtypeError",
    "UnsupportedImageError",
    "UnsupportedVersionError",
]


@contextmanager
def stream_errors(what: str) -> Iterator[None]:
    """Turn whatever the range decoder raises on an invalid stream into a CorruptSectionError.

    constriction reports invalid data with ``AssertionError``/``ValueError``, and a Rust panic
    surfaces as pyo3's ``PanicException``, which derives from ``BaseException``.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - any failure here means the stream is invalid
        raise CorruptSectionError(f"{what} is not a valid range-coded stream: {exc}") from None
    except BaseException as exc:
        if type(exc).__name__ == "PanicException":
            raise CorruptSectionError(f"{what} is not a valid range-coded stream: {exc}") from None
        raise
