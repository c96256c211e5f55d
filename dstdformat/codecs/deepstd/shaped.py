"""Shape-coded deepstd files: the texture is stored on a template-aligned grid and warped back.

DeepSTD's decoupling: the encoder registers the scan to a reference template (affine + SIREN,
``model/registration.py``), stores the scan-to-template map ``phi`` as the shape section, resamples
the scan onto the *texture grid* (the box ``phi`` maps the scan into) and codes that texture with
the ordinary deepstd texture path. Decoding a voxel ``x`` reads the decoded texture at ``phi(x)``
with a local cubic kernel. Voxels far outside the window (padding, metal) stay exact on the scan's
own grid, whatever the warp does.

The encoder does not trust the warp blindly: a scan without spacing, far from the template
(affine NCC below :data:`MIN_AFFINE_NCC`), or whose texture grid would be much larger than the
scan is coded texture-only, with the reason in the header; under the ``"best"`` policy it also codes
the scan texture-only and keeps whichever decodes closer to the original at the same budget.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ...errors import CorruptHeaderError, CorruptSectionError
from ...model.deformation import COORD_SCALE_MM, AffineMap, Siren, VolumeFrame
from ...model.template import Template
from ...model.warp import CoarseField, cubic_box, field_shape, sample_cubic_voxels
from ...tiling import MAX_TILE_VOXELS, NO_TILE, Region, SectionKind, TileGrid, default_tile_shape
from ..base import DecodeContext, Fetch

#: Below this NCC after the affine stage the scan is too far from the template to warp.
MIN_AFFINE_NCC = 0.5
#: Weight of the cycle term. The paper's 0.001 left the backward map 2.8-3.6 mm off the inverse
#: and the warp round trip at 31-50 HU on the held-out chest; 0.1 brought it to 20-23 HU
#: (docs/experiments.md).
CYCLE_WEIGHT = 0.1
#: A texture grid with more than this many times the scan's voxels is not worth coding.
MAX_TEXTURE_GROWTH = 3.0
#: Decoders refuse texture grids beyond this many times the scan's voxels (encoders stop at
#: MAX_TEXTURE_GROWTH), deformation grids beyond this many points (a 2 m whole-body scan at the
#: 4 mm field spacing has ~8 M) and voxel steps beyond this many mm: hostile headers cannot make
#: a decode take hours or all memory.
MAX_TEXTURE_FACTOR = 8
MAX_FIELD_POINTS = 1 << 24
MAX_SPACING_MM = 100.0
MAX_TEMPLATE_DISTANCE_MM = 10_000.0
#: Scan slices warped at a time (bounds the memory of the 64 taps per voxel).
WARP_SLAB = 4
#: Refined texture blocks kept per open file (a full read's consecutive slabs share blocks).
BLOCK_CACHE = 24


def scan_frame(shape: Sequence[int], spacing: Sequence[float]) -> VolumeFrame:
    return VolumeFrame(tuple(int(n) for n in shape), tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def phi_from_section(code: bytes, frame: VolumeFrame) -> CoarseField:
    """The decoder's scan-to-template field, rebuilt from the shape section (the encoder uses
    this very function, so both sides warp with the same numbers)."""
    from .shape import decode_shape

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
        from ...model.warp import texture_frame

        frame = texture_frame(field, scan, linear)
        tile = default_tile_shape(frame.shape, tuple(preferred_tile), balanced=True)
        # Through JSON and back: the decoder builds its frame from the header's numbers.
        return cls.from_json(cls(frame, tile).to_json())  # type: ignore[arg-type]


# -- encoding ------------------------------------------------------------------------------------


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

    from ...zoo.templates import find_template

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
    from ...model.registration import RegistrationConfig, register
    from ...model.warp import inverse_field, resample
    from ...progress import bar
    from .shape import encode_shape, quantize_in_place

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


# -- decoding ------------------------------------------------------------------------------------


class ShapeDecoder:
    """One open shape-coded file: its field, the texture's decode context, refined blocks."""

    def __init__(self, codec, ctx: DecodeContext, fetch: Fetch) -> None:
        from .decoding import Blocks, DecodeState

        state = ctx.state
        info = state.get("shape")
        if not isinstance(info, dict):
            raise CorruptHeaderError("deepstd state has a texture grid but no shape record")
        try:
            spacing = tuple(float(s) for s in info["scan_spacing"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise CorruptHeaderError("deepstd shape record has no valid scan_spacing") from None
        if len(spacing) != 3 or not all(0 < s <= MAX_SPACING_MM for s in spacing):
            raise CorruptHeaderError(
                f"deepstd shape record has an invalid scan_spacing {spacing} "
                f"(each step must be in (0, {MAX_SPACING_MM:g}] mm)"
            )
        self.texture = TextureGrid.from_json(state.get("texture"))
        # The work and memory of decoding follow these sizes: bound them by the scan's own.
        scan_voxels = math.prod(ctx.shape)
        field_points = math.prod(field_shape(scan_frame(ctx.shape, spacing)))
        if field_points > MAX_FIELD_POINTS:
            raise CorruptHeaderError(
                f"deepstd shape record implies a {field_points}-point "
                f"deformation grid (more than {MAX_FIELD_POINTS})"
            )
        if (
            math.prod(self.texture.frame.shape) > MAX_TEXTURE_FACTOR * scan_voxels
            or math.prod(self.texture.tile_shape) > MAX_TILE_VOXELS
        ):
            raise CorruptHeaderError(
                f"deepstd texture grid {self.texture.frame.shape} is implausibly large for a {ctx.shape} scan"
            )
        try:
            outlier_tiles = {int(t) for t in state["outlier_tiles"]}
        except (KeyError, TypeError, ValueError, OverflowError):
            raise CorruptHeaderError("deepstd state has no valid outlier_tiles") from None
        if any(not 0 <= t < ctx.grid.n_tiles for t in outlier_tiles):
            raise CorruptHeaderError("deepstd outlier tiles do not match the tile grid")
        self.outlier_tiles = outlier_tiles
        self.frame = scan_frame(ctx.shape, spacing)
        key = (SectionKind.SHAPE, NO_TILE)
        self.phi = phi_from_section(fetch([key])[key], self.frame)
        # The texture decodes like a texture-only file of the texture grid, without exact voxels
        # (those are on the scan's grid).
        self.tctx = DecodeContext(
            self.texture.frame.shape,
            np.dtype(np.float32),
            self.texture.grid,
            ctx.params,
            {**state, "outlier_tiles": []},
            ctx.model,
        )
        tstate = DecodeState.from_context(self.tctx)
        self.window = tstate.window
        self.blocks = (
            tstate.blocks(self.tctx)
            if codec.model is not None
            else Blocks(self.tctx.shape, self.tctx.grid, None, 0, "tile")
        )
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def _voxels(self, region: Region) -> torch.Tensor:
        coords = self.frame.grid(region).reshape(-1, 3)
        with torch.no_grad():
            return self.texture.frame.to_voxel(self.phi(coords))

    def _slabs(self, region: Region) -> list[Region]:
        return [
            (slice(k, min(k + WARP_SLAB, region[0].stop)), *region[1:])  # type: ignore[misc]
            for k in range(region[0].start, region[0].stop, WARP_SLAB)
        ]

    def texture_box(self, codec, box: Region, fetch: Fetch) -> np.ndarray:
        """The decoded (refined) texture over ``box``, block by block, through the cache."""
        from .decoding import paste, refine_all

        numbers = self.blocks.in_region(box)
        with self.lock:  # threads read regions of one volume at once
            found = {n: block for n in numbers if (block := self.cache.get(n)) is not None}
        missing = [n for n in numbers if n not in found]
        if missing:
            keeps = [self.blocks.keep(n) for n in missing]
            cover = tuple(
                slice(min(k[a].start for k in keeps), max(k[a].stop for k in keeps)) for a in range(3)
            )
            plan = codec.plan_region(self.tctx, cover, fetch)
            values = plan.complete(refine_all(plan.refiner, plan.jobs))
            for n, keep in zip(missing, keeps):
                found[n] = values[
                    tuple(slice(k.start - c.start, k.stop - c.start) for k, c in zip(keep, cover))
                ].copy()
        with self.lock:
            for n in numbers:
                self.cache[n] = found[n]
                self.cache.move_to_end(n)
            while len(self.cache) > BLOCK_CACHE:
                self.cache.popitem(last=False)
        out = np.empty(tuple(b.stop - b.start for b in box), dtype=np.float32)
        for n in numbers:
            paste(out, box, found[n], self.blocks.keep(n))
        return out

    def decode(self, codec, ctx: DecodeContext, region: Region, fetch: Fetch) -> np.ndarray:
        from . import outliers
        from .decoding import scatter
        from .texture_coding import to_dtype as _to_dtype

        shape = self.texture.frame.shape
        slabs = self._slabs(region)
        # The texture box every voxel of the region reads (pass 1), decoded once (one fetch,
        # the region's exact voxels with it), then sampled slab by slab (pass 2).
        boxes = [cubic_box(self._voxels(s), shape) for s in slabs]
        box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        extra = [
            (SectionKind.RESIDUAL, t) for t in ctx.grid.tiles_in_region(region) if t in self.outlier_tiles
        ]
        stash: dict = {}

        def fetch_with_exact(keys: list) -> Any:
            got = fetch(list(keys) + [k for k in extra if k not in stash])
            stash.update({k: got[k] for k in extra if k in got})
            return got

        texture = torch.from_numpy(self.texture_box(codec, box, fetch_with_exact))
        missing = [k for k in extra if k not in stash]
        if missing:
            stash.update(fetch(missing))
        low, high = self.window
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=ctx.dtype)
        for slab in slabs:
            values = sample_cubic_voxels(texture, self._voxels(slab), shape, box, padding_value=low)
            rows = slice(slab[0].start - region[0].start, slab[0].stop - region[0].start)
            out[rows] = _to_dtype(
                values.reshape(tuple(r.stop - r.start for r in slab)).numpy(), ctx.dtype, low, high
            )
        for key in extra:
            tile = key[1]
            tile_region = ctx.grid.tile_region(tile)
            scatter(
                out,
                region,
                tile_region,
                *outliers.decode(
                    stash[key], ctx.grid.tile_extent(tile), ctx.dtype, f"residual section of tile {tile}"
                ),
            )
        return out


class ShapeDecoders:
    """The :class:`ShapeDecoder` of the file last read (one per codec object, like the tile cache)."""

    def __init__(self) -> None:
        self.owner: DecodeContext | None = None
        self.decoder: ShapeDecoder | None = None
        self._lock = threading.Lock()

    def get(self, codec, ctx: DecodeContext, fetch: Fetch) -> ShapeDecoder:
        with self._lock:  # built once even when many threads start reading together
            if self.owner is not ctx or self.decoder is None:
                self.decoder = ShapeDecoder(codec, ctx, fetch)
                self.owner = ctx
            return self.decoder


def decoded_error(
    decode: Callable[[Region], np.ndarray], array: np.ndarray, slope: float, rows: int
) -> float:
    """Mean absolute error in physical units of a decoding of ``array``, ``rows`` slices at a time."""
    total = 0.0
    for k in range(0, array.shape[0], rows):
        region = (slice(k, min(k + rows, array.shape[0])), slice(0, array.shape[1]), slice(0, array.shape[2]))
        total += float(np.abs(decode(region).astype(np.float64) - array[region]).sum())
    return total * abs(slope) / array.size
