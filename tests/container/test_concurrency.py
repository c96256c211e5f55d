"""Many threads reading different regions of one open volume get exactly what a sequential read
gives (caches of decoded tiles, refined blocks and the shape decoder are shared between them)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import numpy as np
import pytest

import dstdformat

GOLDEN = Path(__file__).resolve().parents[2] / "spec" / "golden"


def _regions(shape, count, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        starts = [rng.randrange(s) for s in shape]
        stops = [rng.randint(a + 1, min(s, a + max(2, s // 2))) for a, s in zip(starts, shape)]
        out.append(tuple(slice(a, b) for a, b in zip(starts, stops)))
    return out


@pytest.mark.parametrize(
    "name, regions",
    [
        ("v1.0/int16_ct_crop.dstd", 200),
        ("deepstd-v1/deepstd_max_error_outliers.dstd", 120),
        ("deepstd-v2/deepstd_ratio64_refined.dstd", 40),
        ("deepstd-v3/deepstd_shape_ratio32.dstd", 24),
    ],
)
def test_threads_reading_regions_of_one_volume(name, regions):
    path = GOLDEN / name
    with dstdformat.open(path) as volume:
        expected = volume.read()
    with dstdformat.open(path) as volume:  # fresh: the threads race to fill every cache
        wanted = _regions(volume.shape, regions, seed=len(name))
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda region: volume[region], wanted))
    for region, got in zip(wanted, results):
        np.testing.assert_array_equal(got, expected[region], err_msg=f"{name} {region}")


def test_threads_reading_through_fsspec():
    data = (GOLDEN / "v1.0" / "int16_ct_crop.dstd").read_bytes()
    with fsspec.open("memory://concurrent/ct.dstd", "wb") as fh:
        fh.write(data)
    with dstdformat.open(data) as volume:
        expected = volume.read()
    with dstdformat.open("memory://concurrent/ct.dstd") as volume:
        wanted = _regions(volume.shape, 100, seed=3)
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(lambda region: volume[region], wanted))
        assert volume.io_stats.requests >= 100
    for region, got in zip(wanted, results):
        np.testing.assert_array_equal(got, expected[region])
