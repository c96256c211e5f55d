"""Atomic file writes shared by the format writers: a crash never leaves a half-written output."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

#: Suffixes that only say how the real format is compressed (``.nii.gz`` is NIfTI, gzipped).
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst"}


def full_suffix(path: str | os.PathLike[str]) -> str:
    """The format suffix of ``path``, keeping a compression suffix with its format (``.nii.gz``)."""
    suffixes = Path(path).suffixes
    if not suffixes:
        return ""
    if suffixes[-1].lower() in _COMPRESSION_SUFFIXES and len(suffixes) >= 2:
        return "".join(suffixes[-2:])
    return suffixes[-1]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    The temporary file keeps the real suffix (``.tmp-1a2b3c4d.nii.gz``) because some writers
    (nibabel) choose compression by suffix. It is created empty with the usual permissions (the
    umask applies), so the final file looks like any other. On failure it is deleted and
    ``path`` is left untouched.
    """
    target = Path(path)
    suffix = full_suffix(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    while True:
        temp = target.with_name(f".{stem}.tmp-{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        break
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _fsync(path: Path) -> None:
    """Flush the file's bytes to disk before the rename makes it visible (best effort)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
