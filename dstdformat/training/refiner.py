"""Training the refinement network: pairs of (SPERR-decoded, original) CT crops at several rates.

Each training volume is clipped to the HU window and coded with the codec's own SPERR layer
(same tiles) at every training ratio, once, before training. The loss is the mean absolute error
in HU / 1000, the metric users compare codecs by. Runs are seeded and resumable: checkpoints hold
the network, the optimizer and the sampler's random state (safetensors + JSON, never pickle).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import metrics
from ..metadata import HU_WINDOW
from ..model.device import resolve_device
from ..model.refine import HU_SCALE, Refiner, RefinerConfig
from ..progress import bar, track
from ..zoo.registry import file_sha256
from ..zoo.weights import load_state, save_state
from .checkpoint import TrainingRun
from .data import load_training_volumes
from .pairs import CodedVolume, PairSampler, code_volume


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
    #: Start from this model's weights (id or .safetensors path); its architecture replaces ``model``.
    init_from: str | None = None
    #: Distillation: also pull the output toward this model's (weight ``teacher_weight``), which
    #: keeps a network fine-tuned on a handful of scans close to one trained on many.
    teacher: str | None = None
    teacher_weight: float = 0.0
    #: "flips" (left-right, front-back) or "strong" (all three axes, and in-plane transposition
    #: when the crop is square): more distinct crops from few scans.
    augment: str = "flips"
    #: Processes for DistributedDataParallel (one per GPU; gloo on the CPU). None: every GPU when
    #: there are several, else 1.
    world_size: int | None = None
    #: Base layer the training pairs are coded with ("av1": the codec's default; deepstd-refine-v1
    #: was trained on "sperr").
    base: str = "av1"


#: Distillation weight when a teacher is named without one.
DEFAULT_TEACHER_WEIGHT = 0.5
#: Tiles of the training pairs on the AV1 base: the codec's own (64-slice closed sequences).
AV1_PAIR_TILES = (64, 512, 512)


def refiner_settings(*, base: str = "av1", limited_data: bool = False, **given: object) -> dict:
    """RefinerTrainConfig fields for a run: its defaults, the limited-data recipe when asked, then
    the fields the user gave (None: not given), with pairs on the tiles the base layer's files use."""
    settings: dict = {"steps": RefinerTrainConfig.steps, "learning_rate": RefinerTrainConfig.learning_rate}
    if limited_data:
        settings.update(limited_data_settings())
    settings.update({k: v for k, v in given.items() if v is not None})
    if settings.get("teacher") and "teacher_weight" not in settings:
        settings["teacher_weight"] = DEFAULT_TEACHER_WEIGHT
    if base == "av1":
        settings.update({"base": "av1", "tile_shape": AV1_PAIR_TILES})
    else:
        settings["base"] = "sperr"
    return settings


def limited_data_settings(model_id: str | None = None) -> dict:
    """RefinerTrainConfig fields for a small collection: fine-tune the shipped network with
    distillation from it and strong augmentation, at a lower rate and for fewer steps."""
    from ..zoo.registry import DEFAULT_MODEL

    model_id = model_id or DEFAULT_MODEL
    return {
        "init_from": model_id,
        "teacher": model_id,
        "teacher_weight": 0.5,
        "augment": "strong",
        "learning_rate": 1e-4,
        "steps": 1500,
    }


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


def evaluate(
    refiner: Refiner, coded: Sequence[CodedVolume], device: torch.device, slab: int = 32
) -> dict[str, float]:
    """MAE in HU of the SPERR layer alone and refined, per held-out (volume, rate)."""
    refiner.eval()
    results = {}
    for n, c in enumerate(coded):
        refined = np.empty_like(c.decoded)
        for start in range(0, c.decoded.shape[0], slab):
            part = c.decoded[start : start + slab]
            refined[start : start + slab] = refiner.refine(part, np.full(part.shape, c.rate), device)
        refined = np.rint(np.clip(refined, *HU_WINDOW))
        base = np.rint(c.decoded)
        key = f"volume{n}@{c.ratio:g}x"
        results[key + ":base"] = float(np.abs(base - c.original).mean())
        results[key + ":refined"] = float(np.abs(refined - c.original).mean())
        results[key + ":base_ssim"] = metrics.ssim(c.original, base)
        results[key + ":refined_ssim"] = metrics.ssim(c.original, refined)
    refiner.train()
    return results


def load_refiner_model(model_id: str, device: torch.device) -> Refiner:
    """A shipped or trained refinement network by id (or path), for fine-tuning or as a teacher."""
    from ..zoo.registry import find_model

    found = find_model(model_id)
    refiner = Refiner(RefinerConfig(**found.config["architecture"]))
    load_state(found.weights, refiner)
    return refiner.to(device)


def train_refiner(
    config: RefinerTrainConfig, *, progress: bool = False, volumes: Sequence[np.ndarray] | None = None
) -> dict:
    """Train (or resume) into ``config.out``; returns the last log entry. With ``world_size`` > 1
    the steps run in that many processes under DistributedDataParallel (rank 0 checkpoints)."""
    if config.ssim_weight and min(config.crop) < 2 * SSIM_RADIUS + 1:
        raise ValueError(
            f"crops must be at least {2 * SSIM_RADIUS + 1} voxels along each axis for "
            f"the SSIM term, got {tuple(config.crop)}"
        )
    if config.teacher_weight and not config.teacher:
        raise ValueError("teacher_weight needs a teacher model")
    if config.init_from:  # the architecture is the starting model's
        from ..zoo.registry import find_model

        config = replace(config, model=dict(find_model(config.init_from).config["architecture"]))
    device = resolve_device(config.device)
    world = config.world_size
    if world is None:
        world = torch.cuda.device_count() if device.type == "cuda" and torch.cuda.device_count() > 1 else 1
    hu_volumes = list(volumes) if volumes is not None else load_training_volumes(config.sources)
    if world <= 1:
        return _train(config, hu_volumes, progress, rank=0, world=1)
    import tempfile

    import torch.multiprocessing as mp

    # The ranks meet through a file, not a port: no race for a free port, nothing on the network.
    with tempfile.TemporaryDirectory() as rendezvous:
        store = f"file://{Path(rendezvous) / 'store'}"
        mp.spawn(
            _distributed_worker, args=(config, hu_volumes, progress, world, store), nprocs=world, join=True
        )
    meta = json.loads((Path(config.out) / "checkpoint.json").read_text())
    return meta["history"][-1] if meta["history"] else {}


def _distributed_worker(
    rank: int, config: RefinerTrainConfig, volumes: list[np.ndarray], progress: bool, world: int, store: str
) -> None:
    import torch.distributed as dist

    use_cuda = resolve_device(config.device).type == "cuda"
    if not use_cuda:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=store, rank=rank, world_size=world)
    try:
        _train(config, volumes, progress and rank == 0, rank=rank, world=world)
        # Every rank done (rank 0 writes the last checkpoint) before any tears its connections
        # down: a rank leaving early has aborted its peer ("terminate called without an active
        # exception") on a loaded machine.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _train(
    config: RefinerTrainConfig, hu_volumes: Sequence[np.ndarray], progress: bool, rank: int, world: int
) -> dict:
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    if config.init_from:
        refiner = load_refiner_model(config.init_from, device)
    else:
        refiner = Refiner(RefinerConfig(**config.model)).to(device)
    teacher = load_refiner_model(config.teacher, device).eval() if config.teacher else None
    if teacher is not None:
        teacher.requires_grad_(False)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    recorded = asdict(config)
    recorded.pop("world_size")  # a run may resume with another number of processes
    run = TrainingRun(config.out, refiner, optimizer, rng, recorded)
    run.resume()
    if rank:  # every other rank draws its own crops (rank 0's stream is the checkpointed one)
        rng = np.random.default_rng([config.seed, rank, run.step])
    pairs = [
        code_volume(v, r, config.tile_shape, config.base)
        for v in track(hu_volumes, enabled=progress, desc="coding training volumes", unit="vol")
        for r in config.ratios
    ]
    held_out = [
        code_volume(v, r, config.tile_shape, config.base)
        for v in (load_training_volumes(config.eval_sources) if config.eval_sources and rank == 0 else [])
        for r in (128.0, 256.0)
    ]
    sampler = PairSampler(pairs, config.crop, rng, config.augment)
    network = refiner
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        network = DistributedDataParallel(refiner, device_ids=ids)
    refiner.train()
    losses: list[float] = []
    with bar(enabled=progress, desc="training refiner", total=config.steps, unit="step") as pbar:
        pbar.update(run.step)
        while run.step < config.steps:
            x, y, rates = (t.to(device) for t in sampler.sample(config.batch_size))
            refined = network(x, rates)
            loss = (refined - y).abs().mean()
            if config.ssim_weight:
                loss = loss + config.ssim_weight * (1.0 - ssim_3d(refined, y))
            if teacher is not None and config.teacher_weight:
                with torch.no_grad():
                    target = teacher(x, rates)
                loss = loss + config.teacher_weight * (refined - target).abs().mean()
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
                if world > 1:
                    entry["world_size"] = _check_ranks_agree(refiner, world)
                if rank:
                    continue
                if held_out:
                    entry["held_out_mae_hu"] = evaluate(refiner, held_out, device)
                run.history.append(entry)
                pbar.set_postfix_str(f"train MAE {entry['train_mae_hu']:.2f} HU")
                run.save()
    return run.history[-1] if run.history else {}


def _check_ranks_agree(refiner: Refiner, world: int) -> int:
    """DDP keeps the replicas identical; a checksum of the weights on every rank proves it."""
    import torch.distributed as dist

    checksum = torch.stack([p.detach().double().sum() for p in refiner.parameters()]).sum()
    gathered = [torch.zeros_like(checksum) for _ in range(world)]
    dist.all_gather(gathered, checksum)
    if any(float(g) != float(gathered[0]) for g in gathered):
        raise RuntimeError(f"distributed training diverged: weight checksums {[float(g) for g in gathered]}")
    return world


def export_model(run_dir: str | Path, model_id: str, dest: str | Path, extra: dict | None = None) -> Path:
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
        "training": {
            "steps": meta["step"],
            "wall_time_s": round(meta["elapsed_s"], 1),
            "config": meta["train_config"],
            "history": meta["history"],
        },
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
