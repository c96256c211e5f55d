"""Base layers of the deepstd codec: the classical coder under the learned refinement.

Each is a :class:`~.contract.BaseLayerCoder` registered here by its id: ``av1`` (slices as frames
of a closed AV1 sequence per tile; the default where it wins, see :data:`AV1_MIN_RATIO`) and
``sperr`` (3D wavelets; every file written before AV1, the ``max_error`` mode, and the highest
rates). The header's codec state records the layer (``state["base"]``); files without that member
are SPERR.
"""

from __future__ import annotations

from ....errors import CorruptHeaderError, InvalidInputError
from .av1_layer import AV1Layer
from .contract import BaseLayerCoder, BudgetOutOfReach
from .sperr_layer import SperrLayer

BASE_LAYERS: dict[str, type[BaseLayerCoder]] = {layer.layer_id: layer for layer in (AV1Layer, SperrLayer)}
#: The layer of files whose header records none (every deepstd file from before the choice).
UNRECORDED = "sperr"
#: The layer ``base="auto"`` falls back to when AV1 cannot reach a ratio (a tiny volume: AV1
#: streams have a floor of ~30 bytes a frame; SPERR's rate goes down to nothing).
FALLBACK = "sperr"
#: ``base="auto"`` codes with AV1 from this ratio up. Below, SPERR. Measured on training scans
#: (MAE at equal ratio, AV1 at preset 3): Lung-PET-CT-Dx A0001 soft kernel 3.84 vs 4.58 at 24x,
#: 2.91 vs 3.30 at 16x; sharp kernel 20.2 vs 24.7 at 24x; a 115x157 lung crop 12.6 vs 13.1 at 24x
#: but 10.05 vs 9.92 at 16x. On the held-out scans bare AV1 beat SPERR at 32x on all four.
AV1_MIN_RATIO = 24.0
#: ... and in quality mode up to this PSNR (dB over the window; SPERR at 32x reaches ~49 dB).
AV1_MAX_QUALITY_DB = 48.0

__all__ = [
    "BASE_LAYERS",
    "choices",
    "AV1Layer",
    "BaseLayerCoder",
    "BudgetOutOfReach",
    "SperrLayer",
    "base_layer",
    "check_tile_shape",
    "default_model",
    "layer_from_state",
    "resolve",
    "summary",
]


def choices() -> tuple[str, ...]:
    """What ``base=`` takes: ``auto`` and every registered layer."""
    return ("auto", *BASE_LAYERS)


def base_layer(layer_id: str) -> type[BaseLayerCoder]:
    """The registered layer of ``layer_id``."""
    try:
        return BASE_LAYERS[layer_id]
    except KeyError:
        raise InvalidInputError(f"base must be one of {choices()}, got {layer_id!r}") from None


def resolve(base: object, mode: str, value: float) -> str:
    """The base layer a codec with these settings writes."""
    if base not in choices():
        raise InvalidInputError(f"base must be one of {choices()}, got {base!r}")
    if base != "auto":
        if mode not in BASE_LAYERS[str(base)].modes:
            able = [name for name, layer in BASE_LAYERS.items() if mode in layer.modes]
            raise InvalidInputError(
                f"{mode} needs the {' or '.join(able)} base layer (its guarantee is that coder's); "
                f"use base={able[0]!r} or 'auto'"
            )
        return str(base)
    if mode == "max_error":
        return "sperr"
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

        if base not in DEFAULT_MODELS:
            raise InvalidInputError(
                f"no refinement model is trained for the {base} base layer; use model=None"
            )
        model = DEFAULT_MODELS[base]
    return model


def check_tile_shape(tile_shape: tuple[int, ...], layer_ids: set[str]) -> None:
    """Refuse tiles longer than any of these layers codes, before any work."""
    limit = min(BASE_LAYERS[name].max_extent for name in layer_ids)
    if any(t > limit for t in tile_shape):
        raise InvalidInputError(
            f"deepstd tiles may be at most {limit} voxels along each axis on the "
            f"{' or '.join(sorted(layer_ids))} base layer, got {tuple(tile_shape)}"
        )


def layer_from_state(state: dict, n_tiles: int) -> BaseLayerCoder:
    """The base layer of a file, from its codec state; CorruptHeaderError when the record is bad."""
    record = state.get("base")
    try:
        if record is None:
            return BASE_LAYERS[UNRECORDED].from_record(None, n_tiles)
        name = record["codec"]
        if name not in BASE_LAYERS:
            raise ValueError(f"unknown base layer {name!r} (known: {', '.join(BASE_LAYERS)})")
        return BASE_LAYERS[name].from_record(record, n_tiles)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptHeaderError(f"deepstd base layer record is malformed: {exc}") from None


def summary(state: dict) -> str:
    """How ``dstd info`` names a file's base layer."""
    record = state.get("base")
    if not isinstance(record, dict):
        return BASE_LAYERS[UNRECORDED].summary(None)
    layer = BASE_LAYERS.get(str(record.get("codec")))
    return "base layer" if layer is None else layer.summary(record)
