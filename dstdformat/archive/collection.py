"""An archive opened as a mapping from scan name to lazily opened volume.

The names and everything the catalog knows come from one read of ``catalog.jsonl``; a scan's
file is opened the first time it is looked up. Models the archive's scans were coded with and
that this installation lacks are fetched once into the local cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..container.collection import VolumeCollection
from .catalog import OK, read_catalog, read_records
from .layout import ARCHIVE_FILE, ArchiveLocation
from .models import ensure_models
from .verify import load_manifest


def is_archive(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    try:
        return ArchiveLocation(url, storage_options).exists(ARCHIVE_FILE)
    except (OSError, ValueError):
        return False


class ArchiveCollection(VolumeCollection):
    """The ``.dstd`` scans of an archive; ``catalog[name]`` is each scan's catalog record."""

    def __init__(
        self,
        urls: dict[str, str],
        storage_options: dict[str, Any] | None,
        catalog: dict[str, dict[str, Any]],
        manifest: dict[str, Any],
    ) -> None:
        super().__init__(urls, storage_options)
        self.catalog, self.manifest = catalog, manifest

    def __repr__(self) -> str:
        return f"<dstdformat.ArchiveCollection of {len(self)} scans, {len(self._open)} opened>"


class ZarrArchiveCollection(Mapping[str, Any]):
    """The zarr arrays of an archive made with ``--zarr`` (``group/<name>/0``), opened lazily."""

    def __init__(
        self, location: ArchiveLocation, catalog: dict[str, dict[str, Any]], manifest: dict[str, Any]
    ) -> None:
        self.location, self.catalog, self.manifest = location, catalog, manifest
        self._open: dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self._open:
            import zarr

            destination = self.catalog[name]["destination"]
            self._open[name] = zarr.open_array(
                self.location.url_of(f"{destination}/0"),
                mode="r",
                storage_options=self.location.storage_options or None,
            )
        return self._open[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.catalog)

    def __len__(self) -> int:
        return len(self.catalog)

    def close(self) -> None:
        self._open.clear()

    def __repr__(self) -> str:
        return f"<dstdformat.ZarrArchiveCollection of {len(self)} scans, {len(self._open)} opened>"


def open_archive_collection(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None):
    location = ArchiveLocation(url, storage_options)
    manifest = load_manifest(location)
    records = {r["name"]: r for r in read_catalog(location)} or read_records(location)
    catalog = {name: r for name, r in sorted(records.items()) if r.get("status") == OK}
    ensure_models(location, manifest.get("models", []))
    if manifest["settings"].get("zarr"):
        return ZarrArchiveCollection(location, catalog, manifest)
    urls = {name: location.url_of(r["destination"]) for name, r in catalog.items()}
    return ArchiveCollection(urls, location.storage_options or None, catalog, manifest)
