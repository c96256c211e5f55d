"""The ``deepstd`` codec: base layer (AV1 or SPERR) + learned refinement + exact outliers, per tile.

Encoding clips each tile to the HU window, stores the voxels outside it exactly (RESIDUAL
sections) and codes the clipped tile with the base layer (TEXTURE sections) at the rate that
rate control picks. Decoding an output tile decodes the base-layer tiles under it plus a halo,
refines that block with the learned network, keeps the tile and puts the exact voxels back.
Every output tile is computed the same way whichever region asked for it, so a region read equals
the same region of a full read bit for bit.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...errors import InvalidInputError
from ...metadata import HU_WINDOW, ScanMetadata
from ...progress import bar, track
from ...tiling import NO_TILE, Region, SectionKind, TileGrid
from ..base import ContainerCosts, DecodeContext, Encoded, Fetch, Section, VolumeCodec
from . import base_layers, outliers
from .base_layers import wavelet
from .decoding import (
    GAIN_STEPS,
    MAX_GAIN,
    REFINE_BLOCK,
    REFINE_LAYOUT,
    BaseCache,
    Blocks,
    DecodeState,
    RegionPlan,
    assemble,
    refine_all,
    stored_window,
)
from .texture_coding import TextureSettings, code_max_error, code_texture

if TYPE_CHECKING:
    from . import shaped

#: The CT window the base layer codes, in HU: air to dense bone.
DEFAULT_WINDOW = HU_WINDOW
DEFAULT_RATIO = 256.0
#: Voxels of wavelet-decoded context around each output tile that the refiner sees.
HALO = 8
#: Voxels at most this far (HU) outside the window are clipped to it; farther ones (padding,
#: metal) are stored exactly. Air noise dipping just below -1024 HU would otherwise fill the
#: outlier sections.
OUTLIER_MARGIN_HU = 128.0
_MODES = ("ratio", "quality", "max_error")
#: ``"best"``: code both ways, keep the one closer to the original; ``"always"``: use the shape
#: whenever the registration is usable (for ablations).
SHAPE_POLICIES = ("best", "always")


class DeepSTDVolumeCodec(VolumeCodec):
    """Lossy CT codec; ``ratio=256`` by default. Give at most one of ratio, quality, max_error.

    - ``ratio``: raw bytes / file bytes to aim at (lands within a few percent).
    - ``quality``: PSNR in dB over the window that every tile's wavelet layer reaches.
    - ``max_error``: a guaranteed bound on |decoded - original| in stored units (no refinement).
    - ``model``: id of the refinement network (or a ``.safetensors`` path); None codes without;
      ``"default"`` the shipped network for the base layer; ``"auto"`` (default) that network where
      it pays, i.e. on the SPERR base (on AV1 it gained under 5%: docs/benchmarks.md).
    - ``base``: the base layer, ``"av1"``, ``"sperr"`` or ``"auto"`` (AV1 from 24x, SPERR below
      and for ``max_error``).
    """

    codec_id: ClassVar[str] = "deepstd"
    # 2: refinement blocks inside tiles ("refine_layout"); 3: shape coding (state.texture, a
    # shape section); 4: the AV1 base layer (state.base). Written: the lowest that describes the
    # file, so older readers still read SPERR files.
    codec_version: ClassVar[int] = 4
    exact: ClassVar[bool] = False
    supported_dtypes: ClassVar[tuple[str, ...]] = ("uint8", "int8", "uint16", "int16", "int32", "float32")
    # Wavelet tiles: every seam costs quality (512x512x141 chest at 256x, MAE / SSIM: whole volume
    # 20.97 / 0.9597; 71-slice tiles 20.72 / 0.9600; 64 21.27 / 0.9581; 32 22.69 / 0.9554;
    # 128 + 13 21.03 / 0.9590), while a deeper tile makes a slice read fetch and decode more.
    # Balanced: no thin tile at the end. At most 64 slices, so that a slice of a 275-slice scan
    # fetches a fifth of the file (with refinement: 19.04 / 0.9631 against 18.72 / 0.9644 for
    # 128; docs/experiments.md).
    preferred_tile_shape: ClassVar[tuple[int, int, int]] = (64, 512, 512)
    balanced_tiles: ClassVar[bool] = True

    def __init__(
        self,
        ratio: float | None = None,
        quality: float | None = None,
        max_error: float | None = None,
        window: tuple[float, float] = DEFAULT_WINDOW,
        model: str | None = "auto",
        device: str = "auto",
        clamp_ratio: bool = False,
        shape: str | None = None,
        shape_policy: str = "best",
        shape_steps: int = 2500,
        base: str = "auto",
    ) -> None:
        given = {
            k: v
            for k, v in (("ratio", ratio), ("quality", quality), ("max_error", max_error))
            if v is not None
        }
        if len(given) > 1:
            raise InvalidInputError(f"give at most one of ratio, quality, max_error; got {sorted(given)}")
        if not given:
            given = {"ratio": DEFAULT_RATIO}
        ((self.mode, value),) = given.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInputError(f"{self.mode} must be a finite number, got {value!r}")
        limits = {"ratio": (1.0, 100000.0), "quality": (1.0, 200.0), "max_error": (0.0, 1e9)}[self.mode]
        if not limits[0] < value <= limits[1]:
            raise InvalidInputError(f"{self.mode} must be in ({limits[0]:g}, {limits[1]:g}], got {value!r}")
        self.value = float(value)
        try:
            low, high = (float(w) for w in window)
        except (TypeError, ValueError):
            raise InvalidInputError(f"window must be two numbers (HU), got {window!r}") from None
        if not low < high:
            raise InvalidInputError(f"window must be (low, high) with low < high, got {window!r}")
        self.window = (low, high)
        if model is not None and not (isinstance(model, str) and model):
            raise InvalidInputError(f"model must be a model id, a .safetensors path or None, got {model!r}")
        if not isinstance(device, str):
            raise InvalidInputError(
                f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}"
            )
        self.base = base_layers.resolve(base, self.mode, self.value)
        #: base="auto" may still code a volume with SPERR when AV1 cannot reach its ratio (a tiny
        #: volume: AV1 streams have a floor of ~30 bytes a frame that SPERR does not).
        self.base_fallback = base == "auto" and self.base == "av1"
        model = base_layers.default_model(model, self.base)
        # A bound is only a bound on what the wavelet layer decodes; refinement would move voxels.
        self.model = None if self.mode == "max_error" else model
        self.device = device
        #: A ratio out of reach (headers outweigh a tiny volume's budget) is lowered to the highest
        #: reachable one instead of refused: for zarr chunks, where an edge chunk may be tiny.
        self.clamp_ratio = clamp_ratio
        self._set_shape(shape, shape_policy, shape_steps)
        self._base_cache = BaseCache()
        self._shape_decoders: shaped.ShapeDecoders | None = None  # made on the first shape read

    def _set_shape(self, shape: str | None, policy: str, steps: int) -> None:
        """``shape``: a template (id, ``"default"`` or a ``.safetensors`` path) to code the scan's
        shape against; None codes texture only."""
        if policy not in SHAPE_POLICIES:
            raise InvalidInputError(f"shape_policy must be one of {SHAPE_POLICIES}, got {policy!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= 100000:
            raise InvalidInputError(f"shape_steps must be an integer in 0..100000, got {steps!r}")
        self.shape_policy, self.shape_steps = policy, steps
        self._template_path: str | None = None
        if shape is None:
            self.shape = None
            return
        if not isinstance(shape, str) or not shape:
            raise InvalidInputError(f"shape must be a template id or path, got {shape!r}")
        if self.mode == "max_error":
            raise InvalidInputError(
                "shape coding cannot keep a max_error bound (the warp moves voxels); use shape=None"
            )
        if shape.endswith(".safetensors"):
            from pathlib import Path

            from ...zoo.templates import template_id_of

            if not Path(shape).is_file():
                raise InvalidInputError(f"template file {shape} does not exist")
            self._template_path, shape = shape, template_id_of(shape)
        elif shape == "default":
            from ...zoo.registry import DEFAULT_TEMPLATE

            shape = DEFAULT_TEMPLATE
        self.shape = shape

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
        description["version"] = 4 if self.base == "av1" else 3 if self.shape is not None else 2
        if self.model is not None:
            from ...zoo.registry import find_model

            found = find_model(self.model)
            description["model"] = {"id": found.id, "sha256": found.sha256}
        return description

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
        if any(t > wavelet.MAX_EXTENT for t in grid.tile_shape):
            raise InvalidInputError(
                f"deepstd tiles may be at most {wavelet.MAX_EXTENT} voxels "
                f"along each axis, got {grid.tile_shape}"
            )
        slope = metadata.slope if metadata is not None else 1.0
        intercept = metadata.intercept if metadata is not None else 0.0
        low, high = stored_window(self.window, slope, intercept, array.dtype)
        margin = OUTLIER_MARGIN_HU / abs(slope) if self.mode != "max_error" else 0.0
        far = (low - margin, high + margin)
        # Voxels stored exactly, per tile of the scan (coded once: the ratio budget needs their size).
        exact: dict[int, bytes] = {}
        for tile in grid:
            raw = array[grid.tile_region(tile)]
            mask = outliers.outlier_mask(raw, *far)
            if mask.any():
                exact[tile] = outliers.encode(raw, mask)
        base_state = {
            "mode": self.mode,
            "stored_window": [low, high],
            "slope": float(slope),
            "intercept": float(intercept),
        }
        if self.shape is None:
            return self._encode_plain(array, grid, exact, base_state, costs, far, progress)

        from . import shaped  # torch: only when shape is coded

        spacing = metadata.spacing if metadata is not None else None
        fit = shaped.fit_shape(
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
            plain = self._encode_plain(array, grid, exact, base_state, costs, far, progress)
            plain.state["shape"] = {"used": False, "reason": fit}
            return plain
        coded = self._encode_shaped(array, grid, exact, base_state, metadata, costs, fit, progress)
        if self.shape_policy == "always":
            return coded
        plain = self._encode_plain(array, grid, exact, base_state, costs, far, progress)
        errors = [
            self._decoded_error(array, grid, candidate, metadata, progress) for candidate in (coded, plain)
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
        exact: dict[int, bytes],
        base_state: dict,
        costs: ContainerCosts,
        far: tuple[float, float],
        progress: bool,
    ) -> Encoded:
        """Texture only: the wavelet layer on the scan's own tiles."""
        low, high = base_state["stored_window"]
        exact = dict(exact)
        record = None
        if self.mode == "max_error":
            textures, rates = code_max_error(self.value, array, grid, exact, low, high, far, progress)
        else:
            coded = code_texture(
                self._texture_settings(),
                array,
                grid,
                exact,
                array.nbytes,
                0,
                costs,
                (low, high),
                far,
                progress,
            )
            textures, rates, record = coded.streams, coded.bits_per_voxel, coded.base_record
        sections = [Section(SectionKind.TEXTURE, t, payload) for t, payload in zip(grid, textures)]
        sections += [Section(SectionKind.RESIDUAL, t, exact[t]) for t in sorted(exact)]
        state = self._state(base_state, rates, exact, record)
        if self.model is not None:
            state["refine_gain"] = self._choose_gains(array, grid, sections, state, progress)
        return Encoded(iter(sections), state)

    def _encode_shaped(
        self,
        array: np.ndarray,
        grid: TileGrid,
        exact: dict[int, bytes],
        base_state: dict,
        metadata: ScanMetadata | None,
        costs: ContainerCosts,
        fit: shaped.ShapeFit,
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
        coded = code_texture(
            self._texture_settings(),
            fit.values,
            tgrid,
            exact,
            array.nbytes,
            extra,
            costs,
            base_state["stored_window"],
            (-math.inf, math.inf),
            progress,
        )
        texture_sections = [Section(SectionKind.TEXTURE, t, p) for t, p in zip(tgrid, coded.streams)]
        sections = [Section(SectionKind.SHAPE, NO_TILE, fit.code), *texture_sections]
        sections += [Section(SectionKind.RESIDUAL, t, exact[t]) for t in sorted(exact)]
        state = self._state(base_state, coded.bits_per_voxel, exact, coded.base_record)
        if self.model is not None:
            texture_state = {**state, "outlier_tiles": []}
            state["refine_gain"] = self._choose_gains(
                fit.values, tgrid, texture_sections, texture_state, progress
            )
        state["texture"] = fit.texture.to_json()
        state["shape"] = record
        return Encoded(iter(sections), state)

    def _texture_settings(self) -> TextureSettings:
        return TextureSettings(
            self.mode, self.value, self.base, self.clamp_ratio, sperr_fallback=self.base_fallback
        )

    def _state(
        self, base_state: dict, rates: list[float], exact: dict[int, bytes], base_record: dict | None
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
                "outlier_tiles": sorted(exact),
                "outlier_voxels": sum(outliers.count(exact[t]) for t in sorted(exact)),
            }
        )
        if self.mode == "ratio":
            state["target_ratio"] = self.value
        return state

    def _decoded_error(
        self,
        array: np.ndarray,
        grid: TileGrid,
        encoded: Encoded,
        metadata: ScanMetadata | None,
        progress: bool,
    ) -> float:
        """MAE (physical units) of what ``encoded`` decodes to, for the shape policy's choice."""
        sections = list(encoded.sections)
        encoded.sections = iter(sections)
        payloads = {(sec.kind, sec.tile): sec.payload for sec in sections}
        model = self.describe().get("model")
        ctx = DecodeContext(array.shape, array.dtype, grid, self.get_config(), encoded.state, model)
        slope = metadata.slope if metadata is not None else 1.0
        fetch = lambda keys: {k: payloads[k] for k in keys}  # noqa: E731
        rows = grid.tile_shape[0]
        label = "shape: comparing" if "texture" in encoded.state else "texture only: comparing"
        with bar(enabled=progress, desc=label, total=array.shape[0], unit="slice") as pbar:

            def decode(region: Region) -> np.ndarray:
                out = self.decode_region(ctx, region, fetch)
                pbar.update(region[0].stop - region[0].start)
                return out

            from .shaped import decoded_error

            error = decoded_error(decode, array, slope, rows)
        self._base_cache = BaseCache()
        self._shape_decoders = None
        return error

    def _choose_gains(
        self, array: np.ndarray, grid: TileGrid, sections: list[Section], state: dict, progress: bool
    ) -> list[int]:
        """Per refinement block, how much of the network's correction to apply: the least-squares
        gain against the original (which only the encoder has), in steps of 1/GAIN_STEPS.

        The network was trained on other scans; where its correction does not fit this one
        (measured: the 512x512 chest at 128x, where applying it whole raised the MAE), the gain
        turns it down or off, and gain 0 blocks skip the network at decode time.
        """
        low, high = state["stored_window"]
        payloads = {(sec.kind, sec.tile): sec.payload for sec in sections}
        ctx = DecodeContext(array.shape, array.dtype, grid, self.get_config(), state, None)
        blocks = DecodeState.from_context(ctx).blocks(ctx)  # exactly the decoder's blocks
        gains = []
        for number in track(range(blocks.count), enabled=progress, desc="refinement gains", unit="block"):
            region = blocks.keep(number)
            plan = self.plan_region(ctx, region, lambda keys: {k: payloads[k] for k in keys})
            ((keep, inner, base, _),) = plan.blocks
            refined = (refine_all(plan.refiner, plan.jobs)[0] - plan.state.intercept) / plan.state.slope
            correction = (refined - base)[inner]
            target = np.clip(array[region].astype(np.float64), low, high) - base[inner]
            counted = (array[region] >= low) & (array[region] <= high)
            denominator = float(np.sum(correction[counted] ** 2))
            gain = float(np.sum(correction[counted] * target[counted])) / denominator if denominator else 0.0
            gains.append(int(np.clip(round(gain * GAIN_STEPS), 0, MAX_GAIN)))
        self._base_cache = BaseCache()  # do not keep the encoder's decoded tiles alive
        return gains

    # -- decoding ------------------------------------------------------------------------------
    def decode_region(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> np.ndarray:
        if "texture" in ctx.state:  # shape-coded: the texture lies on its own grid
            if self._shape_decoders is None:
                from .shaped import ShapeDecoders

                self._shape_decoders = ShapeDecoders()
            return self._shape_decoders.get(self, ctx, fetch).decode(self, ctx, region, fetch)
        plan = self.plan_region(ctx, region, fetch)
        return plan.complete(refine_all(plan.refiner, plan.jobs))

    def plan_region(self, ctx: DecodeContext, region: Region, fetch: Fetch) -> RegionPlan:
        """Everything up to the refinement network: decode the wavelet layer, cut the crops.

        Split from :meth:`RegionPlan.complete` so that callers holding many regions (a batch of
        zarr chunks) can run the network once over all their crops.
        """
        state = DecodeState.from_context(ctx)
        refiner = self._refiner(ctx) if self.model is not None else None
        grid = ctx.grid
        # Output is computed per refinement block (per tile without a model), each from its own
        # crop, so any region is the same as that region of a full decode.
        blocks = state.blocks(ctx) if refiner is not None else Blocks(ctx.shape, grid, None, 0, "tile")
        crops = {b: blocks.crop(b) for b in blocks.in_region(region)}
        needed = sorted({t for crop in crops.values() for t in grid.tiles_in_region(crop)})
        in_region = grid.tiles_in_region(region)
        cache = self._base_cache.get(ctx)
        base = {t: b for t in needed if (b := cache.get_tile(t)) is not None}
        keys = [(SectionKind.TEXTURE, t) for t in needed if t not in base]
        keys += [(SectionKind.RESIDUAL, t) for t in in_region if t in state.outlier_tiles]
        payloads = fetch(keys)

        def base_block(tile: int) -> np.ndarray:
            if tile not in base:
                base[tile] = state.base.decode(
                    payloads[(SectionKind.TEXTURE, tile)],
                    grid.tile_extent(tile),
                    what=f"texture section of tile {tile}",
                    dtype=np.float32,
                )
                cache.put(tile, base[tile])
            return base[tile]

        plan = RegionPlan(ctx, region, state, refiner)
        for number, crop in crops.items():
            block = assemble(grid, crop, base_block)
            keep = blocks.keep(number)
            inner = tuple(slice(k.start - c.start, k.stop - c.start) for k, c in zip(keep, crop))
            gain = state.gain(number) if refiner is not None else 0
            plan.blocks.append((keep, inner, block, gain))
            if gain:
                rates = assemble(
                    grid, crop, lambda t: np.full(grid.tile_extent(t), state.rate_code(t), np.float32)
                )
                plan.jobs.append((block * state.slope + state.intercept, rates))
        for tile in in_region:
            if tile in state.outlier_tiles:
                plan.exact.append(
                    (
                        grid.tile_region(tile),
                        *outliers.decode(
                            payloads[(SectionKind.RESIDUAL, tile)],
                            grid.tile_extent(tile),
                            ctx.dtype,
                            f"residual section of tile {tile}",
                        ),
                    )
                )
        return plan

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
