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
        [
            sys.executable,
            "-m",
            "dstdformat",
            "to-zarr",
            str(BUNDLED_CT),
            str(store),
            "--format",
            str(zarr_format),
            "--ratio",
            "64",
            "--chunks",
            "32",
            "64",
            "64",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
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


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_transformations_are_in_axis_order_and_keep_flips(tmp_path, zarr_format):
    """k along z, j along y flipped, i along x: OME-Zarr's translation + scale x index must give
    each axis' world position (the affine's translation is in x, y, z order, not k, j, i)."""
    from dstdformat.interop.to_zarr import scan_to_zarr

    affine = np.array([[0, 0, 0.8, 201.0], [0, -0.8, 0, 59.0], [2.5, 0, 0, -679.8], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    scan = dstdformat.Scan(
        rng.normal(0, 50, (16, 32, 32)).astype(np.int16), dstdformat.ScanMetadata(affine=affine)
    )
    store = tmp_path / "flipped.zarr"
    scan_to_zarr(scan, store, zarr_format=zarr_format, codec_options={"ratio": 8})
    attrs = zarr.open_group(store, mode="r").attrs.asdict()
    multiscales = attrs["multiscales"] if zarr_format == 2 else attrs["ome"]["multiscales"]
    scale, translation = multiscales[0]["datasets"][0]["coordinateTransformations"]
    assert translation["translation"] == [-679.8, 59.0, 201.0]
    assert scale["scale"] == [2.5, -0.8, 0.8]
    index = np.array([3, 5, 7])
    world = affine @ np.append(index, 1)
    placed = np.array(translation["translation"]) + np.array(scale["scale"]) * index
    np.testing.assert_allclose(placed, world[[2, 1, 0]])  # axis k on z, j on y, i on x
    assert attrs["dstdformat"]["world_axes"] == ["z", "y", "x"] and not attrs["dstdformat"]["oblique"]
    np.testing.assert_allclose(attrs["dstdformat"]["affine"], affine)


def test_from_zarr_turns_the_store_back_into_dstd_and_nifti(tmp_path):
    import nibabel as nib

    scan = dstdformat.read_scan(BUNDLED_CT)
    store = tmp_path / "ct.zarr"
    dstd = [sys.executable, "-m", "dstdformat"]
    subprocess.run(
        [*dstd, "to-zarr", str(BUNDLED_CT), str(store), "--ratio", "32", "-q"], check=True, timeout=300
    )
    decoded = zarr.open_group(store, mode="r")["0"][...]
    result = subprocess.run(
        [*dstd, "from-zarr", str(store), str(tmp_path / "back.dstd")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    with dstdformat.open(tmp_path / "back.dstd") as volume:  # lossless: the zarr's own voxels
        np.testing.assert_array_equal(volume.read(), decoded)
        np.testing.assert_allclose(volume.affine, scan.affine)
    subprocess.run(
        [*dstd, "from-zarr", str(store), str(tmp_path / "back.nii.gz"), "-q"], check=True, timeout=300
    )
    image = nib.load(tmp_path / "back.nii.gz")
    np.testing.assert_allclose(image.affine, nib.load(BUNDLED_CT).affine)
    np.testing.assert_array_equal(dstdformat.read_scan(tmp_path / "back.nii.gz").array, decoded)
