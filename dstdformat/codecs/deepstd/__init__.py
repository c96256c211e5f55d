"""The learned CT codec (wavelet base layer, learned refinement, exact outliers)."""

from .codec import DeepSTDCodec

__all__ = ["DeepSTDCodec"]
