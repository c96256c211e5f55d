"""`.dstd` volumes as dask arrays and as xarray datasets (engine="dstd"), lazily."""

from __future__ import annotations

import pickle

import fsspec
import numpy as np
import pytest
from helpers import BUNDLED_CT
from servers import http_server

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
    np.testing.assert_array_equal(
        volume.to_dask(chunks=(16, 50, 61)).sum().compute(), scan.array.sum(dtype=np.int64)
    )


def test_xarray_engine_gives_a_lazy_dataset_in_millimetres(saved):
    path, scan = saved
    ds = xr.open_dataset(path, engine="dstd")
    ct = ds["ct"]
    assert ct.dims == ("k", "j", "i") and ct.dtype == np.int16
    assert not isinstance(ct.variable._data, np.ndarray)  # not loaded
    # World positions: k runs along z from the affine's origin (94.30 mm), 3 mm a slice.
    np.testing.assert_allclose(ds["k"].values[:3], scan.affine[2, 3] + np.array([0.0, 3.0, 6.0]))
    assert ds["k"].attrs["units"] == "mm" and ds["k"].attrs["world_axis"] == "z"
    np.testing.assert_allclose(ds.attrs["affine"], scan.affine)
    assert ds.attrs["oblique"] == 0
    np.testing.assert_array_equal(
        ct.sel(k=scan.affine[2, 3] + 150.0, method="nearest").values, scan.array[50]
    )
    np.testing.assert_array_equal(ct.isel(j=slice(10, 20), i=7).values, scan.array[:, 10:20, 7])
    assert xr.open_dataset(path)["ct"].shape == scan.array.shape  # found without engine=


def test_xarray_engine_over_fsspec(saved):
    path, scan = saved
    with fsspec.open("memory://xr/ct.dstd", "wb") as fh:
        fh.write(path.read_bytes())
    ds = xr.open_dataset("memory://xr/ct.dstd", engine="dstd")
    np.testing.assert_array_equal(ds["ct"][3].values, scan.array[3])


def flipped_scan():
    """k along z (2.5 mm), j along y flipped (-0.8 mm), i along x; the origin at (201, 59, -679.8)
    mm in (x, y, z) -- the layout a chest CT from DICOM often has."""
    affine = np.array([[0, 0, 0.8, 201.0], [0, -0.8, 0, 59.0], [2.5, 0, 0, -679.8], [0, 0, 0, 1]])
    array = np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10)
    return dstdformat.Scan(array, dstdformat.ScanMetadata(affine=affine))


def test_xarray_coordinates_are_world_positions_with_flips(tmp_path):
    scan = flipped_scan()
    path = tmp_path / "flipped.dstd"
    dstdformat.save(scan, path, codec="lossless")
    ds = xr.open_dataset(path, engine="dstd")
    np.testing.assert_allclose(ds["k"].values, -679.8 + 2.5 * np.arange(6))
    np.testing.assert_allclose(ds["j"].values, 59.0 - 0.8 * np.arange(8))  # decreasing: flipped
    np.testing.assert_allclose(ds["i"].values, 201.0 + 0.8 * np.arange(10))
    assert [ds[d].attrs["world_axis"] for d in ("k", "j", "i")] == ["z", "y", "x"]
    # Selecting by millimetres gives the voxel the affine puts there.
    voxel = ds["ct"].sel(k=-674.8, j=56.6, i=204.2, method="nearest").item()
    world = scan.affine @ np.array([2, 3, 4, 1])
    assert voxel == scan.array[2, 3, 4] and np.allclose(world[:3], [204.2, 56.6, -674.8])


def test_oblique_affines_are_flagged():
    from dstdformat.metadata import axis_geometry

    angle = np.deg2rad(10)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    geometry = axis_geometry(affine)
    assert geometry.oblique and geometry.world_axes == ("x", "y", "z")
    assert not axis_geometry(flipped_scan().affine).oblique


def test_to_dask_and_xarray_graphs_run_on_distributed_worker_processes(saved):
    """What users who outgrow one machine run: a LocalCluster with worker processes."""
    distributed = pytest.importorskip("distributed")
    path, scan = saved
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        volume = dstdformat.open(path)
        assert float(volume.to_dask().mean().compute()) == pytest.approx(float(volume.read().mean()))
        ds = xr.open_dataset(path, engine="dstd", chunks={})
        np.testing.assert_array_equal(ds["ct"][50].compute().values, volume[50])
        with http_server(path.parent) as server:  # an fsspec URL: each worker reopens it
            remote = dstdformat.open(f"{server.url}/{path.name}")
            assert len(pickle.dumps(remote)) < path.stat().st_size / 100  # the URL, not the bytes
            np.testing.assert_array_equal(remote.to_dask()[40:60].compute(), volume[40:60])
            over_http = xr.open_dataset(f"{server.url}/{path.name}", engine="dstd", chunks={})
            np.testing.assert_array_equal(over_http["ct"][7].compute().values, volume[7])
