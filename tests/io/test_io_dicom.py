from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import REPO, SHARED_CT

from dstdformat import UnsupportedImageError
from dstdformat.io import read_scan

THREE = REPO / "tests" / "data" / "dicom_3slices"


def test_three_slice_series():
    scan = read_scan(THREE)
    assert scan.array.shape == (3, 512, 512) and scan.array.dtype == np.int16
    assert -1100 <= scan.array.min() and scan.array.max() < 3000
    assert scan.spacing == pytest.approx((2.0, 0.976562, 0.976562), rel=1e-5)
    assert scan.metadata.modality == "CT" and scan.metadata.original_dtype == "uint16"
    # slices sorted by position: world z increases with axis 0
    assert scan.affine[2, 0] == pytest.approx(2.0)


def test_identifiers_are_dropped_unless_asked():
    tags = read_scan(THREE).metadata.attributes["dicom"]
    assert tags["Manufacturer"] == "SIEMENS"
    assert not {"StudyDate", "PatientName", "PatientID", "StudyInstanceUID"} & set(tags)
    kept = read_scan(THREE, keep_identifiers=True).metadata.attributes["dicom"]
    assert kept["StudyDate"] == "20221208" and "StudyInstanceUID" in kept


def test_unsorted_files_and_junk_are_handled(tmp_path):
    for n, f in enumerate(sorted(THREE.iterdir(), reverse=True)):
        shutil.copy(f, tmp_path / f"slice{n}.dcm")
    (tmp_path / "README.txt").write_text("not dicom")
    scan = read_scan(tmp_path)
    np.testing.assert_array_equal(scan.array, read_scan(THREE).array)


def test_missing_slice_is_refused(tmp_path):
    files = sorted(THREE.iterdir())
    for f in files[:1] + files[2:]:  # 2 slices 4 mm apart: still uniform
        shutil.copy(f, tmp_path)
    assert read_scan(tmp_path).spacing[0] == pytest.approx(4.0)
    extra = SHARED_CT / "dicom" / "totalseg_example_ct_dicom"
    if not extra.exists():
        pytest.skip("shared CT data not present")
    shutil.copy(sorted(extra.iterdir())[11], tmp_path)  # 2 mm after the last: uneven steps
    with pytest.raises(UnsupportedImageError, match="not evenly spaced"):
        read_scan(tmp_path)


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_empty_and_corrupt(tmp_path):
    (tmp_path / "a.txt").write_text("nothing here")
    with pytest.raises(UnsupportedImageError, match="no DICOM images"):
        read_scan(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(THREE, bad)
    victim = sorted(bad.iterdir())[1]
    data = victim.read_bytes()
    victim.chmod(0o644)
    victim.write_bytes(data[: len(data) - 60000])  # pixel data cut short
    with pytest.raises(UnsupportedImageError, match=victim.name):
        read_scan(bad)


def test_full_series_matches_reference_nifti():
    folder = SHARED_CT / "dicom" / "totalseg_example_ct_dicom"
    if not folder.exists():
        pytest.skip("shared CT data not present")
    scan = read_scan(folder)
    reference = read_scan(SHARED_CT / "totalseg_upper_abdomen_dicom.nii.gz")
    np.testing.assert_array_equal(scan.array, reference.array)
    np.testing.assert_allclose(scan.affine, reference.affine, atol=1e-3)
