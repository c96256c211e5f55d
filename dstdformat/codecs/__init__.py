"""Codecs that turn 3D arrays into container sections and back, looked up by id."""

from .base import DecodeContext, Encoded, Section, VolumeCodec
from .registry import available_codecs, get_codec, get_codec_class, register_codec

__all__ = [
    "DecodeContext",
    "Encoded",
    "Section",
    "VolumeCodec",
    "available_codecs",
    "get_codec",
    "get_codec_class",
    "register_codec",
]
