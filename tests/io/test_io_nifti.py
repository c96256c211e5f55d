from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLED_CT

from dstdformat import Scan, ScanMetadata, UnsupportedImageError
from dstdformat.io import read_scan, write_scan
from dstdformat.metadata import IJK_TO_KJI


def _same_image(a_path, b_path):
    a, b = nib.load(a_path), nib.load(b_path)
    np.testing.assert_array_equal(
        np.asanyarray(b.dataobj.get_unscaled()), np.asanyarray(a.dataobj.get_unscaled())
    )
    assert a.get_data_dtype() == b.get_data_dtype()
    np.testing.assert_array_equal(a.affine, b.affine)
    for kind in ("qform", "sform"):
        (am, ac), (bm, bc) = (getattr(x, f"get_{kind}")(coded=True) for x in (a, b))
        assert ac == bc
        if am is not None:
            np.testing.assert_allclose(am, bm, atol=1e-5)
    assert a.header.get_slope_inter() == b.header.get_slope_inter()


def test_bundled_ct_roundtrip_is_identical(tmp_path):
    scan = read_scan(BUNDLED_CT)
    assert scan.array.shape == (112, 101, 122) and scan.array.dtype == np.int16
    assert scan.spacing == pytest.approx((3, 3, 3))
    assert scan.metadata.provenance["format"] == "nifti"
    # axis 0 is the NIfTI k axis: the affine follows the transposition
    nifti = nib.load(BUNDLED_CT)
    np.testing.assert_array_equal(scan.affine, nifti.affine @ IJK_TO_KJI)
    np.testing.assert_array_equal(scan.array[5], np.asanyarray(nifti.dataobj)[:, :, 5].T)
    write_scan(scan, tmp_path / "back.nii.gz")
    _same_image(BUNDLED_CT, tmp_path / "back.nii.gz")


def test_scaling_is_kept_not_applied(tmp_path):
    raw = np.arange(2 * 3 * 4, dtype=np.int16).reshape(4, 3, 2)
    image = nib.Nifti1Image(raw, np.diag([0.5, 0.6, 2.0, 1]))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii")
    scan = read_scan(tmp_path / "scaled.nii")
    assert scan.array.dtype == np.int16
    np.testing.assert_array_equal(scan.array, raw.transpose(2, 1, 0))
    assert (scan.metadata.slope, scan.metadata.intercept) == (2.0, -1024.0)
    write_scan(scan, tmp_path / "again.nii")
    _same_image(tmp_path / "scaled.nii", tmp_path / "again.nii")


@pytest.mark.parametrize("dtype", ["int16", "uint16", "uint8", "float32"])
@pytest.mark.parametrize("shape", [(1, 5, 7), (9, 10, 11)])
def test_scan_roundtrip_every_dtype(tmp_path, dtype, shape):
    array = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    affine = np.array([[0, 0, -0.7, 10], [0, 0.8, 0, 20], [2.5, 0, 0, 30], [0, 0, 0, 1]])
    write_scan(Scan(array, ScanMetadata(affine=affine)), tmp_path / "x.nii.gz")
    back = read_scan(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(back.array, array)
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert nib.load(tmp_path / "x.nii.gz").get_sform(coded=True)[1] == 1


def test_4d_and_2d_images(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(UnsupportedImageError, match="4 dimensions"):
        read_scan(tmp_path / "4d.nii")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.int16), np.eye(4)), tmp_path / "t1.nii")
    assert read_scan(tmp_path / "t1.nii").array.shape == (6, 5, 4)
    nib.save(nib.Nifti1Image(np.ones((4, 5), np.int16), np.eye(4)), tmp_path / "2d.nii")
    assert read_scan(tmp_path / "2d.nii").array.shape == (1, 5, 4)


def test_not_an_image(tmp_path):
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"hello, not an image" * 30))
    with pytest.raises(UnsupportedImageError, match="text.nii.gz"):
        read_scan(tmp_path / "text.nii.gz")
    (tmp_path / "plain.nii").write_text("not an image")
    with pytest.raises(UnsupportedImageError):
        read_scan(tmp_path / "plain.nii")
    good = BUNDLED_CT.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(UnsupportedImageError, match="cut.nii.gz"):
        read_scan(tmp_path / "cut.nii.gz")
    with pytest.raises(FileNotFoundError):
        read_scan(tmp_path / "missing.nii.gz")


def test_unsupported_voxel_type(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.complex64), np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(UnsupportedImageError, match="complex64"):
        read_scan(tmp_path / "c.nii")


def test_changed_geometry_wins_over_import_provenance(tmp_path):
    scan = read_scan(BUNDLED_CT)
    moved = scan.metadata.replace(spacing=(1.0, 2.0, 2.5))
    write_scan(Scan(scan.array, moved), tmp_path / "moved.nii.gz")
    back = nib.load(tmp_path / "moved.nii.gz")
    np.testing.assert_allclose(back.affine @ IJK_TO_KJI, moved.affine, atol=1e-5)
    assert back.get_sform(coded=True)[1] == nib.load(BUNDLED_CT).get_sform(coded=True)[1]
    assert read_scan(tmp_path / "moved.nii.gz").spacing == pytest.approx((1.0, 2.0, 2.5))
