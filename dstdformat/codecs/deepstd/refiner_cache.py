"""Loaded refinement networks, kept per (weights, device) so reading many regions loads once."""

from __future__ import annotations

from functools import lru_cache

from ...errors import CodecError
from ...zoo.registry import ModelFile


def load_refiner(model: ModelFile, device: str = "auto"):
    return _load(str(model.weights), model.sha256, device)


@lru_cache(maxsize=4)
def _load(weights: str, sha256: str, device: str):
    import torch
    from safetensors.torch import load_file

    from ...model.device import resolve_device
    from ...model.refine import Refiner, RefinerConfig
    from ...zoo.registry import find_model

    config = find_model(weights, sha256).config
    try:
        tensors = load_file(weights)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise CodecError(f"model weights {weights} are not a valid safetensors file: {exc}") from None
    try:
        refiner = Refiner(RefinerConfig(**config["architecture"]))
        state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        refiner.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CodecError(f"model {weights} does not fit the refinement network: {exc}") from None
    target = resolve_device(device)
    refiner = refiner.to(target, memory_format=torch.channels_last_3d).eval()
    refiner.device = target
    return refiner
