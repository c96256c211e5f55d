"""The learned CT codec (wavelet base layer, learned refinement, exact outliers)."""

from .codec import DeepSTDVolumeCodec

__all__ = ["DeepSTDVolumeCodec"]
