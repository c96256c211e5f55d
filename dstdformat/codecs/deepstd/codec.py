"""The ``deepstd`` codec: base layer (AV1 or SPERR) + learned refinement + exact outliers, per tile.

Encoding clips each tile to the HU window, stores the voxels outside it exactly (outlier
sections) and codes the clipped tile with the base layer (TEXTURE sections) at the rate that
rate control picks. Decoding an output tile decodes the base-layer tiles under it plus a halo,
refines that block with the learned network, keeps the tile and puts the exact voxels back.
Every output tile is computed the same way whichever region asked for it, so a region read equals
the same region of a full read bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...errors import InvalidInputError
from ...metadata import HU_WINDOW, ScanMetadata
from ...tiling import NO_TILE, Region, SectionKind, TileGrid
from ..base import (
    BatchDecoding,
    ContainerCosts,
    DecodeContext,
    Encoded,
    Fetch,
    Guarantee,
    Section,
    VolumeCodec,
)
from . import outliers
from .base_layers import BASE_LAYERS, FALLBACK, BaseLayerCoder, check_tile_shape
from .decoding import (
    REFINE_BLOCK,
    REFINE_LAYOUT,
    BaseCache,
    DecodeState,
    stored_window,
)
from .gains import choose_gains
from .params import USER_OPTIONS, DeepSTDParams, ShapeOptions, check_option_pairs
from .policy import decoded_mae
from .rate_control import RateTarget, TextureJob, code_texture
from .region_plan import RegionPlan, complete_together, plan_region, refine_all

if TYPE_CHECKING:
    from .shape import decode as shape_decode
    from .shape import fit as shape_fit

#: Voxels of base-layer context around each output tile that the refiner sees.
HALO = 8
#: Voxels at most this far (HU) outside the window are clipped to it; farther ones (padding,
#: metal) are stored exactly. Air noise dipping just below -1024 HU would otherwise fill the
#: outlier sections.
OUTLIER_MARGIN_HU = 128.0


class DeepSTDVolumeCodec(VolumeCodec, BatchDecoding):
    """Lossy CT codec; ``ratio=256`` by default. The rate, window, model and base parameters are
    :class:`~.params.DeepSTDParams`'s; ``device`` runs the refinement (``"auto"``: a GPU if torch
    sees one); ``clamp_ratio`` lowers an unreachable ratio instead of refusing it (zarr chunks);
    ``shape``/``shape_policy``/``shape_steps`` code the scan's shape against a template
    (:class:`~.params.ShapeOptions`).
    """

    codec_id: ClassVar[str] = "deepstd"
    # 2: refinement blocks inside tiles ("refine_layout"); 3: shape coding (state.texture, a
    # shape section); 4: the AV1 base layer (state.base). Written: the lowest that describes the
    # file, so older readers still read SPERR files.
    codec_version: ClassVar[int] = 4
    exact: ClassVar[bool] = False
    supported_dtypes: ClassVar[tuple[str, ...]] = ("uint8", "int8", "uint16", "int16", "int32", "float32")
    # Every tile seam costs quality, a deeper tile makes a slice read fetch more: at most 64
    # slices, balanced (no thin last tile); docs/experiments.md, "SPERR per tile" and "Tile depth".
    preferred_tile_shape: ClassVar[tuple[int, int, int]] = (64, 512, 512)
    balanced_tiles: ClassVar[bool] = True
    user_options: ClassVar[tuple[str, ...]] = USER_OPTIONS

    @classmethod
    def check_options(cls, options: Mapping[str, Any], name_of: Callable[[str], str] = str) -> None:
        super().check_options(options, name_of)
        check_option_pairs(options, name_of)

    def __init__(
        self,
        ratio: float | None = None,
        quality: float | None = None,
        max_error: float | None = None,
        window: tuple[float, float] = HU_WINDOW,
        model: str | None = "auto",
        device: str = "auto",
        clamp_ratio: bool = False,
        shape: str | None = None,
        shape_policy: str = "best",
        shape_steps: int = 2500,
        base: str = "auto",
    ) -> None:
        self.params = params = DeepSTDParams(ratio, quality, max_error, window, model, base)
        self.mode, self.value, self.window = params.mode, params.value, params.window
        if not isinstance(device, str):
            raise InvalidInputError(
                f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}"
            )
        self.base = params.resolved_base
        #: base="auto" may still code a volume with SPERR when AV1 cannot reach its ratio (a tiny
        #: volume: AV1 streams have a floor of ~30 bytes a frame that SPERR does not).
        self.base_fallback = base == "auto" and self.base == "av1"
        self.model = params.resolved_model
        self.device = device
        #: A ratio out of reach (headers outweigh a tiny volume's budget) is lowered to the highest
        #: reachable one instead of refused: for zarr chunks, where an edge chunk may be tiny.
        self.clamp_ratio = clamp_ratio
        options = ShapeOptions(shape, shape_policy, shape_steps)
        options.check(self.mode)
        self.shape_policy, self.shape_steps = options.policy, options.steps
        self._template_path = options.template_path
        self.shape = options.template_id()
        self._base_cache = BaseCache()
        self._shape_decoders: shape_decode.ShapeDecoders | None = None  # made on the first shape read

    # -- configuration -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = {self.mode: self.value, "window": list(self.window), "model": self.model, "base": self.base}
        if self.shape is not None:
            config |= {
                "shape": self.shape,
                "shape_policy": self.shape_policy,
                "shape_steps": self.shape_steps,
            }
        return config

    def describe(self) -> dict[str, Any]:
        description = super().describe()
        # Version 2 readers do not know shape-coded files; texture-only files stay version 2.
        description["version"] = max(BASE_LAYERS[self.base].format_version, 2 if self.shape is None else 3)
        if self.model is not None:
            from ...zoo.registry import find_model

            found = find_model(self.model)
            description["model"] = {"id": found.id, "sha256": found.sha256}
        return description

    def guarantee(self) -> Guarantee:
        return Guarantee("bounded", self.value) if self.mode == "max_error" else Guarantee("lossy")

    def without_refinement(self) -> DeepSTDVolumeCodec:
        if self.model is None:
            return self
        return type(self).from_config({**self.get_config(), "model": None})  # type: ignore[return-value]

    def check_array(self, array: np.ndarray) -> None:
        super().check_array(array)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInputError(
                "deepstd cannot code NaN or infinite voxels; replace them or use the lossless codec"
            )

    # -- encoding ------------------------------------------------------------------------------
    def encode(
        self,
        array: np.ndarray,
        grid: TileGrid,
        *,
        progress: bool = False,
        metadata: ScanMetadata | None = None,
        costs: ContainerCosts | None = None,
    ) -> Encoded:
        self.check_array(array)
        costs = costs or ContainerCosts()
        if self.model is not None:  # fail before minutes of encoding, not after
            from ...zoo.registry import find_model

            find_model(self.model)
        check_tile_shape(grid.tile_shape, {self.base, FALLBACK} if self.base_fallback else {self.base})
        slope = metadata.slope if metadata is not None else 1.0
        intercept = metadata.intercept if metadata is not None else 0.0
        low, high = stored_window(self.window, slope, intercept, array.dtype)
        margin = OUTLIER_MARGIN_HU / abs(slope) if self.mode != "max_error" else 0.0
        far = (low - margin, high + margin)
        # Coded once, on the scan's tiles: the ratio budget needs their size.
        outlier_payloads = outliers.payloads(array, grid, *far)
        base_state = {
            "mode": self.mode,
            "stored_window": [low, high],
            "slope": float(slope),
            "intercept": float(intercept),
        }
        if self.shape is None:
            return self._encode_plain(array, grid, outlier_payloads, base_state, costs, far, progress)

        from .shape import fit as shape_fit  # torch: only when shape is coded

        spacing = metadata.spacing if metadata is not None else None
        fit = shape_fit.fit_shape(
            array,
            spacing,
            slope,
            intercept,
            (low, high),
            self._template_path or self.shape,
            self.shape_steps,
            self.preferred_tile_shape,
            progress,
        )
        if isinstance(fit, str):
            plain = self._encode_plain(array, grid, outlier_payloads, base_state, costs, far, progress)
            plain.state["shape"] = {"used": False, "reason": fit}
            return plain
        coded = self._encode_shaped(array, grid, outlier_payloads, base_state, metadata, costs, fit, progress)
        if self.shape_policy == "always":
            return coded
        plain = self._encode_plain(array, grid, outlier_payloads, base_state, costs, far, progress)
        errors = [
            self._decoded_mae(array, grid, candidate, metadata, progress) for candidate in (coded, plain)
        ]
        if errors[0] < errors[1]:
            coded.state["shape"]["mae_texture_only"] = round(errors[1], 3)
            coded.state["shape"]["mae"] = round(errors[0], 3)
            return coded
        plain.state["shape"] = {
            "used": False,
            "reason": (
                f"texture only decodes closer: MAE {errors[1]:.2f} against {errors[0]:.2f} with the "
                f"shape at the same budget"
            ),
            "registration": fit.record,
        }
        return plain

    def _encode_plain(
        self,
        array: np.ndarray,
        grid: TileGrid,
        outlier_payloads: dict[int, bytes],
        base_state: dict,
        costs: ContainerCosts,
        far: tuple[float, float],
        progress: bool,
    ) -> Encoded:
        """Texture only: the base layer on the scan's own tiles."""
        window = tuple(base_state["stored_window"])
        job = TextureJob(array, grid, window, far, dict(outlier_payloads), array.nbytes, 0, costs)
        coded = code_texture(self._layer(window), self._rate_target(), job, progress)
        outlier_payloads = job.outlier_payloads  # with what max_error stores exactly
        sections = [Section(SectionKind.TEXTURE, t, payload) for t, payload in zip(grid, coded.streams)]
        sections += outliers.sections(outlier_payloads)
        state = self._state(base_state, coded.bits_per_voxel, outlier_payloads, coded.base_record)
        if self.model is not None:
            state["refine_gain"] = self._choose_gains(array, grid, sections, state, progress)
        return Encoded(iter(sections), state)

    def _encode_shaped(
        self,
        array: np.ndarray,
        grid: TileGrid,
        outlier_payloads: dict[int, bytes],
        base_state: dict,
        metadata: ScanMetadata | None,
        costs: ContainerCosts,
        fit: shape_fit.ShapeFit,
        progress: bool,
    ) -> Encoded:
        """Shape section + texture tiles on the texture grid + exact voxels on the scan's grid."""
        tgrid = fit.texture.grid
        record = {
            "used": True,
            **fit.record,
            "scan_spacing": [float(s) for s in metadata.spacing],  # type: ignore[union-attr]
            "shape_bytes": len(fit.code),
        }
        extra = len(fit.code) + len(json.dumps({"shape": record, "texture": fit.texture.to_json()}))
        window = tuple(base_state["stored_window"])
        job = TextureJob(
            fit.values,
            tgrid,
            window,
            outlier_payloads=outlier_payloads,
            raw_bytes=array.nbytes,
            extra_bytes=extra,
            costs=costs,
        )
        coded = code_texture(self._layer(window), self._rate_target(), job, progress)
        texture_sections = [Section(SectionKind.TEXTURE, t, p) for t, p in zip(tgrid, coded.streams)]
        sections = [Section(SectionKind.SHAPE, NO_TILE, fit.code), *texture_sections]
        sections += outliers.sections(outlier_payloads)
        state = self._state(base_state, coded.bits_per_voxel, outlier_payloads, coded.base_record)
        if self.model is not None:
            texture_state = {**state, "outlier_tiles": []}
            state["refine_gain"] = self._choose_gains(
                fit.values, tgrid, texture_sections, texture_state, progress
            )
        state["texture"] = fit.texture.to_json()
        state["shape"] = record
        return Encoded(iter(sections), state)

    def _layer(self, window: tuple[float, float]) -> BaseLayerCoder:
        return BASE_LAYERS[self.base].for_encoding(window)

    def _rate_target(self) -> RateTarget:
        return RateTarget(self.mode, self.value, self.clamp_ratio, fallback=self.base_fallback)

    def _state(
        self,
        base_state: dict,
        rates: list[float],
        outlier_payloads: dict[int, bytes],
        base_record: dict | None,
    ) -> dict:
        state = dict(base_state)
        if base_record is not None:
            state["base"] = base_record
        state.update(
            {
                "halo": HALO if self.model is not None else 0,
                "refine_block": list(REFINE_BLOCK),
                "refine_layout": REFINE_LAYOUT,
                "bits_per_voxel": [round(r, 6) for r in rates],
                "outlier_tiles": sorted(outlier_payloads),
                "outlier_voxels": sum(map(outliers.count, outlier_payloads.values())),
            }
        )
        if self.mode == "ratio":
            state["target_ratio"] = self.value
        return state

    def _choose_gains(
        self, array: np.ndarray, grid: TileGrid, sections: list[Section], state: dict, progress: bool
    ) -> list[int]:
        ctx = DecodeContext(array.shape, array.dtype, grid, self.get_config(), state, None)
        gains = choose_gains(array, ctx, sections, self.plan_region, progress)
        self.release_caches()
        return gains

    def _decoded_mae(
        self,
        array: np.ndarray,
        grid: TileGrid,
        encoded: Encoded,
        metadata: ScanMetadata | None,
        progress: bool,
    ) -> float:
        model = self.describe().get("model")
        ctx = DecodeContext(array.shape, array.dtype, grid, self.get_config(), encoded.state, model)
        slope = metadata.slope if metadata is not None else 1.0
        error = decoded_mae(self.decode_region, ctx, array, encoded, slope, progress)
        self.release_caches()
        return error

    def release_caches(self) -> None:
        """Drop decoded tiles and shape decoders (the encoder's, once it has measured with them)."""
        self._base_cache = BaseCache()
        self._shape_decoders = None

    # -- decoding ------------------------------------------------------------------------------
    def decode_region(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> np.ndarray:
        if "texture" in ctx.state:  # shape-coded: the texture lies on its own grid
            if self._shape_decoders is None:
                from .shape.decode import ShapeDecoders

                self._shape_decoders = ShapeDecoders()
            decoder = self._shape_decoders.get(ctx, fetch, self._decode_texture, self.model is not None)
            return decoder.decode(ctx, region, fetch)
        return self._decode_texture(ctx, region, fetch)

    def _decode_texture(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> np.ndarray:
        """A region of the texture: base layer, refinement, exact voxels (on the texture's grid)."""
        plan = self.plan_region(ctx, region, fetch)
        return plan.complete(refine_all(plan.refiner, plan.jobs))

    def plan_region(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> RegionPlan:
        """Everything up to the refinement network (:func:`.region_plan.plan_region`)."""
        load = (lambda: self._refiner(ctx)) if self.model is not None else None
        return plan_region(ctx, region, fetch, load, self._base_cache.get(ctx))

    def decode_regions(
        self, requests: Sequence[tuple[DecodeContext, Region, Fetch]], batch: int | None = None
    ) -> list[np.ndarray]:
        """Several regions (of one or many files) at once: the refinement network runs over all
        their blocks together, ``batch`` same-shaped crops at a time (default: all)."""
        plans = [self.plan_region(ctx, region, fetch) for ctx, region, fetch in requests]
        return complete_together(plans, batch)

    def slab_alignment(self, ctx: DecodeContext) -> int:
        """Refinement blocks, when there is a model: a slab edge inside a block would make both
        slabs run the network on it."""
        if "texture" in ctx.state:
            return 0  # shape-coded: blocks are on the texture grid, kept across slabs by a cache
        state = DecodeState.from_context(ctx)
        if self.model is None or state.layout == "tile":
            return 0  # blocks never cross tiles: whole tile rows are the natural slabs
        return int(state.block[0])

    def _refiner(self, ctx: DecodeContext):
        from ...zoo.registry import find_model
        from .refiner_cache import load_refiner

        recorded = ctx.model or {}
        found = find_model(self.model, recorded.get("sha256"))
        return load_refiner(found, self.device)
