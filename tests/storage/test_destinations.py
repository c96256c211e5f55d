"""save() and write_scan() check their destination before any work, as the CLI does: a folder,
a missing folder and a place no file can be created in each raise a DstdError naming the user's
path (never a raw OSError naming an internal temporary file)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import dstdformat
from dstdformat.container import writer
from dstdformat.errors import DstdError, FileMissingError, StorageError
from dstdformat.io import write_scan
from dstdformat.metadata import Scan, ScanMetadata

ARRAY = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any encoding starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("encoding started before the destination was checked")

    monkeypatch.setattr(writer, "_encode", refuse)


def _places(tmp_path):
    (tmp_path / "folder").mkdir()
    return [
        (tmp_path / "folder", StorageError, "it is a folder"),
        (tmp_path / "missing" / "x", FileMissingError, "does not exist"),
        (("/sys", "x"), StorageError, "is not writable"),  # sysfs refuses new files, even to root
    ]


@pytest.mark.parametrize("suffix", [".dstd", ".nii.gz", ".npy"])
def test_bad_destinations_are_named_before_any_work(tmp_path, no_work, suffix):
    for place, error, message in _places(tmp_path):
        path = os.path.join(*place) + suffix if isinstance(place, tuple) else f"{place}{suffix}"
        if place == tmp_path / "folder":
            path = str(tmp_path / "folder")
            if suffix != ".dstd":
                (tmp_path / f"folder{suffix}").mkdir()
                path = str(tmp_path / f"folder{suffix}")
        with pytest.raises(error, match=message) as caught:
            if suffix == ".dstd":
                dstdformat.save(ARRAY, path)
            else:
                write_scan(Scan(ARRAY, ScanMetadata()), path)
        assert isinstance(caught.value, DstdError) and path in str(caught.value)
        assert ".tmp-" not in str(caught.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named(tmp_path, no_work):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="is not writable"):
            dstdformat.save(ARRAY, folder / "x.dstd")
    finally:
        folder.chmod(0o755)


def test_a_good_destination_leaves_no_probe_behind(tmp_path):
    dstdformat.save(ARRAY, tmp_path / "x.dstd")
    write_scan(Scan(ARRAY, ScanMetadata()), tmp_path / "x.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dstd", "x.npy"]
