"""Atomic output: a reader never sees a partial file under the final name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from .sources import _is_local


def new_file_mode(final: str) -> int:
    """Permission bits for a file published at ``final``: the existing file's, else 0o666 less
    the umask (what ``open()`` would give; ``mkstemp`` alone would leave 0o600)."""
    try:
        return os.stat(final).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_output(path_or_url: str | os.PathLike[str],
                  storage_options: dict[str, Any] | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file; on success it appears at ``path_or_url`` whole, on failure not at all.

    Local paths: a temporary file in the same directory, fsync'ed, then ``os.replace``. Other URLs:
    a local temporary file uploaded in one put, which object stores make visible atomically.
    """
    text = os.fspath(path_or_url)
    if _is_local(text) and "::" not in text and not storage_options:
        final = os.path.abspath(text.removeprefix("file://"))
        directory = os.path.dirname(final)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final)}.", suffix=".tmp",
                                   dir=directory)
        try:
            os.chmod(tmp, new_file_mode(final))
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    import fsspec.core

    fs, remote = fsspec.core.url_to_fs(text, **(storage_options or {}))
    with tempfile.NamedTemporaryFile(suffix=".dstd") as fh:
        yield fh
        fh.flush()
        fs.put_file(fh.name, remote)
