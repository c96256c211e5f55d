"""Lazy reads over real servers on 127.0.0.1: HTTP (ours, with and without Range support) and S3
(moto). A slice read fetches only its sections, in few requests, and bad servers fail loudly."""

from __future__ import annotations

import shutil
import time

import fsspec
import numpy as np
import pytest
from helpers import BUNDLED_CT
from servers import http_server, s3_server

import dstdformat
from dstdformat.container.reader import PROBE_SIZE
from dstdformat.errors import ChecksumError, StorageError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A lossless and a deepstd file of the bundled CT scan, with the scan itself."""
    root = tmp_path_factory.mktemp("served")
    scan = dstdformat.read_scan(BUNDLED_CT)
    dstdformat.save(scan, root / "ct.dstd")
    dstdformat.save(scan, root / "ct256.dstd", codec="deepstd", codec_options={"ratio": 128})
    return root, scan.array


def test_opening_a_file_with_a_large_header_costs_one_more_round_trip(tmp_path):
    """The probe covers typical headers; a larger one is fetched in one more request, exactly
    the missing bytes, never the probe's 2 x 64 KiB of the past."""
    # a header three probes long, packed too: hex digits of random bytes do not deflate below half
    notes = {"note": np.random.default_rng(3).bytes(3 * PROBE_SIZE).hex()}
    dstdformat.save(np.zeros((4, 8, 8), np.int16), tmp_path / "big.dstd", attributes=notes)
    with http_server(tmp_path) as server:
        volume = dstdformat.open(f"{server.url}/big.dstd")
        assert volume.metadata.attributes["note"] == notes["note"]
        header_end = volume.reader.preamble.header_offset + volume.reader.preamble.header_length
        assert volume.io_stats.requests == 3
        assert volume.io_stats.bytes_fetched == 2 * PROBE_SIZE + header_end - PROBE_SIZE


def test_a_small_remote_file_read_whole_at_open_costs_no_more_requests(tmp_path):
    array = np.arange(4 * 16 * 16, dtype=np.int16).reshape(4, 16, 16)
    dstdformat.save(array, tmp_path / "small.dstd")
    assert (tmp_path / "small.dstd").stat().st_size < PROBE_SIZE
    with http_server(tmp_path) as server:
        volume = dstdformat.open(f"{server.url}/small.dstd")
        np.testing.assert_array_equal(volume[2], array[2])
        np.testing.assert_array_equal(volume.read(), array)
        assert volume.io_stats.requests == 2 and len(server.requests) == 2


def _slice_cost(volume, key):
    before = (volume.io_stats.bytes_fetched, volume.io_stats.requests)
    data = volume[key]
    return data, volume.io_stats.bytes_fetched - before[0], volume.io_stats.requests - before[1]


def test_http_reads_fetch_only_what_a_slice_needs(files):
    root, array = files
    size = (root / "ct.dstd").stat().st_size
    with http_server(root) as server:
        volume = dstdformat.open(f"{server.url}/ct.dstd")
        # Opening is two concurrent range requests, the second a suffix range: no HEAD for the size.
        assert volume.io_stats.requests == 2
        assert sorted(server.requests) == [
            ("GET", f"bytes=-{PROBE_SIZE}"),
            ("GET", f"bytes=0-{PROBE_SIZE - 1}"),
        ]
        assert volume.reader.file_size == size
        data, fetched, requests = _slice_cost(volume, 56)
        np.testing.assert_array_equal(data, array[56])
        assert requests <= 4 and fetched < 0.15 * size
        data, _, requests = _slice_cost(volume, np.s_[:, 50, :])
        np.testing.assert_array_equal(data, array[:, 50, :])
        local = dstdformat.open(root / "ct256.dstd")
        remote = dstdformat.open(f"{server.url}/ct256.dstd")
        np.testing.assert_array_equal(remote[40:44, 10:60], local[40:44, 10:60])


def test_a_server_that_ignores_range_is_refused(files, tmp_path):
    """Refused on the first responses' status lines, without reading their bodies (a 64 MB file
    is not downloaded twice), with what to do instead."""
    root, _ = files
    with (
        http_server(root, ignore_range=True) as server,
        pytest.raises(StorageError, match="ignores range requests.*simplecache::"),
    ):
        dstdformat.open(f"{server.url}/ct.dstd")[0]
    big = tmp_path / "big.dstd"
    big.write_bytes((root / "ct.dstd").read_bytes() + bytes(64 << 20))
    with http_server(tmp_path, ignore_range=True) as server:
        with pytest.raises(StorageError, match="ignores range requests"):
            dstdformat.open(f"{server.url}/big.dstd")
        time.sleep(0.5)  # let the handlers notice the closed connections
        assert len(server.requests) == 2 and server.bytes_sent < big.stat().st_size / 2


def test_missing_objects_and_objects_that_change_after_open(files, tmp_path):
    root, _ = files
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(root / "ct.dstd", served / "ct.dstd")
    with http_server(served) as server:
        with pytest.raises(FileNotFoundError, match="no file at .*nope.dstd"):
            dstdformat.open(f"{server.url}/nope.dstd")
        shutil.copy(root / "ct.dstd", served / "private.dstd")
        with pytest.raises(StorageError, match=r"no permission to read .*private.dstd \(HTTP 403\)"):
            dstdformat.open(f"{server.url}/private.dstd")
        volume = dstdformat.open(f"{server.url}/ct.dstd")
        same_length = dstdformat.open(f"{server.url}/ct.dstd")
        original = (served / "ct.dstd").read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF  # same length, other content
        (served / "ct.dstd").write_bytes(bytes(data))
        with pytest.raises(ChecksumError):
            same_length.read()
        (served / "ct.dstd").write_bytes(original[: len(original) // 2])  # replaced by a shorter one
        with pytest.raises(StorageError, match="changed|cut short"):
            volume.read()
        with pytest.raises(dstdformat.TruncatedFileError):
            dstdformat.open(f"{server.url}/ct.dstd")


def test_s3_lazy_reads_through_moto(files):
    pytest.importorskip("s3fs")
    root, array = files
    with s3_server() as (_, options):
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir("scans")
        fs.put(str(root / "ct.dstd"), "scans/ct.dstd")
        fs.put(str(root / "ct256.dstd"), "scans/ct256.dstd")
        volume = dstdformat.open("s3://scans/ct.dstd", storage_options=options)
        assert volume.io_stats.requests <= 2
        data, fetched, requests = _slice_cost(volume, 70)
        np.testing.assert_array_equal(data, array[70])
        assert requests <= 4 and fetched < 0.15 * fs.size("scans/ct.dstd")
        lossy = dstdformat.open("s3://scans/ct256.dstd", storage_options=options)
        np.testing.assert_array_equal(lossy[70], dstdformat.open(root / "ct256.dstd")[70])
        with pytest.raises(FileNotFoundError):
            dstdformat.open("s3://scans/missing.dstd", storage_options=options)


def test_memory_and_chained_cache_urls(files, tmp_path):
    root, array = files
    with fsspec.open("memory://scans/ct.dstd", "wb") as fh:
        fh.write((root / "ct.dstd").read_bytes())
    np.testing.assert_array_equal(dstdformat.open("memory://scans/ct.dstd")[3], array[3])
    with http_server(root) as server:
        url = f"simplecache::{server.url}/ct.dstd"
        volume = dstdformat.open(url, storage_options={"simplecache": {"cache_storage": str(tmp_path)}})
        np.testing.assert_array_equal(volume[10:12], array[10:12])


def test_no_permission_is_a_clear_error():
    from fsspec.implementations.memory import MemoryFileSystem

    class DeniedFileSystem(MemoryFileSystem):
        protocol = "denied"

        def size(self, path):
            raise PermissionError("Access Denied")

        def cat_file(self, path, start=None, end=None, **kwargs):
            raise PermissionError("Access Denied")

    fsspec.register_implementation("denied", DeniedFileSystem, clobber=True)
    with pytest.raises(StorageError, match="no permission to read denied://bucket/ct.dstd"):
        dstdformat.open("denied://bucket/ct.dstd")


def test_deepstd_zarr_arrays_on_s3(files):
    """A DeepSTD zarr array on S3 reads lazily through zarr's own fsspec store."""
    pytest.importorskip("s3fs")
    import zarr

    _, array = files
    with s3_server() as (_, options):
        fsspec.filesystem("s3", **options).mkdir("arrays")
        store = zarr.storage.FsspecStore.from_url("s3://arrays/ct.zarr", storage_options=options)
        z = zarr.create_array(
            store,
            shape=array.shape,
            chunks=(32, *array.shape[1:]),
            dtype="int16",
            serializer=dstdformat.DeepSTDCodec(max_error=5),
            compressors=None,
        )
        z[:] = array
        reader = zarr.open_array(
            zarr.storage.FsspecStore.from_url("s3://arrays/ct.zarr", storage_options=options, read_only=True),
            mode="r",
        )
        assert np.abs(reader[40].astype(int) - array[40]).max() <= 5


def test_collections_on_s3_open_only_what_is_used(files, tmp_path):
    pytest.importorskip("s3fs")
    root, array = files
    with s3_server() as (_, options):
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir("study")
        for n in range(3):
            fs.put(str(root / "ct.dstd"), f"study/scan{n}.dstd")
        fs.pipe("study/notes.txt", b"not a scan")
        collection = dstdformat.open_collection("s3://study/*", storage_options=options)
        assert sorted(collection) == ["scan0.dstd", "scan1.dstd", "scan2.dstd"]
        assert "1 opened" not in repr(collection)
        np.testing.assert_array_equal(collection["scan1.dstd"][20], array[20])
        assert "3 files, 1 opened" in repr(collection)
        collection.close()
    local = dstdformat.open_collection(root / "*.dstd")
    assert sorted(local) == ["ct.dstd", "ct256.dstd"]
    np.testing.assert_array_equal(local["ct.dstd"][5], array[5])
