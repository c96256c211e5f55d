from __future__ import annotations

import h5py
import numpy as np
import pytest

from dstdformat import InvalidInputError, Scan, ScanMetadata, UnsupportedImageError
from dstdformat.io import format_for_path, read_scan, write_scan


@pytest.fixture
def scan(ct_like):
    affine = np.array([[0, 0, -0.7, 10], [0, 0.8, 0, 20], [2.5, 0, 0, 30], [0, 0, 0, 1]])
    return Scan(
        ct_like,
        ScanMetadata(
            affine=affine,
            slope=1,
            intercept=-1024,
            modality="CT",
            attributes={"k": [1, "ü"]},
            provenance={"format": "x"},
        ),
    )


def test_hdf5_roundtrip(tmp_path, scan):
    write_scan(scan, tmp_path / "s.h5")
    back = read_scan(tmp_path / "s.h5")
    np.testing.assert_array_equal(back.array, scan.array)
    assert back.metadata.to_json() == {**scan.metadata.to_json(), "original_dtype": "int16"}


def test_hdf5_foreign_file_selection(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["group/ct"] = np.ones((3, 4, 5), np.int16)
        f["label"] = np.ones((3, 4), np.uint8)
    assert read_scan(tmp_path / "f.h5").array.shape == (3, 4, 5)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.ones((3, 4, 5), np.int16)
        f["b"] = np.ones((3, 4, 5), np.float32)
    with pytest.raises(UnsupportedImageError, match="2 3D numeric datasets .*a, b"):
        read_scan(tmp_path / "two.h5")
    assert read_scan(tmp_path / "two.h5", dataset="b").array.dtype == np.float32
    with pytest.raises(UnsupportedImageError, match="no dataset named"):
        read_scan(tmp_path / "two.h5", dataset="c")
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(UnsupportedImageError, match="HDF5"):
        read_scan(tmp_path / "junk.h5")


def test_npy_roundtrip_and_refusals(tmp_path, scan):
    write_scan(scan, tmp_path / "s.npy")
    np.testing.assert_array_equal(read_scan(tmp_path / "s.npy").array, scan.array)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnsupportedImageError, match="obj.npy"):
        read_scan(tmp_path / "obj.npy")
    np.save(tmp_path / "two.npy", np.zeros((3, 3)))
    assert read_scan(tmp_path / "two.npy").shape == (1, 3, 3)  # a 2D image is one slice
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(UnsupportedImageError, match="1 dimensions"):
        read_scan(tmp_path / "one.npy")


def test_format_dispatch(tmp_path, scan):
    assert format_for_path("a/b.NII.GZ") == "nifti"
    assert format_for_path("x.hdf5") == "hdf5"
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "1.dcm").write_bytes(b"")
    assert format_for_path(tmp_path / "series") == "dicom"
    with pytest.raises(InvalidInputError, match="unknown file format"):
        format_for_path("scan.mha")
    with pytest.raises(InvalidInputError, match=r"cannot write .*x\.dcm.*use \.nii, \.nii\.gz, \.h5"):
        write_scan(scan, tmp_path / "x.dcm")


def test_writes_are_atomic(tmp_path, scan, monkeypatch):
    import nibabel as nib

    scan = Scan(scan.array, scan.metadata.replace(intercept=0.0))  # the nib.save path
    write_scan(scan, tmp_path / "s.nii.gz")
    before = (tmp_path / "s.nii.gz").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        write_scan(scan, tmp_path / "s.nii.gz")
    assert (tmp_path / "s.nii.gz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.nii.gz"]
