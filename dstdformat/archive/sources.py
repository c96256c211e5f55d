"""Finding the scans of a collection: NIfTI and HDF5 files, and DICOM series folders.

The source is a folder (searched recursively), a glob, or one file, local or any fsspec URL. Each
scan gets a *name*: its path relative to the source root without the format suffix (a DICOM
series: its folder's path), which is where it goes in the archive and its key in the catalog.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, StorageError
from ..storage.filesystems import url_to_fs

#: Suffix -> format of the files read as one scan each.
SCAN_SUFFIXES = {".nii.gz": "nifti", ".nii": "nifti", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5"}
DICOM_SUFFIX = ".dcm"
_GLOB_CHARS = set("*?[")
#: Files that are certainly not DICOM (skipped without reading their first bytes).
_NOT_DICOM = {
    ".txt",
    ".md",
    ".json",
    ".jsonl",
    ".csv",
    ".xml",
    ".html",
    ".pdf",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".zip",
    ".tar",
    ".gz",
    ".py",
    ".yaml",
    ".yml",
    ".npy",
    ".dstd",
    ".log",
    ".pkl",
    ".safetensors",
    ".mha",
    ".mhd",
    ".nrrd",
    ".ini",
    ".cfg",
}


@dataclass(frozen=True)
class SourceScan:
    """One scan to archive: a file, or a DICOM series folder (``files`` lists its slices)."""

    name: str
    url: str
    format: str
    nbytes: int
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "format": self.format,
            "nbytes": self.nbytes,
            "files": list(self.files),
        }


@dataclass(frozen=True)
class Discovery:
    scans: list[SourceScan]
    ignored: list[str]


def _scan_suffix(name: str) -> str | None:
    lower = name.lower()
    for suffix in SCAN_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def _open_fs(url: str, storage_options: dict[str, Any] | None):
    return url_to_fs(url, storage_options)


def discover(source: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Discovery:
    """Every scan under ``source``, sorted by name; files that are not scans are listed apart."""
    text = os.fspath(source).rstrip("/")
    fs, path = _open_fs(text, storage_options)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    local = protocol in ("file", "local")

    def url(p: str) -> str:
        return p if local else f"{protocol}://{p}"

    try:
        if any(c in path for c in _GLOB_CHARS):
            root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
            entries = fs.glob(path, detail=True)
            files: dict[str, int] = {}
            for p, info in entries.items():
                if info.get("type") == "directory":
                    files.update(_files_under(fs, p))
                else:
                    files[p] = int(info.get("size") or 0)
        elif fs.isdir(path):
            root, files = path, _files_under(fs, path)
        elif fs.isfile(path):
            root, files = posixpath.dirname(path), {path: int(fs.size(path) or 0)}
        else:
            raise InvalidInputError(f"{text}: no such file or folder")
    except (OSError, ValueError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise StorageError(f"cannot list {text}: {exc}") from exc

    scans: list[SourceScan] = []
    ignored: list[str] = []
    dicom_folders: dict[str, list[str]] = {}
    for p in sorted(files):
        base = posixpath.basename(p)
        if base.startswith("."):
            continue
        suffix = _scan_suffix(base)
        if suffix is not None:
            name = _relative(root, p)[: -len(suffix)]
            scans.append(SourceScan(name, url(p), SCAN_SUFFIXES[suffix], files[p]))
        elif _looks_dicom(fs, p):
            dicom_folders.setdefault(posixpath.dirname(p), []).append(p)
        else:
            ignored.append(url(p))
    for folder, members in dicom_folders.items():
        name = _relative(root, folder) if folder != root else posixpath.basename(root)
        scans.append(
            SourceScan(
                name or "series",
                url(folder),
                "dicom",
                sum(files[m] for m in members),
                tuple(url(m) for m in members),
            )
        )
    return Discovery(sorted(scans, key=lambda s: s.name), ignored)


def _files_under(fs, path: str) -> dict[str, int]:
    found = fs.find(path, detail=True)
    return {p: int(info.get("size") or 0) for p, info in found.items() if info.get("type") != "directory"}


def _relative(root: str, path: str) -> str:
    root = root.rstrip("/")
    return path[len(root) + 1 :] if root and path.startswith(root + "/") else path.lstrip("/")


def _looks_dicom(fs, path: str) -> bool:
    """``.dcm``, or the DICM magic at byte 128 (series are often named by UID, with no suffix)."""
    lower = path.lower()
    if lower.endswith(DICOM_SUFFIX):
        return True
    if posixpath.splitext(lower)[1] in _NOT_DICOM:
        return False
    try:
        with fs.open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def stage(scan: SourceScan, folder: Path, storage_options: dict[str, Any] | None) -> tuple[Path, str]:
    """A local path to read ``scan`` from (downloaded into ``folder`` when remote) and the sha256
    of its bytes (a DICOM series: of every slice file's name and bytes, in name order)."""
    digest = hashlib.sha256()
    members = scan.files or (scan.url,)
    fs, _ = _open_fs(members[0], storage_options)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    local = protocol in ("file", "local")
    target_dir = folder / "series" if scan.files else folder
    target_dir.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    for member in sorted(members):
        _, member_path = _open_fs(member, storage_options)
        base = posixpath.basename(member_path)
        if scan.files:
            digest.update(base.encode() + b"\0")
        if local:
            local_file = Path(member_path)
            _hash_file(local_file, digest)
            staged.append(local_file)
            continue
        target = target_dir / base
        with fs.open(member_path, "rb") as src, open(target, "wb") as out:
            for chunk in iter(lambda src=src: src.read(1 << 22), b""):
                digest.update(chunk)
                out.write(chunk)
        staged.append(target)
    if scan.files:
        if local:  # read the series where it is
            return Path(staged[0]).parent, digest.hexdigest()
        return target_dir, digest.hexdigest()
    return staged[0], digest.hexdigest()


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as fh:
        shutil.copyfileobj(fh, _DigestWriter(digest), 1 << 22)


class _DigestWriter:
    def __init__(self, digest) -> None:
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def check_names(scans: Iterable[SourceScan]) -> None:
    """Names must be unique: ``ct.nii`` and ``ct.nii.gz`` in one folder would share a file."""
    seen: dict[str, str] = {}
    clashes = []
    for scan in scans:
        if scan.name in seen:
            clashes.append(f"{seen[scan.name]} and {scan.url}")
        seen.setdefault(scan.name, scan.url)
    if clashes:
        raise InvalidInputError(
            "two sources would be archived under one name (rename or move one of each pair): "
            + "; ".join(clashes[:5])
            + (f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else "")
        )
