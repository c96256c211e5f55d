"""Storage faults on real servers on 127.0.0.1: errors, stalls, responses cut short and objects
replaced mid-read. Transient faults are retried with backoff and the data comes back right; the
rest fail with a clear error; no read ever returns wrong data."""

from __future__ import annotations

import shutil

import fsspec
import numpy as np
import pytest
from helpers import BUNDLED_CT
from servers import FAULTS, fault_proxy, http_server, s3_server

import dstdformat
from dstdformat.errors import DstdError, StorageError
from dstdformat.storage.retry import RetryPolicy, ShortReadError, call_with_retries, is_transient

FAST = RetryPolicy(attempts=6, initial_delay=0.01, max_delay=0.05, timeout=1.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A lossless file of the bundled CT scan, another of the same scan changed, and the array."""
    root = tmp_path_factory.mktemp("faulty")
    scan = dstdformat.read_scan(BUNDLED_CT)
    dstdformat.save(scan, root / "ct.dstd", tile_shape=(4, 64, 64))
    other = scan.array.copy()
    other[::2] += 1
    dstdformat.save(dstdformat.Scan(other, scan.metadata), root / "other.dstd", tile_shape=(4, 64, 64))
    return root, scan.array


def test_backoff_grows_and_only_transient_errors_are_retried():
    delays = list(RetryPolicy(attempts=5, initial_delay=0.1, multiplier=2, max_delay=0.5, jitter=0).delays())
    assert delays == [0.1, 0.2, 0.4, 0.5]
    calls, slept = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "data"

    assert call_with_retries(flaky, RetryPolicy(attempts=3, jitter=0), slept.append) == "data"
    assert len(calls) == 3 and len(slept) == 2
    with pytest.raises(FileNotFoundError):
        call_with_retries(lambda: (_ for _ in ()).throw(FileNotFoundError("gone")), FAST, slept.append)
    assert is_transient(ShortReadError("cut")) and is_transient(TimeoutError())
    assert not is_transient(PermissionError()) and not is_transient(ValueError("bad"))


@pytest.mark.parametrize("fault", FAULTS)
def test_http_transient_faults_are_retried(files, fault):
    root, array = files
    with http_server(root) as server:
        server.stall_seconds = 3.0
        with dstdformat.open(f"{server.url}/ct.dstd", retry=FAST) as volume:
            server.faults.extend([fault, fault])  # the next two ranged requests fail
            got = volume[10:14]
            assert volume._source.retries >= 2
        assert server.faults_done == [fault, fault]
    np.testing.assert_array_equal(got, array[10:14])


def test_http_faults_while_opening_and_reading_everything(files):
    root, array = files
    with http_server(root) as server:
        server.faults.extend(["503", "cut", "short", "429", "stall", "500"])
        with dstdformat.open(f"{server.url}/ct.dstd", retry=FAST) as volume:
            got = volume.read()
        assert len(server.faults_done) == 6
    np.testing.assert_array_equal(got, array)


def test_http_persistent_errors_give_up_with_a_clear_message(files):
    root, _ = files
    with http_server(root) as server:
        with dstdformat.open(
            f"{server.url}/ct.dstd", retry=RetryPolicy(attempts=3, initial_delay=0.01, timeout=1.0)
        ) as volume:
            server.faults.extend(["503"] * 10)
            with pytest.raises(StorageError, match=r"after 3 attempts.*503"):
                volume[0]
            assert len(server.faults_done) == 3
            server.faults.clear()
            server.faults.extend(["short"] * 10)
            with pytest.raises(StorageError, match="cut short or the file shrank"):
                volume[0]
        before = len(server.requests)
        with pytest.raises(FileNotFoundError):  # not retried
            dstdformat.open(f"{server.url}/missing.dstd", retry=FAST)
        assert len(server.requests) - before <= 2


@pytest.mark.parametrize("replacement", ["other", "truncated"])
def test_object_replaced_after_open_never_gives_wrong_data(files, tmp_path, replacement):
    root, array = files
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(root / "ct.dstd", served / "ct.dstd")
    with http_server(served) as server:
        with dstdformat.open(f"{server.url}/ct.dstd", retry=FAST) as volume:
            np.testing.assert_array_equal(volume[0:4], array[0:4])
            data = (root / "other.dstd").read_bytes()
            if replacement == "truncated":
                data = (root / "ct.dstd").read_bytes()[: len(data) // 2]
            (served / "ct.dstd").write_bytes(data)
            refused = 0
            for key in (slice(0, 4), slice(4, 12), slice(20, 28), slice(-8, None)):
                try:
                    got = volume[key]
                except DstdError:
                    refused += 1
                    continue
                np.testing.assert_array_equal(got, array[key])  # only what was stored
            assert refused >= 1  # changed or missing sections were noticed


def test_s3_faults_through_a_proxy_are_retried(files):
    root, array = files
    with s3_server() as (endpoint, options), fault_proxy(endpoint) as proxy:
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir("faulty")
        fs.put(str(root / "ct.dstd"), "faulty/ct.dstd")
        through = {**options, "client_kwargs": {"endpoint_url": proxy.url}}
        fsspec.filesystem("s3", **through).invalidate_cache()
        proxy.stall_seconds = 3.0
        with dstdformat.open(
            "s3://faulty/ct.dstd", storage_options={**through, "skip_instance_cache": True}, retry=FAST
        ) as volume:
            proxy.faults.extend(["503", "cut", "short", "stall", "500", "429"])
            got = volume.read()
        assert len(proxy.faults_done) == 6
        np.testing.assert_array_equal(got, array)

        # Overwritten mid-read: checksums (and lengths) stop every wrong byte.
        with dstdformat.open(
            "s3://faulty/ct.dstd", storage_options={**through, "skip_instance_cache": True}, retry=FAST
        ) as volume:
            np.testing.assert_array_equal(volume[0:4], array[0:4])
            fs.put(str(root / "other.dstd"), "faulty/ct.dstd")
            refused = 0
            for key in (slice(4, 12), slice(20, 28)):
                try:
                    got = volume[key]
                except DstdError:
                    refused += 1
                    continue
                np.testing.assert_array_equal(got, array[key])
            assert refused >= 1
