from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dstdformat
from dstdformat.container.indexing import plan_index

SHAPE = (7, 9, 11)


def _index_for(n: int):
    ints = st.integers(-n, n - 1)
    bounds = st.one_of(st.none(), st.integers(-n - 3, n + 3))
    steps = st.one_of(st.none(), st.integers(-4, 4).filter(lambda s: s != 0))
    return st.one_of(ints, st.builds(slice, bounds, bounds, steps))


keys = st.tuples(*(_index_for(n) for n in SHAPE)).flatmap(
    lambda k: st.sampled_from([k, k[:1], k[:2], (Ellipsis, k[2]), (k[0], Ellipsis)])
)


@settings(max_examples=300, deadline=None)
@given(keys)
def test_plan_index_matches_numpy(key):
    array = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    region, view = plan_index(key, SHAPE)
    np.testing.assert_array_equal(array[region][view], array[key])


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    array = np.random.default_rng(3).integers(-1024, 3000, size=(23, 37, 41), dtype=np.int16)
    path = tmp_path_factory.mktemp("idx") / "v.dstd"
    dstdformat.save(array, path, tile_shape=(4, 8, 16))
    return array, dstdformat.open(path)


@settings(max_examples=150, deadline=None)
@given(st.tuples(*(_index_for(n) for n in (23, 37, 41))))
def test_volume_indexing_matches_numpy(stored, key):
    array, volume = stored
    np.testing.assert_array_equal(volume[key], array[key])


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ((0, 0, 0, 0), "too many indices"),
        ((Ellipsis, Ellipsis), "single ellipsis"),
        (23, "out of bounds"),
        ((0, -38), "out of bounds"),
        (([1, 2],), "only integers"),
        ((None,), "newaxis"),
        ((1.5,), "only integers"),
    ],
)
def test_unsupported_indexing_is_refused(stored, key, error):
    _, volume = stored
    with pytest.raises(IndexError, match=error):
        volume[key]


def test_array_protocol_and_len(stored):
    array, volume = stored
    np.testing.assert_array_equal(np.asarray(volume), array)
    assert np.asarray(volume, dtype=np.float32).dtype == np.float32
    assert len(volume) == 23


def test_to_dask_without_dask_names_the_extra(tmp_path, monkeypatch):
    import sys

    from dstdformat.errors import DstdError

    dstdformat.save(np.zeros((2, 3, 4), np.int16), tmp_path / "z.dstd")
    volume = dstdformat.open(tmp_path / "z.dstd")
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(DstdError, match=r"pip install 'dstdformat\[dask\]'"):
        volume.to_dask()
