from __future__ import annotations

import shutil

import numpy as np
import pydicom
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


def _edited_copy(folder, edits):
    """Copy the 3-slice series to ``folder`` with ``edits[n](dataset)`` applied to file n."""
    for n, f in enumerate(sorted(THREE.iterdir())):
        ds = pydicom.dcmread(f)
        if n in edits:
            edits[n](ds)
        ds.save_as(folder / f"s{n}.dcm")
    return folder


def test_ct_preferred_and_localizers_skipped(tmp_path):
    def as_pet(ds):
        ds.Modality, ds.SeriesInstanceUID = "PT", "1.2.3"

    def as_scout(ds):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    _edited_copy(tmp_path, {0: as_pet, 1: as_pet})
    scan = read_scan(tmp_path)  # the PET "series" is larger, the CT one wins
    assert scan.shape == (1, 512, 512) and scan.metadata.modality == "CT"
    scout = tmp_path / "scout"
    scout.mkdir()
    _edited_copy(scout, {2: as_scout})
    assert read_scan(scout).shape == (2, 512, 512)


def test_non_integer_rescale_gives_float_hu(tmp_path):
    def halve(ds):
        ds.RescaleSlope = "0.5"

    scan = read_scan(_edited_copy(tmp_path, {0: halve, 1: halve, 2: halve}))
    reference = read_scan(THREE)
    assert scan.array.dtype == np.float32
    assert (scan.metadata.slope, scan.metadata.intercept) == (1.0, 0.0)
    np.testing.assert_allclose(scan.array, (reference.array.astype(np.float64) + 1024) * 0.5 - 1024)
