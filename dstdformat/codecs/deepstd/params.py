"""The deepstd codec's parameters, declared and validated once.

:class:`DeepSTDParams` is what a user chooses (the rate mode, the window, the refinement model,
the base layer); the volume codec, the numcodecs ``DeepSTD`` and the zarr ``DeepSTDCodec`` all take
it. :class:`ShapeOptions` are the volume codec's shape-coding options.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError
from ...metadata import HU_WINDOW
from . import base_layers

DEFAULT_RATIO = 256.0
MODES = ("ratio", "quality", "max_error")
#: Accepted ranges, (low, high]: a ratio (raw bytes / file bytes), a PSNR in dB, a bound in
#: stored units.
LIMITS = {"ratio": (1.0, 100000.0), "quality": (1.0, 200.0), "max_error": (0.0, 1e9)}
#: ``"best"``: code both ways, keep the one closer to the original; ``"always"``: use the shape
#: whenever the registration is usable (for ablations).
SHAPE_POLICIES = ("best", "always")
#: What a user may set by name (``codec_options``, ``dstd compress`` flags).
USER_OPTIONS = ("ratio", "quality", "max_error", "window", "model", "device", "shape", "shape_policy",
                "shape_steps", "base")  # fmt: skip


def check_option_pairs(options: Mapping[str, Any], name_of: Callable[[str], str] = str) -> None:
    """Options that need another: a shape policy needs a template."""
    if options.get("shape_policy") is not None and options.get("shape") is None:
        raise InvalidInputError(f"{name_of('shape_policy')} needs {name_of('shape')} TEMPLATE")


@dataclass(frozen=True)
class DeepSTDParams:
    """Give at most one of ``ratio`` (default 256), ``quality``, ``max_error``.

    - ``ratio``: raw bytes / file bytes to aim at (lands within a few percent).
    - ``quality``: PSNR in dB over the window that every tile's base layer reaches.
    - ``max_error``: a guaranteed bound on |decoded - original| in stored units (no refinement).
    - ``window``: the HU range the base layer codes (farther voxels are stored exactly).
    - ``model``: id of the refinement network (or a ``.safetensors`` path); None codes without;
      ``"default"`` the shipped network for the base layer; ``"auto"`` that network where it
      pays, i.e. on the SPERR base (on AV1 it gained under 5%: docs/benchmarks.md).
    - ``base``: the base layer, ``"av1"``, ``"sperr"`` or ``"auto"`` (AV1 from 24x, SPERR below
      and for ``max_error``).
    """

    ratio: float | None = None
    quality: float | None = None
    max_error: float | None = None
    window: tuple[float, float] = HU_WINDOW
    model: str | None = "auto"
    base: str = "auto"

    def __post_init__(self) -> None:
        given = {m: getattr(self, m) for m in MODES if getattr(self, m) is not None}
        if len(given) > 1:
            raise InvalidInputError(f"give at most one of ratio, quality, max_error; got {sorted(given)}")
        mode, value = next(iter(given.items())) if given else ("ratio", DEFAULT_RATIO)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInputError(f"{mode} must be a finite number, got {value!r}")
        low, high = LIMITS[mode]
        if not low < value <= high:
            raise InvalidInputError(f"{mode} must be in ({low:g}, {high:g}], got {value!r}")
        try:
            window = tuple(float(w) for w in self.window)
        except (TypeError, ValueError):
            raise InvalidInputError(f"window must be two numbers (HU), got {self.window!r}") from None
        if len(window) != 2 or not window[0] < window[1]:
            raise InvalidInputError(f"window must be (low, high) with low < high, got {self.window!r}")
        if self.model is not None and not (isinstance(self.model, str) and self.model):
            raise InvalidInputError(
                f"model must be a model id, a .safetensors path or None, got {self.model!r}"
            )
        base_layers.resolve(self.base, mode, float(value))  # refuses unknown or impossible bases
        object.__setattr__(self, "window", window)

    @property
    def mode(self) -> str:
        return next((m for m in MODES if getattr(self, m) is not None), "ratio")

    @property
    def value(self) -> float:
        """The number the mode aims at (the default ratio when none is given)."""
        return float(getattr(self, self.mode) if getattr(self, self.mode) is not None else DEFAULT_RATIO)

    @property
    def resolved_base(self) -> str:
        """The base layer files are written with (``auto`` decided by the mode and value)."""
        return base_layers.resolve(self.base, self.mode, self.value)

    @property
    def resolved_model(self) -> str | None:
        """The refinement model files name (``auto``/``default`` resolved; none for a bound)."""
        if self.mode == "max_error":  # a bound holds for the base layer; refinement moves voxels
            return None
        return base_layers.default_model(self.model, self.resolved_base)  # type: ignore[return-value]


@dataclass(frozen=True)
class ShapeOptions:
    """Shape coding: ``template`` (an id, ``"default"`` or a ``.safetensors`` path) to code the
    scan's deformation against, or None for texture only; ``policy``; registration ``steps``."""

    template: str | None = None
    policy: str = "best"
    steps: int = 2500

    def check(self, mode: str) -> None:
        if self.policy not in SHAPE_POLICIES:
            raise InvalidInputError(f"shape_policy must be one of {SHAPE_POLICIES}, got {self.policy!r}")
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 100000:
            raise InvalidInputError(f"shape_steps must be an integer in 0..100000, got {steps!r}")
        if self.template is None:
            return
        if not isinstance(self.template, str) or not self.template:
            raise InvalidInputError(f"shape must be a template id or path, got {self.template!r}")
        if mode == "max_error":
            raise InvalidInputError(
                "shape coding cannot keep a max_error bound (the warp moves voxels); use shape=None"
            )
        if self.template_path is not None and not Path(self.template_path).is_file():
            raise InvalidInputError(f"template file {self.template} does not exist")

    @property
    def template_path(self) -> str | None:
        """The template file, when the template is given as one (None for an id)."""
        return self.template if self.template is not None and self.template.endswith(".safetensors") else None

    def template_id(self) -> str | None:
        """The id files record: a template file's content address, ``default`` resolved."""
        if self.template is None:
            return None
        if self.template_path is not None:
            from ...zoo.templates import template_id_of

            return template_id_of(self.template_path)
        if self.template == "default":
            from ...zoo.registry import DEFAULT_TEMPLATE

            return DEFAULT_TEMPLATE
        return self.template
