"""SPERR streams from files decode in helper processes: small and large blocks, many threads,
time limits, and the same voxels as decoding in process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dstdformat.codecs.deepstd.base_layers import helpers, isolated, sperr
from dstdformat.errors import CodecError, CorruptSectionError


@pytest.mark.parametrize("shape", [(4, 4, 4), (3, 5, 2), (16, 64, 48), (40, 130, 96)])
def test_isolated_decode_equals_in_process(shape):
    rng = np.random.default_rng(sum(shape))
    block = rng.normal(0, 200, size=shape).cumsum(axis=2)
    payload = sperr.encode_bits_per_voxel(block, 2.0)
    inside = sperr.decode(payload, shape, trusted=True)
    outside = sperr.decode(payload, shape)
    assert outside.shape == shape and outside.dtype == np.float64
    np.testing.assert_array_equal(outside, inside)
    single = sperr.decode(payload, shape, dtype=np.float32)  # what the codec asks for
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, inside.astype(np.float32))


def test_many_threads_share_the_helpers():
    rng = np.random.default_rng(5)
    blocks = [rng.normal(0, 100, size=(8, 24, 24 + n)) for n in range(12)]
    payloads = [sperr.encode_bits_per_voxel(b, 3.0) for b in blocks]
    expected = [sperr.decode(p, b.shape, trusted=True) for p, b in zip(payloads, blocks)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda pb: sperr.decode(pb[0], pb[1].shape), zip(payloads, blocks)))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_a_decode_past_its_time_limit_is_stopped():
    block = np.random.default_rng(0).normal(size=(32, 128, 128))
    payload = sperr.encode_bits_per_voxel(block, 8.0)
    with pytest.raises(CorruptSectionError, match="did not decode within"):
        isolated.decode_isolated(payload, (32, 128, 128), "texture section of tile 0", time_limit=1e-4)
    out = isolated.decode_isolated(payload, (32, 128, 128), "tile 0")  # a fresh helper
    assert out.shape == (32, 128, 128)


def test_isolation_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(isolated.ISOLATE_ENV, "0")
    assert not isolated.isolation_enabled()
    monkeypatch.setenv(isolated.ISOLATE_ENV, "1")
    assert isolated.isolation_enabled()


def test_a_helper_that_cannot_start_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(helpers.sys, "executable", "/bin/false")
    monkeypatch.setattr(isolated._pool, "_idle", [])
    with pytest.raises(CodecError, match="could not start the isolated SPERR decoder"):
        isolated.decode_isolated(b"x" * 30, (4, 4, 4), "texture section of tile 0")


@pytest.mark.parametrize("how", ["close", "kill"])
def test_helpers_leave_no_unclosed_pipes(how):
    """A helper closed or killed closes both its pipes (no ResourceWarning when it is collected)."""
    import gc
    import warnings

    helper = isolated._pool.acquire()
    getattr(helper, how)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del helper
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
