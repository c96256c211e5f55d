"""Trained models: the ones shipped inside the package and the ones users point to.

A model is a folder entry ``<id>.safetensors`` + ``<id>.json`` (architecture and training
record). Files name the model they were written with by id and SHA-256 of the weights; decoding
with other weights would silently give other voxels, so a mismatch is an error. Besides the
package's own folder, folders listed in ``DSTD_MODEL_PATH`` (os.pathsep-separated) are searched,
which is how a model trained with ``dstd train`` is used; so are folders registered at run time
with :func:`register_model_folder` (an archive's models, fetched into the local cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import CodecError

#: The model `deepstd` uses unless told otherwise.
DEFAULT_MODEL = "deepstd-refine-v1"
#: The shipped network for each base layer (``model="default"``).
DEFAULT_MODELS = {"sperr": DEFAULT_MODEL, "av1": DEFAULT_MODEL}
MODEL_PATH_ENV = "DSTD_MODEL_PATH"
#: The reference template that shape coding (``shape="default"``) registers scans to.
DEFAULT_TEMPLATE = "template-462ad636d4699db0a3fb196fb2d6e36ab3ddd68d95a696656189b1efb3bba9b3"


@dataclass(frozen=True)
class ModelFile:
    id: str
    weights: Path
    sha256: str
    config: dict


_registered: list[Path] = []


def register_model_folder(folder: str | Path) -> None:
    """Search ``folder`` for models and templates too (after ``DSTD_MODEL_PATH``), in this process."""
    path = Path(folder)
    if path not in _registered:
        _registered.append(path)


def search_folders() -> list[Path]:
    folders = [Path(p) for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    folders += _registered
    folders.append(Path(str(resources.files("dstdformat") / "zoo" / "shipped")))
    return folders


def available_models() -> list[str]:
    found = set()
    for folder in search_folders():
        if folder.is_dir():
            found |= {p.stem for p in folder.glob("*.safetensors") if p.with_suffix(".json").exists()}
    return sorted(found)


def find_model(model_id: str, sha256: str | None = None) -> ModelFile:
    """Locate ``model_id`` (a name, or a path to a ``.safetensors`` file) and check its hash."""
    if not isinstance(model_id, str) or not model_id:
        raise CodecError(f"model must be a model id or a .safetensors path, got {model_id!r}")
    candidates = []
    as_path = Path(model_id)
    if as_path.suffix == ".safetensors":
        candidates.append(as_path)
    elif _MODEL_ID.fullmatch(model_id):
        candidates += [folder / f"{model_id}.safetensors" for folder in search_folders()]
    else:  # never a path fragment: ids come from files, which may be hostile
        raise CodecError(
            f"{model_id[:80]!r} is not a valid model id (letters, digits, '.', '_' "
            "and '-', at most 128 characters) nor a .safetensors path"
        )
    for weights in candidates:
        if _is_file(weights) and _is_file(weights.with_suffix(".json")):
            model = _describe(weights)
            if sha256 is not None and model.sha256 != sha256:
                continue
            return model
    if sha256 is not None and any(_is_file(p) for p in candidates):
        raise CodecError(
            f"model {model_id!r} is installed but its weights differ from the ones this data was "
            f"written with (sha256 {sha256[:16]}...); install that model version or add its folder "
            f"to {MODEL_PATH_ENV}"
        )
    raise CodecError(
        f"unknown model {model_id!r}; available: {', '.join(available_models()) or 'none'} "
        f"(models trained with `dstd train` are found through {MODEL_PATH_ENV})"
    )


_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the filesystem, a permission problem on the way
        return False


@lru_cache(maxsize=8)
def _describe_cached(path: str, mtime_ns: int, size: int) -> ModelFile:
    weights = Path(path)
    try:
        config = json.loads(weights.with_suffix(".json").read_text())
    except (OSError, ValueError) as exc:
        raise CodecError(f"model description {weights.with_suffix('.json')} is unreadable: {exc}") from None
    return ModelFile(config.get("id", weights.stem), weights, file_sha256(weights), config)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(weights: Path) -> ModelFile:
    stat = weights.stat()
    return _describe_cached(str(weights.resolve()), stat.st_mtime_ns, stat.st_size)
