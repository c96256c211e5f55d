from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def ct_like() -> np.ndarray:
    """A small int16 volume with CT-like statistics (air, soft tissue, bone) and odd sizes."""
    rng = np.random.default_rng(1234)
    z, y, x = np.mgrid[0:21, 0:45, 0:67]
    body = ((y - 22) ** 2 / 400 + (x - 33) ** 2 / 900) < 1
    vol = np.where(body, 40, -1000) + rng.normal(0, 20, size=body.shape)
    vol[(z % 7 == 3) & body & (x % 11 < 3)] = 900
    return vol.astype(np.int16)


@pytest.fixture
def test_model(tmp_path, monkeypatch):
    """A small refinement model 'test-refiner', found through DSTD_MODEL_PATH."""
    from helpers import make_model

    from dstdformat.zoo.registry import MODEL_PATH_ENV

    folder = tmp_path / "models"
    folder.mkdir()
    weights = make_model(folder)
    monkeypatch.setenv(MODEL_PATH_ENV, str(folder))
    return weights
