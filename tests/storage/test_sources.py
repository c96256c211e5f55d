from __future__ import annotations

import fsspec
import pytest

from dstdformat import StorageError
from dstdformat.storage import LocalFileSource, atomic_output, coalesce, open_source


def test_coalesce_merges_close_ranges():
    assert coalesce([(10, 20), (0, 5), (24, 30)], max_gap=4) == [(0, 5), (10, 30)]
    assert coalesce([(0, 5), (100, 110)], max_gap=10) == [(0, 5), (100, 110)]
    assert coalesce([(0, 50), (10, 20)], max_gap=0) == [(0, 50)]


def test_local_source_reads_and_counts(tmp_path):
    path = tmp_path / "bytes.bin"
    path.write_bytes(bytes(range(256)) * 4)
    source = open_source(path)
    assert isinstance(source, LocalFileSource) and source.size == 1024
    a, b, c = source.read_ranges([(0, 4), (10, 12), (1000, 1024)], max_gap=16)
    assert (a, b, c[-1:]) == (bytes([0, 1, 2, 3]), bytes([10, 11]), bytes([255]))
    assert source.stats.requests == 2 and source.stats.bytes_fetched == 12 + 24
    with pytest.raises(StorageError, match="outside"):
        source.read_ranges([(1000, 1025)])
    source.close()


def test_source_notices_a_file_that_shrank(tmp_path):
    path = tmp_path / "bytes.bin"
    path.write_bytes(b"x" * 100)
    source = open_source(path)
    path.write_bytes(b"x" * 50)
    with pytest.raises(StorageError, match="got 0"):
        source.read_ranges([(60, 80)])


def test_fsspec_source_and_atomic_upload():
    with atomic_output("memory://store/a.bin") as fh:
        fh.write(b"hello world")
    source = open_source("memory://store/a.bin")
    assert source.read_ranges([(6, 11)]) == [b"world"]
    fs = fsspec.filesystem("memory")
    with pytest.raises(RuntimeError), atomic_output("memory://store/b.bin") as fh:
        fh.write(b"partial")
        raise RuntimeError("writer died")
    assert not fs.exists("/store/b.bin")


def test_local_atomic_output_cleans_up(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(target) as fh:
        fh.write(b"partial")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(f"file://{target}") as fh:
        fh.write(b"whole")
    assert target.read_bytes() == b"whole"


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(StorageError, match="directory"):
        open_source(tmp_path)


def test_atomic_output_respects_umask_and_existing_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "new.bin") as fh:
            fh.write(b"x")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o644
        (tmp_path / "new.bin").chmod(0o640)
        with atomic_output(tmp_path / "new.bin") as fh:
            fh.write(b"y")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_missing_backends_name_the_install(monkeypatch):
    """fsspec's bare ImportError for a protocol without its backend becomes one StorageError that
    says what to pip install (here HTTP as if aiohttp were missing, and gcsfs)."""
    import fsspec.core

    import dstdformat

    def missing(url, **options):
        raise ImportError('HTTPFileSystem requires "requests" and "aiohttp" to be installed')

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(StorageError, match=r"http:// URLs needs.*pip install aiohttp requests"):
        dstdformat.open("http://127.0.0.1:9/scan.dstd")
    with pytest.raises(StorageError, match="pip install gcsfs"):
        dstdformat.open_collection("gs://bucket/*.dstd")
