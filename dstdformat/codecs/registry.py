"""Codec lookup by id. Built-in codecs are imported only when first used, so reading a header never
imports a codec's heavy dependencies (torch for the learned codec). Third-party codecs register
through the ``dstdformat.codecs`` entry-point group or :func:`register_codec`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import numpy as np

from ..errors import UnknownCodecError
from .base import VolumeCodec

_BUILTIN: dict[str, str] = {
    "lossless": "dstdformat.codecs.lossless:LosslessCodec",
    "deepstd": "dstdformat.codecs.deepstd:DeepSTDVolumeCodec",
    "predictive": "dstdformat.codecs.predictive:PredictiveCodec",
}
_loaded: dict[str, type[VolumeCodec]] = {}


def register_codec(cls: type[VolumeCodec]) -> type[VolumeCodec]:
    """Register a codec class under its ``codec_id`` (usable as a class decorator)."""
    _loaded[cls.codec_id] = cls
    return cls


def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="dstdformat.codecs")}


def available_codecs() -> list[str]:
    """Ids of every codec that can be used here."""
    return sorted(set(_BUILTIN) | set(_loaded) | set(_entry_point_targets()))


def get_codec_class(codec_id: str) -> type[VolumeCodec]:
    """The codec class registered as ``codec_id``; :class:`UnknownCodecError` if none is."""
    if codec_id in _loaded:
        return _loaded[codec_id]
    target = _BUILTIN.get(codec_id) or _entry_point_targets().get(codec_id)
    if target is None:
        raise UnknownCodecError(
            f"unknown codec {codec_id!r}; available codecs: {', '.join(available_codecs())}"
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, VolumeCodec)):
        raise UnknownCodecError(f"codec {codec_id!r} ({target}) is not a VolumeCodec")
    _loaded[codec_id] = cls
    return cls


def get_codec(codec_id: str, **params) -> VolumeCodec:
    """Instantiate the codec ``codec_id`` with ``params``."""
    return get_codec_class(codec_id).from_config(params)


#: The codec a write gets when it names none, by what it can hold: the best lossless ratio that
#: decodes at >= 50 MB/s on 2 cores (docs/benchmarks.md, "Archive tiers": ``predictive`` 1.93-3.16x
#: at 51-77 MB/s on the held-out CT, Blosc-zstd 26-47 % larger), and Blosc-zstd (``lossless``)
#: for the dtypes it cannot hold (float, 32-bit).
DEFAULT_CODECS = ("predictive", "lossless")


def default_codec(dtype: object) -> VolumeCodec:
    """The lossless codec for a volume of ``dtype`` when the caller names none."""
    name = np.dtype(dtype).name  # type: ignore[call-overload]
    for codec_id in DEFAULT_CODECS:
        cls = get_codec_class(codec_id)
        if name in cls.supported_dtypes:
            return cls()
    return get_codec(DEFAULT_CODECS[-1])  # refuses the dtype by name
