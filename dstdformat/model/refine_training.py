"""Training the refinement network: pairs of (wavelet-decoded, original) CT crops at several rates.

Each training volume is clipped to the HU window and coded with the codec's own wavelet layer
(same tiles) at every training ratio, once, before training. The loss is the mean absolute error
in HU / 1000, the metric users compare codecs by. Runs are seeded and resumable: checkpoints hold
the network, the optimizer and the sampler's random state (safetensors + JSON, never pickle).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..progress import bar, track
from .checkpoint import TrainingRun
from .refine import HU_SCALE, Refiner, RefinerConfig, rate_code
from .training import HU_WINDOW, load_training_volumes, resolve_device
from .weights import load_state, save_state
from .zoo import file_sha256


@dataclass
class RefinerTrainConfig:
    sources: list[str]
    out: str
    steps: int = 20000
    batch_size: int = 4
    crop: tuple[int, int, int] = (32, 64, 64)
    ratios: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)
    learning_rate: float = 3e-4
    seed: int = 0
    checkpoint_every: int = 250
    model: dict = field(default_factory=dict)  # RefinerConfig fields
    device: str = "auto"
    #: Wavelet tiles of the training pairs. deepstd-refine-v1 was trained with 128-slice tiles
    #: (the codec's tiles at the time; now at most 64), kept so its recorded command reproduces it.
    tile_shape: tuple[int, int, int] = (128, 512, 512)
    #: Weight of (1 - SSIM) beside the MAE in HU / 1000: MAE alone leaves SSIM where it was.
    ssim_weight: float = 1.0
    #: Held-out volumes evaluated (MAE before/after) at every checkpoint.
    eval_sources: list[str] = field(default_factory=list)


@dataclass
class CodedVolume:
    original: np.ndarray  # float32 HU, clipped to the window
    decoded: np.ndarray  # float32 HU, wavelet layer output
    rate: float  # rate code the network is told
    ratio: float


def code_volume(hu: np.ndarray, ratio: float, tile_shape: Sequence[int]) -> CodedVolume:
    """Clip and code ``hu`` tile by tile with the codec's wavelet layer at 16/ratio bits per voxel."""
    from ..codecs.deepstd import wavelet
    from ..container.tiling import TileGrid, default_tile_shape

    clipped = np.clip(hu.astype(np.float64), *HU_WINDOW)
    grid = TileGrid(hu.shape, default_tile_shape(hu.shape, tile_shape, balanced=True))
    decoded = np.empty(hu.shape, dtype=np.float32)
    bpv = 16.0 / ratio
    for tile in grid:
        region = grid.tile_region(tile)
        block = clipped[region]
        decoded[region] = wavelet.decode(wavelet.encode_bits_per_voxel(block, bpv), block.shape)
    return CodedVolume(clipped.astype(np.float32), decoded, rate_code(bpv), float(ratio))


class PairSampler:
    """Random aligned crops of (decoded, original) with left-right / front-back flips."""

    def __init__(self, coded: Sequence[CodedVolume], crop: tuple[int, int, int],
                 rng: np.random.Generator) -> None:
        self.coded = [c for c in coded if all(s >= k for s, k in zip(c.original.shape, crop))]
        if not self.coded:
            raise ValueError(f"no training volume is at least {crop} voxels")
        self.crop, self.rng = crop, rng

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = np.empty((batch, 1, *self.crop), dtype=np.float32)
        y = np.empty_like(x)
        rates = np.empty_like(x)
        for b in range(batch):
            c = self.coded[self.rng.integers(len(self.coded))]
            start = [self.rng.integers(0, s - k + 1) for s, k in zip(c.original.shape, self.crop)]
            region = tuple(slice(s, s + k) for s, k in zip(start, self.crop))
            dec, orig = c.decoded[region], c.original[region]
            for axis in (1, 2):
                if self.rng.random() < 0.5:
                    dec, orig = np.flip(dec, axis), np.flip(orig, axis)
            x[b, 0], y[b, 0], rates[b, 0] = dec / HU_SCALE, orig / HU_SCALE, c.rate
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(rates)


SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # as dstdformat.metrics (truncate 3.5 sigma)
SSIM_RANGE = (HU_WINDOW[1] - HU_WINDOW[0]) / HU_SCALE


def _gaussian_kernel(device: torch.device) -> torch.Tensor:
    r = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (r / SSIM_SIGMA) ** 2)
    return k / k.sum()


def ssim_3d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean 3D SSIM (Gaussian window, valid part only) of (B, 1, D, H, W) tensors in HU / 1000,
    clipped to the window like the evaluation metric."""
    lo, hi = HU_WINDOW[0] / HU_SCALE, HU_WINDOW[1] / HU_SCALE
    x, y = x.clamp(lo, hi), y.clamp(lo, hi)
    k = _gaussian_kernel(x.device)

    def blur(v: torch.Tensor) -> torch.Tensor:
        v = torch.nn.functional.conv3d(v, k.view(1, 1, -1, 1, 1))
        v = torch.nn.functional.conv3d(v, k.view(1, 1, 1, -1, 1))
        return torch.nn.functional.conv3d(v, k.view(1, 1, 1, 1, -1))

    c1, c2 = (0.01 * SSIM_RANGE) ** 2, (0.03 * SSIM_RANGE) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean()


def evaluate(refiner: Refiner, coded: Sequence[CodedVolume], device: torch.device,
             slab: int = 32) -> dict[str, float]:
    """MAE in HU of the wavelet layer alone and refined, per held-out (volume, rate)."""
    refiner.eval()
    results = {}
    for n, c in enumerate(coded):
        refined = np.empty_like(c.decoded)
        for start in range(0, c.decoded.shape[0], slab):
            part = c.decoded[start:start + slab]
            refined[start:start + slab] = refiner.refine(part, np.full(part.shape, c.rate), device)
        refined = np.rint(np.clip(refined, *HU_WINDOW))
        base = np.rint(c.decoded)
        key = f"volume{n}@{c.ratio:g}x"
        results[key + ":base"] = float(np.abs(base - c.original).mean())
        results[key + ":refined"] = float(np.abs(refined - c.original).mean())
        results[key + ":base_ssim"] = metrics.ssim(c.original, base)
        results[key + ":refined_ssim"] = metrics.ssim(c.original, refined)
    refiner.train()
    return results


def train_refiner(config: RefinerTrainConfig, *, progress: bool = False,
                  volumes: Sequence[np.ndarray] | None = None) -> dict:
    """Train (or resume) into ``config.out``; returns the last log entry."""
    if config.ssim_weight and min(config.crop) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"crops must be at least {2 * SSIM_RADIUS + 1} voxels along each axis for "
                         f"the SSIM term, got {tuple(config.crop)}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    refiner = Refiner(RefinerConfig(**config.model)).to(device)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    run = TrainingRun(config.out, refiner, optimizer, rng, asdict(config))
    run.resume()
    hu_volumes = volumes if volumes is not None else load_training_volumes(config.sources)
    pairs = [code_volume(v, r, config.tile_shape)
             for v in track(hu_volumes, enabled=progress, desc="coding training volumes", unit="vol")
             for r in config.ratios]
    held_out = [code_volume(v, r, config.tile_shape)
                for v in (load_training_volumes(config.eval_sources) if config.eval_sources else [])
                for r in (128.0, 256.0)]
    sampler = PairSampler(pairs, config.crop, rng)
    refiner.train()
    losses: list[float] = []
    with bar(enabled=progress, desc="training refiner", total=config.steps, unit="step") as pbar:
        pbar.update(run.step)
        while run.step < config.steps:
            x, y, rates = (t.to(device) for t in sampler.sample(config.batch_size))
            refined = refiner(x, rates)
            loss = (refined - y).abs().mean()
            if config.ssim_weight:
                loss = loss + config.ssim_weight * (1.0 - ssim_3d(refined, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(refiner.parameters(), 1.0)
            optimizer.step()
            run.step += 1
            losses.append(float((refined.detach() - y).abs().mean()) * HU_SCALE)
            pbar.update(1)
            if run.step % config.checkpoint_every == 0 or run.step == config.steps:
                entry = {"step": run.step, "train_mae_hu": float(np.mean(losses))}
                losses.clear()
                if held_out:
                    entry["held_out_mae_hu"] = evaluate(refiner, held_out, device)
                run.history.append(entry)
                pbar.set_postfix_str(f"train MAE {entry['train_mae_hu']:.2f} HU")
                run.save()
    return run.history[-1] if run.history else {}


def export_model(run_dir: str | Path, model_id: str, dest: str | Path,
                 extra: dict | None = None) -> Path:
    """Write ``<dest>/<model_id>.safetensors`` (network only) and ``.json`` from a training run."""
    run_dir, dest = Path(run_dir), Path(dest)
    meta = json.loads((run_dir / "checkpoint.json").read_text())
    refiner = Refiner(RefinerConfig(**meta["train_config"]["model"]))
    load_state(run_dir / "checkpoint.safetensors", refiner)
    dest.mkdir(parents=True, exist_ok=True)
    weights = dest / f"{model_id}.safetensors"
    save_state(weights, refiner)
    description = {
        "id": model_id,
        "kind": "deepstd-refiner",
        "architecture": refiner.config.to_json(),
        "sha256": file_sha256(weights),
        "training": {"steps": meta["step"], "wall_time_s": round(meta["elapsed_s"], 1),
                     "config": meta["train_config"], "history": meta["history"]},
        **(extra or {}),
    }
    config = description["training"]["config"]
    config.pop("out", None)
    # File names only: where the data sat on the training machine means nothing elsewhere.
    for key in ("sources", "eval_sources"):
        config[key] = [Path(s).name for s in config.get(key, [])]
    tmp = weights.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(description, indent=1))
    os.replace(tmp, weights.with_suffix(".json"))
    return weights
