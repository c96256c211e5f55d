"""One way to turn a URL into an fsspec filesystem, with errors that say what to install.

fsspec raises a bare ``ImportError`` (``HTTPFileSystem requires "requests" and "aiohttp"``) when a
protocol's backend is missing; users get a one-line :class:`~dstdformat.errors.StorageError`
naming the ``pip install`` that fixes it instead.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import StorageError

#: What to install for each protocol whose backend is not part of fsspec itself.
BACKEND_INSTALL = {
    "http": "pip install aiohttp requests",
    "https": "pip install aiohttp requests",
    "s3": "pip install 'dstdformat[s3]' (s3fs)",
    "s3a": "pip install 'dstdformat[s3]' (s3fs)",
    "gs": "pip install gcsfs",
    "gcs": "pip install gcsfs",
    "az": "pip install adlfs",
    "abfs": "pip install adlfs",
    "abfss": "pip install adlfs",
}


#: ``pathlib.Path`` folds ``s3://b/x`` to ``s3:/b/x``; libraries that keep paths as Path objects
#: (MONAI's LoadImage, TorchIO) hand URLs on that way.
_FOLDED_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")


def unfold_url(name: str | os.PathLike[str]) -> str:
    """``name`` as a string, a URL that ``pathlib`` folded given its second slash back."""
    return _FOLDED_URL.sub(r"\1://", os.fspath(name))


def protocol_of(url: str) -> str:
    """The outermost protocol of ``url`` (``file`` for plain paths; ``simplecache::s3://`` -> s3)."""
    last = url.split("::")[-1]
    return last.split("://", 1)[0].lower() if "://" in last else "file"


def url_to_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``fsspec.core.url_to_fs`` with missing backends and bad URLs as StorageError."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        protocol = protocol_of(url)
        fix = BACKEND_INSTALL.get(protocol, f"install the fsspec backend for {protocol}://")
        raise StorageError(
            f"reading {protocol}:// URLs needs a package that is not installed ({exc}); {fix}"
        ) from None
    except ValueError as exc:
        raise StorageError(f"cannot use {url}: {exc}") from exc


class ProcessFilesystem:
    """The fsspec filesystem of one URL, made again in a process forked after it was made.

    fsspec's async filesystems (S3, HTTP, ...) run on an event loop thread of the process that
    made them; a forked child (a PyTorch DataLoader worker, a multiprocessing pool) that uses the
    parent's instance fails with ``RuntimeError: This class is not fork-safe``. Asking this
    object for :attr:`fs` in a child makes a fresh instance there (fsspec clears its instance
    cache after a fork, so it is not the parent's again).
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url, self.storage_options = url, dict(storage_options or {})
        self._fs, self.path = url_to_fs(url, self.storage_options)
        self._pid = os.getpid()

    @property
    def fs(self) -> Any:
        if self._pid != os.getpid():
            self._fs, self.path = url_to_fs(self.url, self.storage_options)
            self._pid = os.getpid()
        return self._fs
