"""What a patch dataset reads: a folder, a glob, an archive made by ``dstd archive``, one file or
URL, or a list or mapping of them, resolved once to scan names and URLs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..archive.collection import is_archive, open_archive_collection
from ..container.collection import VolumeCollection, open_collection
from ..errors import InvalidInputError, StorageError
from ..storage.filesystems import url_to_fs


def resolve_sources(sources: Any, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Scan name -> URL of every ``.dstd`` file ``sources`` names, in a stable order."""
    if isinstance(sources, Mapping):
        return {str(name): os.fspath(url) for name, url in sources.items()}
    if isinstance(sources, (str, os.PathLike)):
        return _one(os.fspath(sources), storage_options)
    if isinstance(sources, Sequence):
        found: dict[str, str] = {}
        for item in sources:
            for name, url in resolve_sources(item, storage_options).items():
                if name in found and found[name] != url:
                    raise InvalidInputError(f"two sources are both named {name!r}: {found[name]} and {url}")
                found[name] = url
        return found
    raise InvalidInputError(
        "sources must be a path, URL, glob, archive, or a list or mapping of them; got "
        f"{type(sources).__name__}"
    )


def _one(text: str, storage_options: dict[str, Any] | None) -> dict[str, str]:
    if any(c in text for c in "*?["):
        return _urls_of(open_collection(text, storage_options), text)
    if is_archive(text, storage_options):
        collection = open_archive_collection(text, storage_options)
        if not isinstance(collection, VolumeCollection):
            raise InvalidInputError(
                f"{text} is an archive of zarr arrays; patch datasets read archives of .dstd files"
            )
        return _urls_of(collection, text)
    try:
        fs, path = url_to_fs(text, storage_options)
        folder = fs.isdir(path)
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot look at {text}: {exc}") from exc
    if folder:
        pattern = text.rstrip("/") + "/**/*.dstd"
        found = _urls_of(open_collection(pattern, storage_options), text)
        root = str(path).rstrip("/") + "/"
        # Names relative to the folder: two scans of one name in different subfolders stay apart.
        return {_relative(url, root): url for url in found.values()}
    if not text.endswith(".dstd"):
        raise InvalidInputError(f"{text} is not a .dstd file (patch datasets read .dstd files)")
    return {text.rstrip("/").rsplit("/", 1)[-1]: text}


def _relative(url: str, root: str) -> str:
    plain = url.split("://", 1)[-1]
    return plain[len(root) :] if plain.startswith(root) else plain.rsplit("/", 1)[-1]


def _urls_of(collection: VolumeCollection, text: str) -> dict[str, str]:
    if not len(collection):
        raise InvalidInputError(f"no .dstd files found in {text}")
    return dict(collection.urls)
