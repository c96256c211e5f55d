"""`dstd to-zarr` and reading the result with zarr, dask and xarray, lazily."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr
from helpers import BUNDLED_CT

import dstdformat


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_to_zarr_keeps_geometry_and_reads_lazily(tmp_path, zarr_format):
    dask_array = pytest.importorskip("dask.array")
    xr = pytest.importorskip("xarray")
    store = tmp_path / "ct.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "dstdformat", "to-zarr", str(BUNDLED_CT), str(store), "--format",
         str(zarr_format), "--ratio", "64", "--chunks", "32", "64", "64", "-q"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    scan = dstdformat.read_scan(BUNDLED_CT)
    group = zarr.open_group(store, mode="r")
    attrs = group.attrs.asdict()
    np.testing.assert_allclose(attrs["dstdformat"]["affine"], scan.affine)
    assert attrs["dstdformat"]["spacing"] == [3.0, 3.0, 3.0]
    multiscales = attrs["multiscales"] if zarr_format == 2 else attrs["ome"]["multiscales"]
    assert multiscales[0]["datasets"][0]["path"] == "0"
    array = group["0"]
    assert array.shape == scan.array.shape and array.dtype == np.int16 and array.chunks == (32, 64, 64)

    lazy = dask_array.from_zarr(str(store), component="0")
    assert lazy.chunksize == (32, 64, 64)
    middle = lazy[56].compute()  # one row of chunks, not the volume
    error = np.abs(middle.astype(float) - scan.array[56]).mean()
    assert 0 < error < 80

    ds = xr.open_zarr(store, zarr_format=zarr_format, consolidated=False)
    variable = ds["0"]
    assert variable.dims == ("k", "j", "i") and variable.dtype == np.int16
    assert variable.chunks is not None  # dask-backed, not loaded
    np.testing.assert_array_equal(variable.isel(k=56).values, middle)
