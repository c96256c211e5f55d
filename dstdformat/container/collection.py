"""Many ``.dstd`` files under one URL pattern, opened only when used.

``dstdformat.open_collection("s3://bucket/study/*.dstd")`` lists the files once (one listing
request) and returns a mapping from file name to volume; a volume's header is fetched the first
time it is looked up, so touching one scan of thousands costs that scan's reads alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import StorageError
from ..storage.filesystems import url_to_fs
from .volume import Volume, open_volume


class VolumeCollection(Mapping[str, Volume]):
    def __init__(self, urls: dict[str, str], storage_options: dict[str, Any] | None) -> None:
        self.urls, self.storage_options = urls, storage_options
        self._open: dict[str, Volume] = {}

    def __getitem__(self, name: str) -> Volume:
        if name not in self._open:
            self._open[name] = open_volume(self.urls[name], self.storage_options)
        return self._open[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.urls)

    def __len__(self) -> int:
        return len(self.urls)

    def close(self) -> None:
        for volume in self._open.values():
            volume.close()
        self._open.clear()

    def __repr__(self) -> str:
        return f"<dstdformat.VolumeCollection of {len(self)} files, {len(self._open)} opened>"


def open_collection(
    pattern: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> VolumeCollection:
    """Every ``.dstd`` file matching ``pattern`` (a glob, local or any fsspec URL), lazily."""
    text = os.fspath(pattern)
    try:
        fs, path = url_to_fs(text, storage_options)
        found = sorted(fs.glob(path))
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot list {text}: {exc}") from exc
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    urls = {}
    for item in found:
        if not str(item).endswith(".dstd"):
            continue
        name = str(item).rsplit("/", 1)[-1]
        urls[name] = item if protocol in ("file", "local") else f"{protocol}://{item}"
    return VolumeCollection(urls, storage_options)
