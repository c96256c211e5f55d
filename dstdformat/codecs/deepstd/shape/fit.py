"""The encoder's side: register the scan to the template and resample it onto the texture grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ....model.template import Template
from .field import TextureGrid, phi_from_section, scan_frame

#: Below this NCC after the affine stage the scan is too far from the template to warp.
MIN_AFFINE_NCC = 0.5
#: Weight of the cycle term. The paper's 0.001 left the backward map 2.8-3.6 mm off the inverse
#: and the warp round trip at 31-50 HU on the held-out chest; 0.1 brought it to 20-23 HU
#: (docs/experiments.md).
CYCLE_WEIGHT = 0.1
#: A texture grid with more than this many times the scan's voxels is not worth coding.
MAX_TEXTURE_GROWTH = 3.0


@dataclass
class ShapeFit:
    """What the encoder keeps from a usable registration."""

    code: bytes  #: the shape section
    texture: TextureGrid
    values: np.ndarray  #: the texture (float32, stored units, inside the window)
    record: dict[str, Any]  #: registration figures for the header


_LAST_FIT: dict[tuple, ShapeFit | str] = {}


def fit_shape(
    array: np.ndarray,
    spacing: Sequence[float] | None,
    slope: float,
    intercept: float,
    window: tuple[float, float],
    template_ref: str,
    steps: int,
    preferred_tile: Sequence[int],
    progress: bool = False,
) -> ShapeFit | str:
    """Register ``array`` to the template and build its texture; or the reason not to.

    The last result is kept: coding one scan at several rates or with several refinement models
    (benchmarks, rate searches) registers it once."""
    import hashlib

    from ....zoo.templates import find_template

    template = find_template(template_ref)  # a missing template fails before any other work
    template_id = template.id  # the content, not the name, keys the cache
    key = (
        hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest(),
        array.shape,
        array.dtype.str,
        None if spacing is None else tuple(spacing),
        slope,
        intercept,
        tuple(window),
        template_id,
        steps,
        tuple(preferred_tile),
    )
    if key not in _LAST_FIT:
        _LAST_FIT.clear()
        _LAST_FIT[key] = _fit_shape(
            array, spacing, slope, intercept, window, template, steps, preferred_tile, progress
        )
    return _LAST_FIT[key]


def _fit_shape(
    array: np.ndarray,
    spacing: Sequence[float] | None,
    slope: float,
    intercept: float,
    window: tuple[float, float],
    template: Template,
    steps: int,
    preferred_tile: Sequence[int],
    progress: bool,
) -> ShapeFit | str:
    from ....model.registration import RegistrationConfig, register
    from ....model.warp import inverse_field, resample
    from ....progress import bar
    from .section import encode_shape, quantize_in_place

    if spacing is None:
        return "the scan has no voxel spacing to register with"
    if any(n < 4 for n in array.shape):
        return f"the scan ({'x'.join(map(str, array.shape))}) is too thin to register"
    hu = array.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    config = RegistrationConfig(steps=steps, cycle_weight=CYCLE_WEIGHT)
    with bar(
        enabled=progress,
        desc="shape: registering to the template",
        total=config.affine_steps + steps,
        unit="step",
    ) as pbar:

        def tick(done: int, total: int) -> None:
            pbar.update(1)

        first = register(
            hu, spacing, template.array, template.spacing, replace(config, steps=0), progress=tick
        )
        if first.ncc_affine < MIN_AFFINE_NCC:
            return (
                f"far from the template: NCC {first.ncc_affine:.3f} after the affine, below {MIN_AFFINE_NCC}"
            )
        fit = register(
            hu, spacing, template.array, template.spacing, config, progress=tick, affine_from=first
        )
    deformation = fit.deformation
    quantize_in_place(deformation.forward_net)
    code = encode_shape(deformation.affine.as_array(), deformation.forward_net)
    frame = scan_frame(array.shape, spacing)
    phi = phi_from_section(code, frame)
    linear = deformation.affine.as_array()[:, :3]
    texture = TextureGrid.around(phi, frame, linear, preferred_tile)
    growth = math.prod(texture.frame.shape) / array.size
    if growth > MAX_TEXTURE_GROWTH:
        return (
            f"the texture grid would hold {growth:.1f}x the scan's voxels (limit "
            f"{MAX_TEXTURE_GROWTH:g}x): the template does not cover the scan well"
        )
    psi = inverse_field(phi, texture.frame, deformation.to_scan, linear)
    low, high = window
    clipped = torch.from_numpy(np.clip(array.astype(np.float32), low, high))
    values = resample(clipped, frame, psi, texture.frame, padding_value=low, order="keys")
    record = {k: round(float(v), 4) for k, v in fit.summary().items() if k != "seconds"}
    record["template"] = template.id
    return ShapeFit(code, texture, np.clip(values.numpy(), low, high).astype(np.float32), record)
