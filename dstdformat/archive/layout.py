"""Where things live in an archive, on any fsspec filesystem.

::

    DEST/archive.json                  settings, the models used (by sha256), format version
    DEST/models/sha256-<hex>/<id>.*    each model or template once, content-addressed
    DEST/scans/<name>.dstd             one file per scan (or DEST/scans.zarr/<name>/ with --zarr)
    DEST/catalog/<name>.json           one record per scan, written by the worker that made it
    DEST/catalog.jsonl                 all records in one file, rewritten as the run goes

Per-scan records are the source of truth: each is one object written after its scan is complete,
so a run killed at any point leaves a record for every finished scan and none for the others.
``catalog.jsonl`` is derived from them (one read for readers of big archives).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import StorageError
from ..storage.filesystems import ProcessFilesystem
from ..storage.sources import local_path
from ..storage.writing import atomic_output

ARCHIVE_FILE = "archive.json"
CATALOG_FILE = "catalog.jsonl"
RECORDS_DIR = "catalog"
MODELS_DIR = "models"
SCANS_DIR = "scans"
ZARR_GROUP = "scans.zarr"
#: Bumped when the layout changes in a way older readers would misread.
ARCHIVE_FORMAT = 1


class ArchiveLocation:
    """A folder on any fsspec filesystem, addressed by paths relative to its root."""

    def __init__(self, url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None):
        self.url = os.fspath(url).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self._filesystem = ProcessFilesystem(self.url, self.storage_options)
        self.root = self._filesystem.path.rstrip("/")
        self.local = local_path(self.url, self.storage_options) is not None

    @property
    def fs(self) -> Any:
        """The filesystem (made again in a forked child: fsspec's are not fork-safe)."""
        return self._filesystem.fs

    def path(self, relative: str) -> str:
        """The filesystem path (no protocol) of ``relative``."""
        return f"{self.root}/{relative}" if relative else self.root

    def url_of(self, relative: str) -> str:
        """A URL for ``relative`` that ``open``, ``zarr`` and fsspec accept with our storage options."""
        if self.local:
            return os.path.join(local_path(self.url) or self.url, *relative.split("/"))
        return f"{self.url}/{relative}"

    def exists(self, relative: str) -> bool:
        return bool(self.fs.exists(self.path(relative)))

    def read_bytes(self, relative: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(relative)))

    def read_json(self, relative: str) -> Any:
        text = self.read_bytes(relative)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise StorageError(f"{self.url_of(relative)} is not valid JSON: {exc}") from None

    def prepare_parent(self, relative: str) -> None:
        """Local folders must exist before a file is written into them (object stores have none)."""
        if self.local:
            os.makedirs(os.path.dirname(self.url_of(relative)), exist_ok=True)

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Whole or not at all: a local temporary file renamed, or one object PUT."""
        self.prepare_parent(relative)
        with atomic_output(self.url_of(relative), self.storage_options or None) as out:
            out.write(data)

    def write_json(self, relative: str, value: Any) -> None:
        self.write_bytes(relative, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())

    def makedirs(self, relative: str) -> None:
        if self.local:
            os.makedirs(self.url_of(relative), exist_ok=True)

    def find(self, relative: str) -> dict[str, int]:
        """Every file under ``relative``: path relative to it -> size in bytes."""
        base = self.path(relative)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        prefix = base.rstrip("/") + "/"
        return {
            path[len(prefix) :]: int(info.get("size") or 0)
            for path, info in found.items()
            if path.startswith(prefix) and info.get("type", "file") == "file"
        }

    def remove(self, relative: str, recursive: bool = False) -> None:
        try:
            self.fs.rm(self.path(relative), recursive=recursive)
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return f"ArchiveLocation({self.url!r})"


def scan_destination(name: str, zarr: bool) -> str:
    """Where scan ``name`` is stored, relative to the archive root."""
    return f"{ZARR_GROUP}/{name}" if zarr else f"{SCANS_DIR}/{name}.dstd"


def record_path(name: str) -> str:
    return f"{RECORDS_DIR}/{name}.json"


def leftover_temporaries(location: ArchiveLocation) -> list[str]:
    """Temporary files of writes killed midway (``.NAME.tmp-XXXXXXXX``, whose atomic rename never
    ran), relative to the archive's root."""
    return [
        key
        for key in location.find("")
        if key.rsplit("/", 1)[-1].startswith(".") and ".tmp-" in key.rsplit("/", 1)[-1]
    ]
