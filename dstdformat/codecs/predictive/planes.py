"""The plane-coder contract of the predictive codec, and its registry.

A plane coder turns one 2D plane of unsigned integers (a slice, or a slice minus its prediction
from neighbouring slices) into bytes and back, exactly or within a bound ``near`` on every sample.
The predictive codec does the third dimension and the container work; a plane coder only the
entropy coding of a plane. Adding one is one module: subclass :class:`PlaneCoder`, add its
``coder_id`` and ``module:Class`` to :data:`PLANE_CODERS`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from ...errors import CorruptSectionError, InvalidInputError

#: coder id -> "module:Class", imported on first use.
PLANE_CODERS: dict[str, str] = {
    "jpegls": "dstdformat.codecs.predictive.jpegls:JpegLsPlanes",
    "jpegxl": "dstdformat.codecs.predictive.jpegxl:JpegXlPlanes",
}
_loaded: dict[str, PlaneCoder] = {}


class PlaneCoder(ABC):
    """Codes 2D ``uint8`` / ``uint16`` planes, exactly (``near=0``) or with
    ``|decoded - plane| <= near`` on every sample."""

    coder_id: ClassVar[str]
    #: The largest ``near`` the coder takes.
    max_near: ClassVar[int]

    @abstractmethod
    def encode(self, plane: np.ndarray, near: int) -> bytes:
        """The bytes of a C-contiguous 2D ``uint8`` or ``uint16`` plane."""

    def decode(self, payload: bytes, shape: tuple[int, int], what: str) -> np.ndarray:
        """The plane ``encode`` was given (within its ``near``), as ``uint8`` or ``uint16``;
        :class:`~dstdformat.errors.CorruptSectionError` naming ``what`` for damaged bytes or a
        plane of another shape, checked before anything of the declared size is allocated."""
        rows, columns = self.frame_size(payload, what)
        if (rows, columns) != tuple(shape):
            raise CorruptSectionError(
                f"{what} holds a {rows}x{columns} plane; expected {shape[0]}x{shape[1]}"
            )
        try:
            plane = self.decode_stream(payload)
        except Exception as exc:  # each library raises its own error class
            raise CorruptSectionError(f"{what} does not decode: {exc}") from None
        if plane.shape != tuple(shape) or plane.dtype not in (np.uint8, np.uint16):
            raise CorruptSectionError(f"{what} decodes to {plane.shape} {plane.dtype}; expected {shape}")
        return plane

    @abstractmethod
    def frame_size(self, payload: bytes, what: str) -> tuple[int, int]:
        """(rows, columns) the stream declares, read from its header without decoding; a
        :class:`~dstdformat.errors.CorruptSectionError` for a stream of another kind or layout."""

    @abstractmethod
    def decode_stream(self, payload: bytes) -> np.ndarray:
        """The library's decoding of a stream whose frame size was checked."""

    @abstractmethod
    def library_versions(self) -> dict[str, str]:
        """Names and versions of the libraries that write the bytes (recorded in the header)."""

    def settings(self) -> dict[str, int]:
        """Encoder settings that shape the bytes (recorded in the header; decoding needs none)."""
        return {}

    def strip(self, stream: bytes, shape: tuple[int, int], bits: int, near: int) -> bytes | None:
        """``stream`` less the headers :meth:`dress` rebuilds from what the tile records (the
        plane's shape, its sample bits, 8 or 16, and ``near``), or None when they would not come
        back byte for byte: the stream is then stored whole."""
        return None

    def dress(self, bare: bytes, shape: tuple[int, int], bits: int, near: int, what: str) -> bytes:
        """The whole stream :meth:`strip` took ``bare`` from."""
        raise CorruptSectionError(f"{what}: plane coder {self.coder_id!r} stores whole streams only")


def plane_coder(coder_id: str) -> PlaneCoder:
    """The plane coder registered as ``coder_id``."""
    if coder_id not in _loaded:
        target = PLANE_CODERS.get(coder_id)
        if target is None:
            raise InvalidInputError(
                f"unknown plane coder {coder_id!r}; available: {', '.join(sorted(PLANE_CODERS))}"
            )
        module_name, _, attr = target.partition(":")
        _loaded[coder_id] = getattr(importlib.import_module(module_name), attr)()
    return _loaded[coder_id]
