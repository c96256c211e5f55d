"""A resumable training run's folder: network + optimizer tensors (safetensors) and JSON progress.

Trainings (the refinement network; the latent hyperprior experiment beside the package) checkpoint
the same way: a run stopped anywhere continues with the same random streams, so a resumed run gives the
same tensors as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..zoo.weights import load_state, save_state


class TrainingRun:
    """Owns ``out/checkpoint.safetensors`` and ``out/checkpoint.json`` of one run."""

    def __init__(
        self,
        out: str | Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        train_config: dict[str, Any],
        torch_rng: bool = False,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.optimizer, self.rng = model, optimizer, rng
        self.train_config, self.torch_rng = train_config, torch_rng
        self.state_path = self.out / "checkpoint.safetensors"
        self.meta_path = self.out / "checkpoint.json"
        self.step, self.history, self._elapsed = 0, [], 0.0
        self._started = time.perf_counter()

    def resume(self) -> None:
        """Continue from the folder's checkpoint if there is one (of the same architecture)."""
        if not self.meta_path.exists():
            return
        meta = json.loads(self.meta_path.read_text())
        if meta["train_config"]["model"] != self.train_config["model"]:
            raise ValueError(f"{self.out} holds a checkpoint of a different model configuration")
        load_state(self.state_path, self.model, self.optimizer)
        self.step, self.history, self._elapsed = meta["step"], meta["history"], meta["elapsed_s"]
        self.rng.bit_generator.state = meta["rng_state"]
        if self.torch_rng and "torch_rng_state" in meta:
            torch.set_rng_state(torch.tensor(meta["torch_rng_state"], dtype=torch.uint8))

    def save(self) -> None:
        meta = {
            "step": self.step,
            "history": self.history,
            "train_config": self.train_config,
            "elapsed_s": self._elapsed + time.perf_counter() - self._started,
            "rng_state": self.rng.bit_generator.state,
        }
        if self.torch_rng:
            meta["torch_rng_state"] = torch.get_rng_state().tolist()
        save_state(self.state_path, self.model, self.optimizer)
        tmp = self.meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.meta_path)
