"""`.dstd` volumes as dask arrays and as xarray datasets (engine="dstd"), lazily."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
from helpers import BUNDLED_CT

import dstdformat

xr = pytest.importorskip("xarray")
pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    scan = dstdformat.read_scan(BUNDLED_CT)
    path = tmp_path_factory.mktemp("x") / "ct.dstd"
    dstdformat.save(scan, path)
    return path, scan


def test_to_dask_chunks_follow_the_tiles(saved):
    path, scan = saved
    volume = dstdformat.open(path)
    lazy = volume.to_dask()
    assert lazy.chunksize == volume.tile_shape and lazy.dtype == np.int16
    assert volume.io_stats.requests <= 2  # building the graph read nothing
    np.testing.assert_array_equal(lazy[60:70, 5].compute(), scan.array[60:70, 5])
    np.testing.assert_array_equal(volume.to_dask(chunks=(16, 50, 61)).sum().compute(),
                                  scan.array.sum(dtype=np.int64))


def test_xarray_engine_gives_a_lazy_dataset_in_millimetres(saved):
    path, scan = saved
    ds = xr.open_dataset(path, engine="dstd")
    ct = ds["ct"]
    assert ct.dims == ("k", "j", "i") and ct.dtype == np.int16
    assert not isinstance(ct.variable._data, np.ndarray)  # not loaded
    np.testing.assert_allclose(ds["k"].values[:3], [0.0, 3.0, 6.0])
    assert ds["k"].attrs["units"] == "mm"
    np.testing.assert_allclose(ds.attrs["affine"], scan.affine)
    np.testing.assert_array_equal(ct.sel(k=150.0).values, scan.array[50])
    np.testing.assert_array_equal(ct.isel(j=slice(10, 20), i=7).values, scan.array[:, 10:20, 7])
    assert xr.open_dataset(path)["ct"].shape == scan.array.shape  # found without engine=


def test_xarray_engine_over_fsspec(saved):
    path, scan = saved
    with fsspec.open("memory://xr/ct.dstd", "wb") as fh:
        fh.write(path.read_bytes())
    ds = xr.open_dataset("memory://xr/ct.dstd", engine="dstd")
    np.testing.assert_array_equal(ds["ct"][3].values, scan.array[3])
