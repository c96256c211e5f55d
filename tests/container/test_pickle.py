"""Open volumes pickle as their byte source (path, URL, bytes), so dask.distributed can ship them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from servers import http_server

import dstdformat
from dstdformat.errors import StorageError


@pytest.fixture
def saved(tmp_path):
    array = np.arange(6 * 20 * 24, dtype=np.int16).reshape(6, 20, 24)
    dstdformat.save(array, tmp_path / "v.dstd", tile_shape=(2, 10, 12))
    return tmp_path, array


def test_local_memory_and_http_volumes_survive_pickling(saved):
    folder, array = saved
    with http_server(folder) as server:
        for source in (folder / "v.dstd", (folder / "v.dstd").read_bytes(), f"{server.url}/v.dstd"):
            volume = dstdformat.open(source)
            volume[1]  # caches and locks in use must not get in the way
            copy = pickle.loads(pickle.dumps(volume))
            np.testing.assert_array_equal(copy[2:5, 3:9], array[2:5, 3:9])
            assert copy.io_stats is not volume.io_stats  # its own source, reopened


def test_a_closed_volume_does_not_pickle(saved):
    folder, _ = saved
    volume = dstdformat.open(folder / "v.dstd")
    volume.close()
    with pytest.raises(StorageError, match="closed"):
        pickle.dumps(volume)
