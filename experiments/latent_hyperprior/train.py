"""Training the texture model on CT volumes: seeded, resumable, checkpointed as safetensors+JSON.

    cd experiments && python -m latent_hyperprior.train ../../shared/data/ct --out runs/v0 \
        --exclude itkelastix_chest_512.nii.gz --steps 3000 --batch 4 --crop 32 64 64 --lr 2e-4


Rate-distortion loss: bits per voxel of y and z plus ``lmbda`` times the MSE in HU^2 / 10^4
(inputs are HU / 1024 after clipping to the window).
lmbda = 0.5 is meant to balance near 256x on chest CT. Checkpoints hold the model, the optimizer state and the
random state, so a run stopped anywhere continues where it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from dstdformat.metadata import HU_WINDOW
from dstdformat.model.device import resolve_device
from dstdformat.progress import bar
from dstdformat.training.checkpoint import TrainingRun
from dstdformat.training.data import load_training_volumes, training_paths

from .texture_model import TextureModel, TextureModelConfig

#: The hyperprior model sees HU / 1024 (the refinement network, HU / 1000: model/refine.py).
INPUT_SCALE_HU = 1024.0


def normalize_hu(hu: np.ndarray | torch.Tensor):
    """HU -> network input: clip to the window, divide by 1024 (air -1, water 0, bone ~1..3)."""
    if isinstance(hu, torch.Tensor):
        return torch.clamp(hu, *HU_WINDOW) / INPUT_SCALE_HU
    return np.clip(hu, *HU_WINDOW) / INPUT_SCALE_HU


@dataclass
class TrainConfig:
    sources: list[str]
    out: str
    steps: int = 20000
    batch_size: int = 2
    crop: tuple[int, int, int] = (64, 64, 64)
    lmbda: float = 0.5
    learning_rate: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 200
    model: dict = field(default_factory=dict)  # TextureModelConfig fields
    device: str = "auto"


class CropSampler:
    """Random crops (with flips and a small intensity jitter) from volumes held in memory."""

    def __init__(
        self, volumes: Sequence[np.ndarray], crop: tuple[int, int, int], rng: np.random.Generator
    ) -> None:
        self.volumes = [v for v in volumes if all(s >= c for s, c in zip(v.shape, crop))]
        if not self.volumes:
            raise ValueError(f"no training volume is at least {crop} voxels")
        self.weights = np.array([v.size for v in self.volumes], dtype=np.float64)
        self.weights /= self.weights.sum()
        self.crop, self.rng = crop, rng

    def sample(self, batch: int) -> torch.Tensor:
        out = np.empty((batch, 1, *self.crop), dtype=np.float32)
        for b in range(batch):
            v = self.volumes[self.rng.choice(len(self.volumes), p=self.weights)]
            start = [self.rng.integers(0, s - c + 1) for s, c in zip(v.shape, self.crop)]
            block = v[tuple(slice(s, s + c) for s, c in zip(start, self.crop))].astype(np.float32)
            for axis in (1, 2):  # left-right / anterior-posterior flips keep CT semantics
                if self.rng.random() < 0.5:
                    block = np.flip(block, axis)
            block = block * self.rng.uniform(0.97, 1.03) + self.rng.uniform(-20, 20)
            out[b, 0] = normalize_hu(block)
        return torch.from_numpy(out)


def rd_loss(model_out: dict[str, torch.Tensor], x: torch.Tensor, lmbda: float):
    voxels = x.numel()
    bits = -(torch.log2(model_out["y_likelihood"]).sum() + torch.log2(model_out["z_likelihood"]).sum())
    bpv = bits / voxels
    mse = torch.mean((model_out["x_hat"] - x) ** 2)
    return bpv + lmbda * mse * (INPUT_SCALE_HU**2) / 1e4, bpv, mse


def train(
    config: TrainConfig, *, progress: bool = False, volumes: Sequence[np.ndarray] | None = None
) -> dict:
    """Train (or resume) into ``config.out``; returns the final log entry."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = TextureModel(TextureModelConfig(**config.model)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    run = TrainingRun(config.out, model, optimizer, rng, asdict(config), torch_rng=True)
    run.resume()
    sampler = CropSampler(
        volumes if volumes is not None else load_training_volumes(config.sources), config.crop, rng
    )
    model.train()
    window: list[tuple[float, float, float]] = []

    with bar(enabled=progress, desc="training", total=config.steps, unit="step") as pbar:
        pbar.update(run.step)
        while run.step < config.steps:
            x = sampler.sample(config.batch_size).to(device)
            loss, bpv, mse = rd_loss(model(x), x, config.lmbda)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            run.step += 1
            window.append((float(loss.detach()), float(bpv.detach()), float(mse.detach())))
            pbar.update(1)
            if run.step % 50 == 0 or run.step == config.steps:
                mean = np.mean(window, axis=0)
                window.clear()
                entry = {
                    "step": run.step,
                    "loss": float(mean[0]),
                    "bpv": float(mean[1]),
                    "ratio_est": 16 / float(mean[1]) if mean[1] > 0 else math.inf,
                    "rmse_hu": float(math.sqrt(mean[2]) * INPUT_SCALE_HU),
                }
                run.history.append(entry)
                pbar.set_postfix_str(f"bpv {entry['bpv']:.4f} rmse {entry['rmse_hu']:.1f} HU")
            if run.step % config.checkpoint_every == 0 or run.step == config.steps:
                run.save()
    return run.history[-1] if run.history else {}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="train the experimental latent hyperprior texture model")
    p.add_argument("sources", nargs="+", help="training scans (files, folders or globs)")
    p.add_argument("--out", required=True, help="run folder (checkpoints); resumes if it holds one")
    p.add_argument("--exclude", nargs="*", default=[], help="file names kept out (held-out scans)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    p.add_argument("--crop", type=int, nargs=3, default=TrainConfig.crop, help="multiples of 32")
    p.add_argument("--lmbda", type=float, default=TrainConfig.lmbda, help="0.5: about 470x on chest CT")
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=TextureModelConfig.channels)
    p.add_argument("--latent-channels", type=int, default=TextureModelConfig.latent_channels)
    p.add_argument("--hyper-channels", type=int, default=TextureModelConfig.hyper_channels)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if any(c <= 0 or c % 32 for c in args.crop):
        p.error(f"--crop sizes must be positive multiples of 32, got {args.crop}")
    paths = [str(path) for path in training_paths(args.sources) if path.name not in set(args.exclude)]
    config = TrainConfig(
        sources=paths,
        out=args.out,
        steps=args.steps,
        batch_size=args.batch,
        crop=tuple(args.crop),
        lmbda=args.lmbda,
        learning_rate=args.lr,
        seed=args.seed,
        model={
            "channels": args.channels,
            "latent_channels": args.latent_channels,
            "hyper_channels": args.hyper_channels,
        },
        device=args.device,
    )
    last = train(config, progress=not args.quiet)
    if last:
        print(
            f"step {last['step']}: {last['bpv']:.4f} bits/voxel (~{last['ratio_est']:.0f}x), "
            f"RMSE {last['rmse_hu']:.1f} HU"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
