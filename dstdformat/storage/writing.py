"""Atomic output: a reader never sees a partial file under the final name.

One mechanism for every writer: :func:`atomic_path` for libraries that want a path (nibabel,
h5py, numpy), :func:`atomic_output` for a file object on a local path or any fsspec URL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import FileMissingError, StorageError
from .filesystems import url_to_fs
from .sources import local_path

#: Suffixes that only say how the real format is compressed (``.nii.gz`` is NIfTI, gzipped).
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}


def new_file_mode(final: str | os.PathLike[str]) -> int:
    """Permission bits for a file published at ``final``: the existing file's, else 0o666 less
    the umask (what ``open()`` would give; ``mkstemp`` alone would leave 0o600)."""
    try:
        return os.stat(final).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def full_suffix(path: str | os.PathLike[str]) -> str:
    """The format suffix of ``path``, keeping a compression suffix with its format (``.nii.gz``)."""
    suffixes = Path(path).suffixes
    if not suffixes:
        return ""
    if suffixes[-1].lower() in _COMPRESSION_SUFFIXES and len(suffixes) >= 2:
        return "".join(suffixes[-2:])
    return suffixes[-1]


def check_writable(
    path_or_url: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    *,
    folder_ok: bool = False,
) -> None:
    """Refuse, before any work, a local output that could not be published: a folder (unless
    ``folder_ok``: outputs that are folders, like zarr stores), a missing folder, a place this
    process may not create files in (tried, so that read-only mounts and permissions are seen as
    the writer will see them). URLs are checked by their writer."""
    local = local_path(path_or_url, storage_options)
    if local is None:
        return
    name = os.fspath(path_or_url)
    target = Path(os.path.abspath(local))
    if target.is_dir() and not folder_ok:
        raise StorageError(f"cannot write {name}: it is a folder; give a file name inside it")
    folder = target.parent
    if not folder.is_dir():
        raise FileMissingError(f"cannot write {name}: the folder {str(folder)!r} does not exist")
    try:
        _try_create_in(folder, target.name)
    except OSError as exc:
        raise StorageError(
            f"cannot write {name}: the folder {str(folder)!r} is not writable ({exc.strerror})"
        ) from None


def _try_create_in(folder: Path, name: str) -> None:
    """Create and remove a file in ``folder``: an unnamed one where the system has them
    (``O_TMPFILE``: nothing is left behind even if this process is killed meanwhile), else a
    named probe beside ``name``."""
    unnamed = getattr(os, "O_TMPFILE", 0)
    if unnamed:
        try:
            os.close(os.open(folder, unnamed | os.O_WRONLY, 0o600))
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    probe = folder / f".{name}.probe-{secrets.token_hex(4)}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.suppress(OSError):
        probe.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The temporary file keeps the real suffix (``.tmp-1a2b3c4d.nii.gz``) because some writers
    (nibabel) choose compression by suffix. It gets the mode :func:`new_file_mode` gives. On
    failure it is deleted and ``path`` is left untouched.
    """
    target = Path(path)
    suffix = full_suffix(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    while True:
        temp = target.with_name(f".{stem}.tmp-{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        break
    try:
        os.chmod(temp, new_file_mode(target))
        yield temp
        _fsync(temp)
        os.replace(temp, target)
        _fsync(target.parent, os.O_RDONLY)  # make the rename itself durable
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _fsync(path: Path, flags: int = os.O_RDWR) -> None:
    """Flush a file's bytes (or, with ``os.O_RDONLY`` on a folder, a rename in it) to disk; best
    effort, as some filesystems and platforms cannot."""
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(
    path_or_url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Iterator[IO[bytes]]:
    """Yield a binary file; on success it appears at ``path_or_url`` whole, on failure not at all.

    Local paths: :func:`atomic_path`. Other URLs: a local temporary file uploaded in one put,
    which object stores make visible atomically.
    """
    local = local_path(path_or_url, storage_options)
    if local is not None:
        with atomic_path(os.path.abspath(local)) as temp, open(temp, "wb") as fh:
            yield fh
        return
    fs, remote = url_to_fs(os.fspath(path_or_url), storage_options)
    with tempfile.NamedTemporaryFile(suffix=".dstd") as fh:
        yield fh
        fh.flush()
        fs.put_file(fh.name, remote)
