"""The learned CT codec (SPERR or AV1 base layer, learned refinement, exact outliers)."""

from .codec import DeepSTDVolumeCodec

__all__ = ["DeepSTDVolumeCodec"]
