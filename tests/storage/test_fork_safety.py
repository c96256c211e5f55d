"""Remote volumes survive being handed to other processes: a Volume or a collection opened by
URL in a parent and used in a forked child (a PyTorch DataLoader worker's default on Linux)
makes its own filesystem there instead of touching the parent's event loop; spawned children
reopen from the pickled URL. Only library errors escape. Real servers on 127.0.0.1."""

from __future__ import annotations

import multiprocessing

import fsspec
import numpy as np
import pytest
from helpers import BUNDLED_CT
from servers import http_server, s3_server

import dstdformat
from dstdformat.errors import StorageError


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fork")
    array = dstdformat.read_scan(BUNDLED_CT).array[:24, :96, :96].copy()
    dstdformat.save(array, root / "ct.dstd", tile_shape=(8, 96, 96))
    dstdformat.save(
        array, root / "ct32.dstd", codec="deepstd", codec_options={"ratio": 32}, tile_shape=(8, 96, 96)
    )
    return root, array


def _slices(volume, ks=(3, 12, 20)) -> list[np.ndarray]:
    return [volume[k] for k in ks]


def _answer(queue, function, args) -> None:
    try:
        queue.put(("ok", function(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def _in_children(method: str, function, *args):
    """``function(*args)`` in two children made by ``method``. Forked children
    inherit the objects as they are in memory (as a DataLoader's workers do); spawned ones get
    them pickled."""
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    children = [context.Process(target=_answer, args=(queue, function, args)) for _ in range(2)]
    for child in children:
        child.start()
    try:
        answers = [queue.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    errors = [value for status, value in answers if status != "ok"]
    assert not errors, errors
    return [value for _, value in answers]


def _check(volume, expected):
    for method in ("fork", "spawn"):
        for got in _in_children(method, _slices, volume):
            for g, want in zip(got, expected):
                np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("name", ["ct.dstd", "ct32.dstd"])
def test_s3_volumes_opened_in_the_parent_read_in_forked_and_spawned_children(served, name):
    root, _ = served
    with s3_server() as (_, options):
        fs = fsspec.filesystem("s3", **options)
        bucket = f"fork-{name.replace('.', '-')}"
        fs.mkdir(bucket)
        fs.put(str(root / name), f"{bucket}/{name}")
        volume = dstdformat.open(f"s3://{bucket}/{name}", storage_options=options)
        expected = _slices(dstdformat.open(root / name))
        for got, want in zip(_slices(volume), expected):  # the parent's event loop is running now
            np.testing.assert_array_equal(got, want)
        _check(volume, expected)
        for got, want in zip(_slices(volume), expected):  # and the parent still reads
            np.testing.assert_array_equal(got, want)


def test_http_volumes_and_s3_collections_read_in_forked_children(served):
    root, _ = served
    expected = _slices(dstdformat.open(root / "ct.dstd"))
    with http_server(root) as server:
        volume = dstdformat.open(f"{server.url}/ct.dstd")
        _slices(volume)
        _check(volume, expected)
    with s3_server() as (_, options):
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir("fork-study")
        fs.put(str(root / "ct.dstd"), "fork-study/a.dstd")
        fs.put(str(root / "ct32.dstd"), "fork-study/b.dstd")
        scans = dstdformat.open_collection("s3://fork-study/*.dstd", storage_options=options)
        _slices(scans["a.dstd"])  # opened (and read) in the parent
        _check(scans["a.dstd"], expected)
        forked = _in_children("fork", _slices, scans["b.dstd"])
        local = _slices(dstdformat.open(root / "ct32.dstd"))
        for got in forked:
            for g, want in zip(got, local):
                np.testing.assert_array_equal(g, want)


def test_an_unexpected_filesystem_error_is_a_storage_error(served, monkeypatch):
    root, _ = served
    with http_server(root) as server:
        volume = dstdformat.open(f"{server.url}/ct.dstd")
        source = volume.reader.source

        def broken(*args, **kwargs):
            raise RuntimeError("This class is not fork-safe")

        monkeypatch.setattr(source, "_cat_ranges", broken)
        with pytest.raises(StorageError, match=r"ct\.dstd failed: RuntimeError: This class is not fork-safe"):
            volume[5]
