from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from helpers import REPO

from dstdformat import InvalidInputError, Scan
from dstdformat.io import format_for_path, read_scan, write_scan

THREE = REPO / "tests" / "data" / "dicom_3slices"


def test_dicom_file_without_suffix_is_recognised():
    file = sorted(THREE.iterdir())[0]
    assert not file.name.lower().endswith(".dcm")  # named by its UID
    assert format_for_path(file) == "dicom"
    assert read_scan(file).shape == (3, 512, 512)


def test_unknown_suffix_names_it(tmp_path):
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    with pytest.raises(InvalidInputError, match=r"scan\.mha"):
        read_scan(tmp_path / "scan.mha")


def test_option_for_another_format_is_a_clear_error(tmp_path):
    write_scan(Scan(np.zeros((2, 3, 4), np.int16)), tmp_path / "a.nii.gz")
    with pytest.raises(InvalidInputError, match="dataset do not apply to reading nifti"):
        read_scan(tmp_path / "a.nii.gz", dataset="volume")
    with pytest.raises(InvalidInputError, match="accepted: dataset"):
        write_scan(Scan(np.zeros((2, 3, 4), np.int16)), tmp_path / "a.h5", compression="gzip")


def test_single_file_reads_its_own_series(tmp_path):
    files = sorted(THREE.iterdir())
    for n, f in enumerate(files):  # 3 slices of one series, 1 slice relabelled as another
        shutil.copy(f, tmp_path / f"s{n}.dcm")
    other = pydicom.dcmread(tmp_path / "s0.dcm")
    other.SeriesInstanceUID = "1.2.3.4"
    other.save_as(tmp_path / "s0.dcm")
    assert read_scan(tmp_path).shape == (2, 512, 512)  # the largest series
    assert read_scan(tmp_path / "s0.dcm").shape == (1, 512, 512)  # the series of the file
    assert read_scan(tmp_path, series_uid="1.2.3.4").shape == (1, 512, 512)


def test_missing_files_are_dstd_errors_and_file_not_found_errors(tmp_path):
    import dstdformat
    from dstdformat.errors import DstdError

    for call in (
        lambda: dstdformat.open(tmp_path / "missing.dstd"),
        lambda: read_scan(tmp_path / "missing.nii.gz"),
        lambda: read_scan(tmp_path / "missing"),
    ):
        with pytest.raises(DstdError, match="missing") as caught:
            call()
        assert isinstance(caught.value, FileNotFoundError)


def test_read_scan_reads_dstd_and_names_folders_that_are_not_dicom(tmp_path):
    import zarr

    import dstdformat

    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    dstdformat.save(array, tmp_path / "a.dstd", spacing=(2.0, 1.0, 1.0))
    scan = read_scan(tmp_path / "a.dstd")
    np.testing.assert_array_equal(scan.array, array)
    assert scan.spacing == (2.0, 1.0, 1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="empty folder"):
        read_scan(tmp_path / "empty")
    zarr.open_group(tmp_path / "s.zarr", mode="w").create_array("0", shape=(2, 2, 2), dtype="i2")
    with pytest.raises(InvalidInputError, match="zarr store, not a DICOM folder"):
        read_scan(tmp_path / "s.zarr")


def test_reading_a_closed_volume_says_it_is_closed(tmp_path):
    import dstdformat

    dstdformat.save(np.zeros((2, 3, 4), np.int16), tmp_path / "c.dstd")
    volume = dstdformat.open(tmp_path / "c.dstd")
    volume.close()
    with pytest.raises(dstdformat.DstdError, match="is closed"):
        volume[0]


def test_2d_images_are_one_slice_and_come_back_2d(tmp_path):
    """One rule for a 2D NIfTI and a 2D .npy: a volume of one slice (rows on axis 1, columns
    on axis 2) that the writers give back 2D; the default codec says why 256x does not fit."""
    import nibabel as nib

    import dstdformat

    image = np.arange(40 * 50, dtype=np.int16).reshape(40, 50)
    nib.save(nib.Nifti1Image(image, np.diag([0.7, 0.8, 1.0, 1.0])), tmp_path / "a.nii.gz")
    np.save(tmp_path / "a.npy", image)
    from_nifti, from_npy = read_scan(tmp_path / "a.nii.gz"), read_scan(tmp_path / "a.npy")
    assert from_nifti.array.shape == (1, 50, 40)  # NIfTI (i, j) -> [k, j, i]
    assert from_npy.array.shape == (1, 40, 50)  # rows, columns
    dstdformat.save(from_nifti, tmp_path / "a.dstd")
    write_scan(dstdformat.read_scan(tmp_path / "a.dstd"), tmp_path / "b.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "b.nii.gz").dataobj), image)
    write_scan(from_npy, tmp_path / "b.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), image)
    with pytest.raises(InvalidInputError, match="out of reach.*one slice"):
        dstdformat.save(from_npy, tmp_path / "c.dstd", codec="deepstd")
