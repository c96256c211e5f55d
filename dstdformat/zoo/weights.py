"""Saving and loading model and optimizer state as safetensors (never pickle)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..storage.writing import new_file_mode


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for param_id, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{param_id}.{key}"] = t.detach().cpu().contiguous()
    return tensors


def save_state(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Atomically write model (and optimizer) tensors to one safetensors file."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if optimizer is not None:
        tensors.update(_optimizer_tensors(optimizer))
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    os.chmod(tmp, new_file_mode(path))
    os.replace(tmp, path)


def load_state(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    tensors = load_file(str(path))
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    _resize_table_buffers(model, model_state)
    model.load_state_dict(model_state)
    if optimizer is not None:
        state = optimizer.state_dict()
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, param_id, name = key.split(".", 2)
                state["state"].setdefault(int(param_id), {})[name] = value
        optimizer.load_state_dict(state)


def _resize_table_buffers(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Coding tables are built after training; give the empty buffers their saved shapes."""
    for name, buffer in model.named_buffers():
        if name in state and buffer.shape != state[name].shape:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name) if module_name else model
            setattr(module, attr, torch.empty_like(state[name]))
