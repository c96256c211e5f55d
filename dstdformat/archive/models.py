"""An archive's models and templates: stored once under ``DEST/models``, content-addressed.

Every scan file names its model by id and SHA-256, so the archive keeps exactly those bytes at
``models/sha256-<hex>/<id>.safetensors`` (with its ``.json`` description): whoever reads the archive
later, on a machine or a library version that lacks the model, fetches it from there. Fetched
files go to a local cache (``DSTD_CACHE_DIR``, else ``~/.cache/dstdformat``), are checked against
their hash, and their folder is added to the model search path of the process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CodecError, StorageError
from ..storage.writing import atomic_path
from .layout import MODELS_DIR, ArchiveLocation

CACHE_ENV = "DSTD_CACHE_DIR"


def cache_folder() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dstdformat"


def _entry_folder(sha256: str) -> str:
    return f"{MODELS_DIR}/sha256-{sha256}"


def resolve_models(codec_options: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The codec options with models named by id (paths replaced) and the files they need:
    ``[{"kind": "model"|"template", "id", "sha256", "files": {name: local path}}]``."""
    from ..zoo.registry import DEFAULT_TEMPLATE, find_model, search_folders
    from ..zoo.templates import find_template, template_id_of

    options = dict(codec_options)
    needed: list[dict[str, Any]] = []
    model = options.get("model", "auto")
    if model in ("auto", "default"):  # what the codec itself picks for this base layer and mode
        from ..codecs.deepstd import DeepSTDVolumeCodec

        keys = ("ratio", "quality", "max_error", "base", "model")
        model = DeepSTDVolumeCodec(**{k: options[k] for k in keys if k in options}).model
        options["model"] = model
    if model is not None and options.get("max_error") is None:
        found = find_model(str(model))
        options["model"] = found.id
        needed.append(
            {
                "kind": "model",
                "id": found.id,
                "sha256": found.sha256,
                "files": {
                    f"{found.id}.safetensors": str(found.weights),
                    f"{found.id}.json": str(found.weights.with_suffix(".json")),
                },
            }
        )
    shape = options.get("shape")
    if shape:
        if str(shape).endswith(".safetensors"):
            path = Path(shape)
            if not path.is_file():
                raise CodecError(f"template file {shape} does not exist")
            template_id = template_id_of(path)
        else:
            template_id = DEFAULT_TEMPLATE if shape == "default" else str(shape)
            find_template(template_id)  # unknown ids fail here, before any scan
            path = next(
                f / f"{template_id}.safetensors"
                for f in search_folders()
                if (f / f"{template_id}.safetensors").is_file()
            )
        options["shape"] = template_id
        needed.append(
            {
                "kind": "template",
                "id": template_id,
                "sha256": template_id.removeprefix("template-"),
                "files": {f"{template_id}.safetensors": str(path)},
            }
        )
    return options, needed


def store_models(location: ArchiveLocation, needed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Upload each needed file once (skipped when its content address is already there); the
    entries for ``archive.json``, with paths relative to the archive."""
    entries = []
    for item in needed:
        folder = _entry_folder(item["sha256"])
        paths = {}
        for name, local in item["files"].items():
            relative = f"{folder}/{name}"
            paths[name] = relative
            if not location.exists(relative):
                location.write_bytes(relative, Path(local).read_bytes())
        entries.append({"kind": item["kind"], "id": item["id"], "sha256": item["sha256"], "files": paths})
    return entries


def ensure_models(location: ArchiveLocation, entries: list[dict[str, Any]]) -> None:
    """Make every model of the archive findable in this process: installed ones are used as they
    are; missing ones are fetched from the archive into the cache (checked by SHA-256)."""
    from ..zoo.registry import file_sha256, find_model, register_model_folder, search_folders

    for entry in entries:
        if _installed(entry, find_model, search_folders):
            continue
        folder = cache_folder() / f"sha256-{entry['sha256']}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, relative in entry["files"].items():
            target = folder / name
            if not target.is_file():
                try:
                    data = location.read_bytes(relative)
                except FileNotFoundError:
                    raise StorageError(
                        f"the archive's {entry['kind']} {entry['id']} is missing: "
                        f"no {location.url_of(relative)}"
                    ) from None
                with atomic_path(target) as temp:
                    temp.write_bytes(data)
        weights = folder / f"{entry['id']}.safetensors"
        if file_sha256(weights) != entry["sha256"]:
            for name in entry["files"]:
                (folder / name).unlink(missing_ok=True)
            raise CodecError(
                f"the archive's {entry['kind']} {entry['id']} does not match its "
                f"sha256 {entry['sha256'][:16]}...: the archive is damaged"
            )
        register_model_folder(folder)


def _installed(entry: dict[str, Any], find_model, search_folders) -> bool:
    if entry["kind"] == "model":
        try:
            find_model(entry["id"], entry["sha256"])
            return True
        except CodecError:
            return False
    return any((f / f"{entry['id']}.safetensors").is_file() for f in search_folders())
