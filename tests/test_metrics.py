"""Metrics against values computed by hand on constructed volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dstdformat import InvalidInputError
from dstdformat import metrics as M


@pytest.fixture
def phantom():
    rng = np.random.default_rng(7)
    return rng.integers(-1000, 1500, size=(40, 48, 52)).astype(np.int16)


def test_mae_and_max_error(phantom):
    shifted = phantom + 3
    assert M.mae(phantom, shifted) == pytest.approx(3.0)
    half = phantom.copy()
    half[:20] += 4  # half the voxels off by 4 HU
    assert M.mae(phantom, half) == pytest.approx(2.0)
    half[5, 6, 7] -= 50
    assert M.max_error(phantom, half) == pytest.approx(46.0)
    assert M.mae(phantom, phantom) == 0.0


def test_psnr(phantom):
    noise = np.where(np.indices(phantom.shape).sum(axis=0) % 2 == 0, 10, -10)
    expected = 10 * math.log10(4095**2 / 100)
    assert M.psnr(phantom, phantom + noise) == pytest.approx(expected)
    assert M.psnr(phantom, phantom) == math.inf
    # values beyond the clip window do not count: -2000 and -1500 both clip to -1024
    a = np.full((4, 4, 4), -2000.0)
    assert M.psnr(a, a + 500) == math.inf
    assert M.psnr(a, a + 500, clip=None) == pytest.approx(10 * math.log10(4095**2 / 500**2))


def test_ssim(phantom):
    assert M.ssim(phantom, phantom) == pytest.approx(1.0)
    shifted = np.roll(phantom, 1, axis=2)
    assert M.ssim(phantom, shifted) < 0.9
    smooth = np.full((20, 20, 20), 100.0)
    # a constant offset c on a constant image: luminance term (2*m*(m+c)+C1)/(m^2+(m+c)^2+C1)
    c1 = (0.01 * 4095) ** 2
    m, c = 100.0, 50.0
    expected = (2 * m * (m + c) + c1) / (m * m + (m + c) ** 2 + c1)
    assert M.ssim(smooth, smooth + c) == pytest.approx(expected, rel=1e-9)


def test_ssim_is_slab_invariant(phantom, monkeypatch):
    noisy = phantom + np.random.default_rng(1).normal(0, 30, phantom.shape)
    whole = M.ssim(phantom, noisy)
    monkeypatch.setattr(M, "SLAB", 7)
    assert M.ssim(phantom, noisy) == pytest.approx(whole, rel=1e-12)


def test_dice_of_shifted_cubes():
    a = np.zeros((30, 30, 30), bool)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = True
    b[7:17, 5:15, 5:15] = True  # overlap 8 x 10 x 10
    assert M.dice(a, b) == pytest.approx(2 * 800 / 2000)
    assert M.dice(a, a) == 1.0
    assert M.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_hd95_of_parallel_planes_uses_spacing():
    a = np.zeros((12, 20, 20), bool)
    b = np.zeros_like(a)
    a[2] = True
    b[5] = True  # every surface point is 3 slices from the other plane
    assert M.hd95(a, b, spacing=(2.0, 0.5, 0.5)) == pytest.approx(6.0)
    assert M.hd95(a, a) == 0.0
    assert M.hd95(a, np.zeros_like(a)) == math.inf
    assert M.hd95(np.zeros_like(a), np.zeros_like(a)) == 0.0


def test_hd95_of_shifted_cubes_by_hand():
    a = np.zeros((20, 20, 20), bool)
    b = np.zeros_like(a)
    a[5:10, 5:10, 5:10] = True
    b[5:10, 5:10, 8:13] = True  # shifted by 3 voxels along axis 2

    # brute force over surface voxels
    def surface(m):
        from scipy import ndimage

        return np.argwhere(m & ~ndimage.binary_erosion(m))

    pa, pb = surface(a), surface(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
    assert M.hd95(a, b) == pytest.approx(expected)


def test_ct_masks_find_body_lungs_bone():
    vol = np.full((10, 60, 60), -1000, np.int16)
    zz, yy, xx = np.indices(vol.shape)
    body = (yy - 30) ** 2 + (xx - 30) ** 2 < 25**2
    vol[body] = 40
    for cx in (20, 40):  # two lungs
        vol[(yy - 30) ** 2 + (xx - cx) ** 2 < 7**2] = -850
    vol[(yy - 45) ** 2 + (xx - 30) ** 2 < 3**2] = 700  # a bone
    masks = M.ct_masks(vol)
    assert masks["body"].sum() == body.sum()  # lungs are holes filled into the body
    assert masks["lungs"].sum() == 2 * ((yy[0] - 30) ** 2 + (xx[0] - 20) ** 2 < 49).sum() * 10
    assert masks["bone"].sum() == ((yy - 45) ** 2 + (xx - 30) ** 2 < 9).sum()


def test_all_metrics_and_shape_errors(phantom):
    result = M.all_metrics(phantom, phantom, spacing=(2, 1, 1))
    assert result["mae"] == 0 and result["ssim"] == pytest.approx(1.0)
    assert all(result[f"dice_{k}"] == 1.0 for k in ("body", "lungs", "bone"))
    with pytest.raises(InvalidInputError, match="shape"):
        M.mae(phantom, phantom[:-1])
