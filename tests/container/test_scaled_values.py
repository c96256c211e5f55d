"""Scaled values: ``vol.scaled[...]``, ``read(scaled=True)`` and ``read_region(..., scaled=True)``
give stored * slope + intercept, what nibabel's ``get_fdata`` gives for the NIfTI the file was
made from (the issue's case: slope 0.5, intercept -100, where stored values are 599.5 off)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

import dstdformat


def test_scaled_reads_are_nibabels_values(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(-500, 1500, (20, 24, 28)).astype(np.int16)
    image = nib.Nifti1Image(stored.transpose(2, 1, 0), np.diag([0.7, 0.7, 2.0, 1.0]))
    image.header.set_slope_inter(0.5, -100.0)
    nib.save(image, str(tmp_path / "ct.nii.gz"))
    dstdformat.save(
        dstdformat.read_scan(tmp_path / "ct.nii.gz"), tmp_path / "ct.dstd", tile_shape=(8, 16, 16)
    )
    volume = dstdformat.open(tmp_path / "ct.dstd")
    want = nib.load(str(tmp_path / "ct.nii.gz")).get_fdata().transpose(2, 1, 0).astype(np.float32)
    np.testing.assert_array_equal(volume[:], stored)  # indexing keeps the stored integers
    full = volume.read(scaled=True)
    assert full.dtype == np.float32 and volume.scaled_dtype == np.float32
    np.testing.assert_array_equal(full, want)
    np.testing.assert_array_equal(volume.scaled[3:9, 5, ::-2], want[3:9, 5, ::-2])
    region = (slice(2, 11), slice(4, 20), slice(0, 28))
    np.testing.assert_array_equal(volume.read_region(region, scaled=True), want[region])
    assert np.abs(full - stored).max() > 500  # the difference the issue measured


def test_files_without_scaling_give_float32_of_their_values(tmp_path):
    stored = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    dstdformat.save(stored, tmp_path / "u.dstd")
    scaled = dstdformat.open(tmp_path / "u.dstd").read(scaled=True)
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, stored.astype(np.float32))
