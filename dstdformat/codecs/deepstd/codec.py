"""The ``deepstd`` codec: base layer (AV1 or SPERR) + learned refinement + exact outliers, per tile.

Encoding clips each tile to the HU window, stores the voxels outside it exactly (RESIDUAL
sections) and codes the clipped tile with the base layer (TEXTURE sections) at the rate that
rate control picks. Decoding an output tile decodes the base-layer tiles under it plus a halo,
refines that block with the learned network, keeps the tile and puts the exact voxels back.
Every output tile is computed the same way whichever region asked for it, so a region read equals
the same region of a full read bit for bit.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...container.format import NO_TILE, SectionKind
from ...container.tiling import Region, TileGrid, default_tile_shape, overlap_slices
from ...errors import CorruptHeaderError, InvalidInputError
from ...metadata import ScanMetadata
from ...progress import bar, track
from ..base import DecodeContext, Encoded, Fetch, Section, VolumeCodec
from . import base_layers, outliers, wavelet
from .texture_coding import TextureSettings, code_max_error, code_texture
from .texture_coding import to_dtype as _to_dtype

if TYPE_CHECKING:
    from . import shaped

#: The CT window the wavelet layer codes, in HU: air to dense bone.
DEFAULT_WINDOW = (-1024.0, 3071.0)
DEFAULT_RATIO = 256.0
#: Voxels of wavelet-decoded context around each output tile that the refiner sees.
HALO = 8
#: Output blocks of the refinement: small enough that reading one slice refines little more than
#: that slice's neighbourhood, large enough that the halo adds ~70% compute, not 200%.
REFINE_BLOCK = (32, 256, 256)
#: How refinement blocks are laid out in files written now (see _Blocks).
REFINE_LAYOUT = "tile"
#: Refinement gains are k / GAIN_STEPS for k in 0..MAX_GAIN, one per block, chosen by the encoder.
GAIN_STEPS, MAX_GAIN = 8, 16
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

    def __init__(self, ratio: float | None = None, quality: float | None = None,
                 max_error: float | None = None, window: tuple[float, float] = DEFAULT_WINDOW,
                 model: str | None = "auto", device: str = "auto",
                 clamp_ratio: bool = False, shape: str | None = None, shape_policy: str = "best",
                 shape_steps: int = 2500, base: str = "auto") -> None:
        given = {k: v for k, v in (("ratio", ratio), ("quality", quality), ("max_error", max_error))
                 if v is not None}
        if len(given) > 1:
            raise InvalidInputError(f"give at most one of ratio, quality, max_error; got {sorted(given)}")
        if not given:
            given = {"ratio": DEFAULT_RATIO}
        (self.mode, value), = given.items()
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
            raise InvalidInputError(f"model must be a model id, a .safetensors path or None, "
                                    f"got {model!r}")
        if not isinstance(device, str):
            raise InvalidInputError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', "
                                    f"got {device!r}")
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
        self._base_cache = _BaseCache()
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
            raise InvalidInputError("shape coding cannot keep a max_error bound (the warp moves "
                                    "voxels); use shape=None")
        if shape.endswith(".safetensors"):
            from pathlib import Path

            from ...model.template import template_id_of

            if not Path(shape).is_file():
                raise InvalidInputError(f"template file {shape} does not exist")
            self._template_path, shape = shape, template_id_of(shape)
        elif shape == "default":
            from ...model.zoo import DEFAULT_TEMPLATE

            shape = DEFAULT_TEMPLATE
        self.shape = shape

    # -- configuration -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = {self.mode: self.value, "window": list(self.window), "model": self.model,
                  "base": self.base}
        if self.shape is not None:
            config |= {"shape": self.shape, "shape_policy": self.shape_policy,
                       "shape_steps": self.shape_steps}
        return config

    def describe(self) -> dict[str, Any]:
        description = super().describe()
        # Version 2 readers do not know shape-coded files; texture-only files stay version 2.
        description["version"] = 4 if self.base == "av1" else 3 if self.shape is not None else 2
        if self.model is not None:
            from ...model.zoo import find_model

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
            raise InvalidInputError("deepstd cannot code NaN or infinite voxels; "
                                    "replace them or use the lossless codec")

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, array: np.ndarray, grid: TileGrid, *, progress: bool = False,
               metadata: ScanMetadata | None = None) -> Encoded:
        self.check_array(array)
        if self.model is not None:  # fail before minutes of encoding, not after
            from ...model.zoo import find_model

            find_model(self.model)
        if any(t > wavelet.MAX_EXTENT for t in grid.tile_shape):
            raise InvalidInputError(f"deepstd tiles may be at most {wavelet.MAX_EXTENT} voxels "
                                    f"along each axis, got {grid.tile_shape}")
        slope = metadata.slope if metadata is not None else 1.0
        intercept = metadata.intercept if metadata is not None else 0.0
        low, high = _stored_window(self.window, slope, intercept, array.dtype)
        margin = OUTLIER_MARGIN_HU / abs(slope) if self.mode != "max_error" else 0.0
        far = (low - margin, high + margin)
        # Voxels stored exactly, per tile of the scan (coded once: the ratio budget needs their size).
        exact: dict[int, bytes] = {}
        for tile in grid:
            raw = array[grid.tile_region(tile)]
            mask = outliers.outlier_mask(raw, *far)
            if mask.any():
                exact[tile] = outliers.encode(raw, mask)
        base_state = {"mode": self.mode, "stored_window": [low, high], "slope": float(slope),
                      "intercept": float(intercept)}
        if self.shape is None:
            return self._encode_plain(array, grid, exact, base_state, metadata, far, progress)

        from . import shaped  # torch: only when shape is coded

        spacing = metadata.spacing if metadata is not None else None
        fit = shaped.fit_shape(array, spacing, slope, intercept, (low, high),
                               self._template_path or self.shape, self.shape_steps,
                               self.preferred_tile_shape, progress)
        if isinstance(fit, str):
            plain = self._encode_plain(array, grid, exact, base_state, metadata, far, progress)
            plain.state["shape"] = {"used": False, "reason": fit}
            return plain
        coded = self._encode_shaped(array, grid, exact, base_state, metadata, fit, progress)
        if self.shape_policy == "always":
            return coded
        plain = self._encode_plain(array, grid, exact, base_state, metadata, far, progress)
        errors = [self._decoded_error(array, grid, candidate, metadata, progress)
                  for candidate in (coded, plain)]
        if errors[0] < errors[1]:
            coded.state["shape"]["mae_texture_only"] = round(errors[1], 3)
            coded.state["shape"]["mae"] = round(errors[0], 3)
            return coded
        plain.state["shape"] = {"used": False, "reason": (
            f"texture only decodes closer: MAE {errors[1]:.2f} against {errors[0]:.2f} with the "
            f"shape at the same budget"), "registration": fit.record}
        return plain

    def _encode_plain(self, array: np.ndarray, grid: TileGrid, exact: dict[int, bytes],
                      base_state: dict, metadata: ScanMetadata | None,
                      far: tuple[float, float], progress: bool) -> Encoded:
        """Texture only: the wavelet layer on the scan's own tiles."""
        low, high = base_state["stored_window"]
        exact = dict(exact)
        record = None
        if self.mode == "max_error":
            textures, rates = code_max_error(self.value, array, grid, exact, low, high, far, progress)
        else:
            coded = code_texture(self._texture_settings(), array, grid, exact, array.nbytes, 0,
                                 metadata, (low, high), far, progress)
            textures, rates, record = coded.streams, coded.bits_per_voxel, coded.base_record
        sections = [Section(SectionKind.TEXTURE, t, payload) for t, payload in zip(grid, textures)]
        sections += [Section(SectionKind.RESIDUAL, t, exact[t]) for t in sorted(exact)]
        state = self._state(base_state, rates, exact, record)
        if self.model is not None:
            state["refine_gain"] = self._choose_gains(array, grid, sections, state, progress)
        return Encoded(iter(sections), state)

    def _encode_shaped(self, array: np.ndarray, grid: TileGrid, exact: dict[int, bytes],
                       base_state: dict, metadata: ScanMetadata | None, fit: shaped.ShapeFit,
                       progress: bool) -> Encoded:
        """Shape section + texture tiles on the texture grid + exact voxels on the scan's grid."""
        tgrid = fit.texture.grid
        record = {"used": True, **fit.record,
                  "scan_spacing": [float(s) for s in metadata.spacing],  # type: ignore[union-attr]
                  "shape_bytes": len(fit.code)}
        extra = len(fit.code) + len(json.dumps({"shape": record, "texture": fit.texture.to_json()}))
        coded = code_texture(self._texture_settings(), fit.values, tgrid, exact, array.nbytes, extra,
                             metadata, base_state["stored_window"], (-math.inf, math.inf), progress)
        texture_sections = [Section(SectionKind.TEXTURE, t, p) for t, p in zip(tgrid, coded.streams)]
        sections = [Section(SectionKind.SHAPE, NO_TILE, fit.code), *texture_sections]
        sections += [Section(SectionKind.RESIDUAL, t, exact[t]) for t in sorted(exact)]
        state = self._state(base_state, coded.bits_per_voxel, exact, coded.base_record)
        if self.model is not None:
            texture_state = {**state, "outlier_tiles": []}
            state["refine_gain"] = self._choose_gains(fit.values, tgrid, texture_sections,
                                                      texture_state, progress)
        state["texture"] = fit.texture.to_json()
        state["shape"] = record
        return Encoded(iter(sections), state)

    def _texture_settings(self) -> TextureSettings:
        return TextureSettings(self.mode, self.value, self.base, self.clamp_ratio,
                               sperr_fallback=self.base_fallback)

    def _state(self, base_state: dict, rates: list[float], exact: dict[int, bytes],
               base_record: dict | None) -> dict:
        state = dict(base_state)
        if base_record is not None:
            state["base"] = base_record
        state.update({
            "halo": HALO if self.model is not None else 0,
            "refine_block": list(REFINE_BLOCK),
            "refine_layout": REFINE_LAYOUT,
            "bits_per_voxel": [round(r, 6) for r in rates],
            "outlier_tiles": sorted(exact),
            "outlier_voxels": sum(outliers.count(exact[t]) for t in sorted(exact)),
        })
        if self.mode == "ratio":
            state["target_ratio"] = self.value
        return state

    def _decoded_error(self, array: np.ndarray, grid: TileGrid, encoded: Encoded,
                       metadata: ScanMetadata | None, progress: bool) -> float:
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
        self._base_cache = _BaseCache()
        self._shape_decoders = None
        return error

    def _choose_gains(self, array: np.ndarray, grid: TileGrid, sections: list[Section], state: dict,
                      progress: bool) -> list[int]:
        """Per refinement block, how much of the network's correction to apply: the least-squares
        gain against the original (which only the encoder has), in steps of 1/GAIN_STEPS.

        The network was trained on other scans; where its correction does not fit this one
        (measured: the 512x512 chest at 128x, where applying it whole raised the MAE), the gain
        turns it down or off, and gain 0 blocks skip the network at decode time.
        """
        low, high = state["stored_window"]
        payloads = {(sec.kind, sec.tile): sec.payload for sec in sections}
        ctx = DecodeContext(array.shape, array.dtype, grid, self.get_config(), state, None)
        blocks = _DecodeState.from_context(ctx).blocks(ctx)  # exactly the decoder's blocks
        gains = []
        for number in track(range(blocks.count), enabled=progress, desc="refinement gains",
                            unit="block"):
            region = blocks.keep(number)
            plan = self.plan_region(ctx, region, lambda keys: {k: payloads[k] for k in keys})
            (keep, inner, base, _), = plan.blocks
            refined = (refine_all(plan.refiner, plan.jobs)[0] - plan.state.intercept) / plan.state.slope
            correction = (refined - base)[inner]
            target = np.clip(array[region].astype(np.float64), low, high) - base[inner]
            counted = (array[region] >= low) & (array[region] <= high)
            denominator = float(np.sum(correction[counted] ** 2))
            gain = float(np.sum(correction[counted] * target[counted])) / denominator if denominator else 0.0
            gains.append(int(np.clip(round(gain * GAIN_STEPS), 0, MAX_GAIN)))
        self._base_cache = _BaseCache()  # do not keep the encoder's decoded tiles alive
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
        state = _DecodeState.from_context(ctx)
        refiner = self._refiner(ctx) if self.model is not None else None
        grid = ctx.grid
        # Output is computed per refinement block (per tile without a model), each from its own
        # crop, so any region is the same as that region of a full decode.
        blocks = state.blocks(ctx) if refiner is not None else _Blocks(ctx.shape, grid, None, 0, "tile")
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
                base[tile] = state.base.decode(payloads[(SectionKind.TEXTURE, tile)],
                                               grid.tile_extent(tile),
                                               what=f"texture section of tile {tile}", dtype=np.float32)
                cache.put(tile, base[tile])
            return base[tile]

        plan = RegionPlan(ctx, region, state, refiner)
        for number, crop in crops.items():
            block = _assemble(grid, crop, base_block)
            keep = blocks.keep(number)
            inner = tuple(slice(k.start - c.start, k.stop - c.start) for k, c in zip(keep, crop))
            gain = state.gain(number) if refiner is not None else 0
            plan.blocks.append((keep, inner, block, gain))
            if gain:
                rates = _assemble(grid, crop, lambda t: np.full(grid.tile_extent(t),
                                                                state.rate_code(t), np.float32))
                plan.jobs.append((block * state.slope + state.intercept, rates))
        for tile in in_region:
            if tile in state.outlier_tiles:
                plan.exact.append((grid.tile_region(tile), *outliers.decode(
                    payloads[(SectionKind.RESIDUAL, tile)], grid.tile_extent(tile), ctx.dtype,
                    f"residual section of tile {tile}")))
        return plan

    def slab_alignment(self, ctx: DecodeContext) -> int:
        """Refinement blocks, when there is a model: a slab edge inside a block would make both
        slabs run the network on it."""
        if "texture" in ctx.state:
            return 0  # shape-coded: blocks are on the texture grid, kept across slabs by a cache
        state = _DecodeState.from_context(ctx)
        if self.model is None or state.layout == "tile":
            return 0  # blocks never cross tiles: whole tile rows are the natural slabs
        return int(state.block[0])

    def _refiner(self, ctx: DecodeContext):
        from ...model.zoo import find_model
        from .refiner_cache import load_refiner

        recorded = ctx.model or {}
        found = find_model(self.model, recorded.get("sha256"))
        return load_refiner(found, self.device)


class RegionPlan:
    """A region whose wavelet layer is decoded and whose refinement inputs are cut (``jobs``:
    (HU crop, rate-code crop) per block); :meth:`complete` takes the network's outputs."""

    def __init__(self, ctx: DecodeContext, region: Region, state: _DecodeState, refiner) -> None:
        self.ctx, self.region, self.state, self.refiner = ctx, region, state, refiner
        # (kept region, its slices in the crop, wavelet-decoded crop, gain step); gain > 0 blocks
        # have a job, in order.
        self.blocks: list[tuple[Region, Region, np.ndarray, int]] = []
        self.jobs: list[tuple[np.ndarray, np.ndarray]] = []
        self.exact: list[tuple[Region, np.ndarray, np.ndarray]] = []

    def complete(self, refined: list[np.ndarray]) -> np.ndarray:
        ctx, region, state = self.ctx, self.region, self.state
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=ctx.dtype)
        jobs = iter(refined)
        for keep, inner, block, gain in self.blocks:
            block = block[inner]
            if gain:
                correction = (next(jobs)[inner] - state.intercept) / state.slope - block
                block = block + (gain / GAIN_STEPS) * correction
            _paste(out, region, _to_dtype(block, ctx.dtype, *state.window), keep)
        for tile_region, index, values in self.exact:
            _scatter(out, region, tile_region, index, values)
        return out


def refine_all(refiner, jobs: list[tuple[np.ndarray, np.ndarray]], batch: int = 1) -> list[np.ndarray]:
    """Run the network over ``jobs``, ``batch`` same-shaped crops at a time (order kept).

    Every crop is computed the same way alone or in a batch (per-sample convolutions), up to
    floating-point reduction order."""
    if refiner is None or not jobs:
        return []
    out: list[np.ndarray | None] = [None] * len(jobs)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for n, (hu, _) in enumerate(jobs):
        by_shape.setdefault(hu.shape, []).append(n)
    for indices in by_shape.values():
        for start in range(0, len(indices), max(1, batch)):
            group = indices[start:start + max(1, batch)]
            results = refiner.refine_many([jobs[n] for n in group], refiner.device)
            for n, result in zip(group, results):
                out[n] = result
    return out  # type: ignore[return-value]


class _BaseCache:
    """The last few decoded wavelet tiles of one file: a full read asks for each tile's
    neighbours as halo, and slice-by-slice readers ask for the same tile again and again."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self.owner: DecodeContext | None = None
        self.tiles: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # threads read regions of one volume at once

    def get(self, ctx: DecodeContext) -> _BaseCache:
        with self._lock:
            if self.owner is not ctx:
                self.owner, self.tiles = ctx, OrderedDict()
        return self

    def get_tile(self, tile: int) -> np.ndarray | None:
        with self._lock:
            block = self.tiles.get(tile)
            if block is not None:
                self.tiles.move_to_end(tile)
            return block

    def put(self, tile: int, block: np.ndarray) -> None:
        with self._lock:
            self.tiles[tile] = block
            self.tiles.move_to_end(tile)
            while len(self.tiles) > self.capacity:
                self.tiles.popitem(last=False)


class _DecodeState:
    """The codec state of a file, checked once per read."""

    def __init__(self, window, slope, intercept, halo, rates, outlier_tiles, block, gains,
                 layout, base: base_layers.BaseLayer) -> None:
        self.base = base
        self.window, self.slope, self.intercept = window, slope, intercept
        self.halo, self.rates, self.outlier_tiles, self.block = halo, rates, outlier_tiles, block
        self.gains, self.layout = gains, layout

    def blocks(self, ctx: DecodeContext) -> _Blocks:
        return _Blocks(ctx.shape, ctx.grid, self.block, self.halo, self.layout)

    def gain(self, block: int) -> int:
        return self.gains[block]

    @classmethod
    def from_context(cls, ctx: DecodeContext) -> _DecodeState:
        s = ctx.state
        try:
            low, high = (float(v) for v in s["stored_window"])
            slope, intercept = float(s["slope"]), float(s["intercept"])
            halo = int(s["halo"])
            rates = [float(r) for r in s["bits_per_voxel"]]
            outlier_tiles = {int(t) for t in s["outlier_tiles"]}
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CorruptHeaderError(f"deepstd codec state is incomplete or malformed: {exc}") from None
        if not all(math.isfinite(v) for v in (low, high, slope, intercept)):
            raise CorruptHeaderError("deepstd codec state has a non-finite window or scaling")
        if len(rates) != ctx.grid.n_tiles or not 0 <= halo <= 64 or slope == 0 or not low < high \
                or any(not 0 <= t < ctx.grid.n_tiles for t in outlier_tiles) \
                or any(not (r > 0 and math.isfinite(r)) for r in rates):
            raise CorruptHeaderError("deepstd codec state does not match the tile grid")
        block = s.get("refine_block", REFINE_BLOCK)
        if not (isinstance(block, (list, tuple)) and len(block) == 3
                and all(isinstance(b, int) and 1 <= b <= 4096 for b in block)):
            raise CorruptHeaderError(f"deepstd refine_block must be 3 integers in 1..4096, got {block!r}")
        layout = s.get("refine_layout", "volume")  # codec version 1 files
        if layout not in ("volume", "tile"):
            raise CorruptHeaderError(f"deepstd refine_layout must be 'volume' or 'tile', got {layout!r}")
        blocks = _Blocks(ctx.shape, ctx.grid, tuple(block), halo, layout).count
        gains = s.get("refine_gain", [GAIN_STEPS] * blocks)
        if not (isinstance(gains, list) and len(gains) == blocks
                and all(isinstance(g, int) and 0 <= g <= MAX_GAIN for g in gains)):
            raise CorruptHeaderError(f"deepstd refine_gain must be {blocks} integers in 0..{MAX_GAIN}")
        base = base_layers.BaseLayer.from_state(dict(s), ctx.grid.n_tiles)
        return cls((low, high), slope, intercept, halo, rates, outlier_tiles, tuple(block), gains,
                   layout, base)

    def rate_code(self, tile: int) -> float:
        from ...model.refine import rate_code

        return rate_code(self.rates[tile])


class _Blocks:
    """The refinement blocks of a volume: numbering, the region each one outputs, and the crop
    (that region plus the halo) the network reads for it.

    Layout "tile" (what the encoder writes): blocks split each wavelet tile into equal parts,
    numbered tile by tile, and the halo stops at the tile's edge, so a region read fetches and
    decodes only the tiles under it. Layout "volume" (files written before it; still read): one
    block grid over the whole volume, halos reaching into neighbouring tiles. ``block=None``: one
    block per tile (no refinement).
    """

    def __init__(self, shape: tuple[int, ...], grid: TileGrid, block: tuple[int, ...] | None,
                 halo: int, layout: str) -> None:
        self.shape, self.grid, self.halo = tuple(shape), grid, halo
        self.whole_volume = layout == "volume" and block is not None
        if self.whole_volume:
            assert block is not None
            self.volume_grid = TileGrid(self.shape, tuple(min(b, n) for b, n in zip(block, shape)))  # type: ignore[arg-type]
            self.count = self.volume_grid.n_tiles
            return
        self.local: list[TileGrid] = []
        self.first: list[int] = []
        count = 0
        for tile in range(grid.n_tiles):
            extent = grid.tile_extent(tile)
            local = TileGrid(extent, default_tile_shape(extent, block, balanced=True)
                             if block is not None else extent)
            self.local.append(local)
            self.first.append(count)
            count += local.n_tiles
        self.count = count

    def _tile_of(self, number: int) -> tuple[int, int]:
        tile = bisect.bisect_right(self.first, number) - 1
        return tile, number - self.first[tile]

    def keep(self, number: int) -> Region:
        if self.whole_volume:
            return self.volume_grid.tile_region(number)
        tile, local = self._tile_of(number)
        origin = self.grid.tile_region(tile)
        return tuple(slice(o.start + r.start, o.start + r.stop)  # type: ignore[return-value]
                     for o, r in zip(origin, self.local[tile].tile_region(local)))

    def crop(self, number: int) -> Region:
        """The block grown by the halo, inside the volume (layout "volume") or its tile."""
        bounds = (tuple(slice(0, n) for n in self.shape) if self.whole_volume
                  else self.grid.tile_region(self._tile_of(number)[0]))
        return _grow(self.keep(number), self.halo, bounds)  # type: ignore[arg-type]

    def in_region(self, region: Region) -> list[int]:
        if self.whole_volume:
            return list(self.volume_grid.tiles_in_region(region))
        out = []
        for tile in self.grid.tiles_in_region(region):
            local, _ = overlap_slices(region, self.grid.tile_region(tile))  # tile coordinates
            out += [self.first[tile] + b for b in self.local[tile].tiles_in_region(local)]
        return out


def _stored_window(window: tuple[float, float], slope: float, intercept: float,
                   dtype: np.dtype) -> tuple[float, float]:
    """The HU window in stored units, inside what the dtype can hold."""
    if slope == 0:
        raise InvalidInputError("metadata slope is 0: the stored values carry no intensity")
    low, high = sorted((w - intercept) / slope for w in window)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(math.ceil(low), info.min), min(math.floor(high), info.max)
        if low >= high:
            raise InvalidInputError(f"the HU window {window} is outside what {dtype.name} stores "
                                    f"with slope {slope} and intercept {intercept}")
    return float(low), float(high)


def _grow(region: Region, halo: int, bounds: Region) -> Region:
    """``region`` grown by ``halo`` on every side, clipped to ``bounds``."""
    return tuple(slice(max(b.start, r.start - halo), min(b.stop, r.stop + halo))  # type: ignore[return-value]
                 for r, b in zip(region, bounds))


def _assemble(grid: TileGrid, crop: Region, block_of) -> np.ndarray:
    out = None
    for tile in grid.tiles_in_region(crop):
        block = block_of(tile)
        if out is None:
            out = np.empty(tuple(r.stop - r.start for r in crop), dtype=block.dtype)
        src, dst = overlap_slices(crop, grid.tile_region(tile))
        out[dst] = block[src]
    assert out is not None
    return out


def _scatter(out: np.ndarray, region: Region, tile_region: Region, flat_index: np.ndarray,
             values: np.ndarray) -> None:
    """Write a tile's exact voxels (flat C-order indices in the tile) that fall inside ``region``."""
    extent = tuple(t.stop - t.start for t in tile_region)
    coords = np.unravel_index(flat_index, extent)
    inside = np.ones(len(flat_index), dtype=bool)
    local = []
    for c, r, t in zip(coords, region, tile_region):
        absolute = c + t.start
        inside &= (absolute >= r.start) & (absolute < r.stop)
        local.append(absolute - r.start)
    out[tuple(c[inside] for c in local)] = values[inside]


def _paste(out: np.ndarray, region: Region, values: np.ndarray, tile_region: Region) -> None:
    src, dst = overlap_slices(region, tile_region)
    out[dst] = values[src]
