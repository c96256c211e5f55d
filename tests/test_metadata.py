from __future__ import annotations

import numpy as np
import pytest

from dstdformat import InvalidInputError, ScanMetadata
from dstdformat.metadata import IJK_TO_KJI, spacing_from_affine


def test_defaults_and_derivations():
    meta = ScanMetadata()
    assert meta.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(meta.affine, np.eye(4))
    meta = ScanMetadata(spacing=(2, 0.5, 0.5))
    np.testing.assert_array_equal(meta.affine, np.diag([2, 0.5, 0.5, 1]))
    oblique = np.array([[0.6, -0.8, 0, 1], [0.8, 0.6, 0, 2], [0, 0, 3, 3], [0, 0, 0, 1]])
    assert ScanMetadata(affine=oblique).spacing == pytest.approx((1, 1, 3))


def test_json_roundtrip():
    meta = ScanMetadata(
        spacing=(2, 1, 1),
        slope=2,
        intercept=-1024,
        modality="CT",
        attributes={"a": 1},
        provenance={"format": "nifti"},
    )
    again = ScanMetadata.from_json(meta.to_json())
    assert again.to_json() == meta.to_json()


def test_permutation_is_its_own_inverse():
    np.testing.assert_array_equal(IJK_TO_KJI @ IJK_TO_KJI, np.eye(4))
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    assert spacing_from_affine(affine @ IJK_TO_KJI) == pytest.approx((2.5, 0.8, 0.7))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spacing": (1, 2)},
        {"spacing": (1, float("inf"), 1)},
        {"spacing": "abc"},
        {"affine": [[1, 2], [3, 4]]},
        {"affine": np.full((4, 4), np.nan)},
        {"slope": 0},
        {"intercept": "x"},
        {"attributes": [1, 2]},
    ],
)
def test_invalid_values(kwargs):
    with pytest.raises(InvalidInputError):
        ScanMetadata(**kwargs)
