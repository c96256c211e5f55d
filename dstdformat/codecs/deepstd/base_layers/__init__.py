"""Base layers of the deepstd codec: the classical coder under the learned refinement.

Two are known: ``av1`` (slices as frames of a closed AV1 sequence per tile; the default where it
wins, see :data:`AV1_MIN_RATIO`) and ``sperr`` (3D wavelets; every file written before AV1, the
``max_error`` mode, and the highest rates). The header's codec state names the layer
(``state["base"]``); files without that member are SPERR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ....errors import CorruptHeaderError, CorruptSectionError, InvalidInputError
from . import av1

BASE_LAYERS = ("av1", "sperr")
CHOICES = ("auto", *BASE_LAYERS)
#: ``base="auto"`` codes with AV1 from this ratio up. Below, SPERR. Measured on training scans
#: (MAE at equal ratio, AV1 at preset 3): Lung-PET-CT-Dx A0001 soft kernel 3.84 vs 4.58 at 24x,
#: 2.91 vs 3.30 at 16x; sharp kernel 20.2 vs 24.7 at 24x; a 115x157 lung crop 12.6 vs 13.1 at 24x
#: but 10.05 vs 9.92 at 16x. On the held-out scans bare AV1 beat SPERR at 32x on all four.
AV1_MIN_RATIO = 24.0
#: ... and in quality mode up to this PSNR (dB over the window; SPERR at 32x reaches ~49 dB).
AV1_MAX_QUALITY_DB = 48.0


def resolve(base: object, mode: str, value: float) -> str:
    """The base layer a codec with these settings writes."""
    if base not in CHOICES:
        raise InvalidInputError(f"base must be one of {CHOICES}, got {base!r}")
    if mode == "max_error":
        if base == "av1":
            raise InvalidInputError(
                "max_error needs the sperr base layer (its bound is the "
                "wavelet coder's); use base='sperr' or 'auto'"
            )
        return "sperr"
    if base != "auto":
        return str(base)
    if mode == "ratio":
        return "av1" if value >= AV1_MIN_RATIO else "sperr"
    return "av1" if value <= AV1_MAX_QUALITY_DB else "sperr"


def default_model(model: object, base: str) -> object:
    """The refinement model a codec on ``base`` uses for ``model``: ``"auto"`` is the shipped
    network where it earns its keep (the SPERR base: -9% MAE on the held-out chest at 256x) and none
    on AV1 (under 5% there, so opt-in: docs/benchmarks.md); ``"default"`` the shipped network."""
    if model == "auto":
        model = "default" if base == "sperr" else None
    if model == "default":
        from ....zoo.registry import DEFAULT_MODELS

        model = DEFAULT_MODELS[base]
    return model


@dataclass(frozen=True)
class BaseLayer:
    """The base layer of one file, as its header describes it."""

    name: str
    samples: av1.SampleMap | None = None

    @classmethod
    def from_state(cls, state: dict, n_tiles: int) -> BaseLayer:
        record = state.get("base")
        if record is None:
            return cls("sperr")
        try:
            name = record["codec"]
            if name == "sperr":
                return cls("sperr")
            if name != "av1":
                raise ValueError(f"unknown base layer {name!r} (known: {', '.join(BASE_LAYERS)})")
            crf = record["crf"]
            if not (isinstance(crf, list) and len(crf) == n_tiles and all(map(av1.is_crf, crf))):
                raise ValueError(f"crf must be {n_tiles} quarter steps in {av1.MIN_CRF}..{av1.MAX_CRF}")
            return cls("av1", av1.SampleMap.from_json(record["samples"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptHeaderError(f"deepstd base layer record is malformed: {exc}") from None

    def decode(
        self,
        payload: bytes,
        shape: tuple[int, int, int],
        *,
        what: str,
        trusted: bool = False,
        dtype=np.float32,
    ) -> np.ndarray:
        """The tile's base layer in stored units. SPERR streams from files decode in helper
        processes; AV1 streams in this process (helpers with ``DSTD_ISOLATE_AV1=1``)."""
        if self.name == "sperr":
            from . import sperr

            return sperr.decode(payload, shape, what=what, trusted=trusted, dtype=dtype)
        from . import isolated

        assert self.samples is not None
        try:
            coded = av1.check(payload, shape)
            if not trusted and isolated.av1_isolation_enabled():
                av1._av()  # a missing PyAV names the package here, not as a corrupt section
                samples = isolated.decode_isolated(
                    payload, coded, what, dtype=np.uint16, decoder=isolated.AV1
                )
            else:
                samples = av1.decode_coded(payload)
        except CorruptSectionError as exc:
            message = str(exc)
            raise CorruptSectionError(message if message.startswith(what) else f"{what}: {message}") from None
        return self.samples.to_values(samples[:, : shape[1], : shape[2]], np.dtype(dtype).type)
