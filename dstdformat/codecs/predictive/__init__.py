"""The archive tiers: lossless and error-bounded predictive coding of slice planes."""

from .codec import PredictiveCodec

__all__ = ["PredictiveCodec"]
