"""The scan-to-template field a shape section holds, and the texture grid it maps the scan into."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ....errors import CorruptHeaderError, CorruptSectionError
from ....model.deformation import COORD_SCALE_MM, AffineMap, Siren, VolumeFrame
from ....model.warp import CoarseField
from ....tiling import TileGrid, default_tile_shape

#: A field mapping the scan farther than this from the template's centre comes from a forged section.
MAX_TEMPLATE_DISTANCE_MM = 10_000.0


def scan_frame(shape: Sequence[int], spacing: Sequence[float]) -> VolumeFrame:
    return VolumeFrame(tuple(int(n) for n in shape), tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def phi_from_section(code: bytes, frame: VolumeFrame) -> CoarseField:
    """The decoder's scan-to-template field, rebuilt from the shape section (the encoder uses
    this very function, so both sides warp with the same numbers)."""
    from .section import decode_shape

    matrix, config, state = decode_shape(code)
    affine = AffineMap.from_array(matrix)
    net = Siren(config)
    net.load_state_dict(state)

    def to_template(x: torch.Tensor) -> torch.Tensor:
        y = affine(x)
        return y + net(y)

    field = CoarseField(to_template, frame)
    # A deformation that leaves the finite world, or maps the scan more than 10 m from the
    # template's centre (coordinates are in units of COORD_SCALE_MM), can only come from a forged
    # section; sampling with it would index outside the texture.
    if (
        not bool(torch.isfinite(field.values).all())
        or float(field.values.abs().max()) > MAX_TEMPLATE_DISTANCE_MM / COORD_SCALE_MM
    ):
        raise CorruptSectionError(
            "shape section decodes to a deformation with non-finite or absurd coordinates"
        )
    return field


@dataclass(frozen=True)
class TextureGrid:
    """Where the texture of a shape-coded file lies (``codec.state.texture``)."""

    frame: VolumeFrame
    tile_shape: tuple[int, int, int]

    @property
    def grid(self) -> TileGrid:
        return TileGrid(self.frame.shape, self.tile_shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.frame.shape),
            "tile_shape": list(self.tile_shape),
            "spacing": list(self.frame.spacing),
            "origin": list(self.frame.origin or ()),
        }

    @classmethod
    def from_json(cls, value: Any) -> TextureGrid:
        try:
            shape = tuple(int(n) for n in value["shape"])
            tile = tuple(int(n) for n in value["tile_shape"])
            spacing = tuple(float(s) for s in value["spacing"])
            origin = tuple(float(o) for o in value["origin"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CorruptHeaderError(f"deepstd texture grid is malformed: {exc}") from None
        if not (
            len(shape) == len(tile) == len(spacing) == len(origin) == 3
            and all(1 <= n <= 1 << 16 for n in shape)
            and all(1 <= t <= 1 << 16 for t in tile)
            and all(s > 0 and math.isfinite(s) for s in spacing)
            and all(math.isfinite(o) for o in origin)
        ):
            raise CorruptHeaderError(f"deepstd texture grid is invalid: {value!r}")
        return cls(VolumeFrame(shape, spacing, origin), tile)  # type: ignore[arg-type]

    @classmethod
    def around(
        cls, field: CoarseField, scan: VolumeFrame, linear: np.ndarray, preferred_tile: Sequence[int]
    ) -> TextureGrid:
        from ....model.warp import texture_frame

        frame = texture_frame(field, scan, linear)
        tile = default_tile_shape(frame.shape, tuple(preferred_tile), balanced=True)
        # Through JSON and back: the decoder builds its frame from the header's numbers.
        return cls.from_json(cls(frame, tile).to_json())  # type: ignore[arg-type]
