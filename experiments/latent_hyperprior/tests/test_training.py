from __future__ import annotations

import json

import numpy as np
import torch
from latent_hyperprior.train import TrainConfig, train
from safetensors.torch import load_file

TINY = {"channels": 8, "latent_channels": 12, "hyper_channels": 6}


def _volumes():
    rng = np.random.default_rng(0)
    return [rng.normal(0, 300, (40, 70, 70)).astype(np.float32)]


def test_resumed_training_equals_uninterrupted(tmp_path):
    straight = TrainConfig(
        sources=[],
        out=str(tmp_path / "a"),
        steps=6,
        batch_size=1,
        crop=(32, 32, 32),
        checkpoint_every=3,
        model=TINY,
    )
    train(straight, volumes=_volumes())
    resumed = TrainConfig(**{**straight.__dict__, "out": str(tmp_path / "b"), "steps": 3})
    train(resumed, volumes=_volumes())
    resumed.steps = 6
    train(resumed, volumes=_volumes())
    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert meta["step"] == 6 and meta["train_config"]["model"] == TINY


def test_training_reduces_the_loss(tmp_path):
    config = TrainConfig(
        sources=[],
        out=str(tmp_path),
        steps=100,
        batch_size=1,
        crop=(32, 32, 32),
        checkpoint_every=100,
        learning_rate=1e-3,
        model=TINY,
    )
    train(config, volumes=_volumes())
    history = json.loads((tmp_path / "checkpoint.json").read_text())["history"]
    assert history[-1]["loss"] < history[0]["loss"]
