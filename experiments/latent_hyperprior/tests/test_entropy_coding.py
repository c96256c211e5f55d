"""Deterministic entropy coding: integer tables, exact fixed-point hyperprior, range coder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from latent_hyperprior.coder import decode_symbols, encode_symbols
from latent_hyperprior.entropy_models import FactorizedPrior, GaussianConditional, pmf_to_integer_cdf
from latent_hyperprior.hyper_synthesis import ACT_BITS, FixedPointHyperSynthesis

pytest.importorskip("constriction")

#: sha256 of the range-coded golden symbols below; a change means old files would not decode.
GOLDEN_CODER_SHA = "245aac8653575eee3ea9fd09c6b1400261ee3750938c1e22e50eb4e87c626811"


def test_integer_tables_are_valid():
    rng = np.random.default_rng(0)
    pmf = rng.random((5, 40)) ** 8
    freq = pmf_to_integer_cdf(pmf)
    assert (freq.sum(axis=1) == 2**16).all() and (freq >= 1).all()
    model = GaussianConditional()
    model.build_tables()
    table, supports = model.cdf_table.numpy(), model.table_support.numpy()
    assert (table.sum(axis=1) == 2**16).all()
    for row, s in zip(table, supports):
        assert (row[: 2 * s + 1] >= 1).all() and (row[2 * s + 1 :] == 0).all()
    assert supports[0] >= 1 and supports[-1] == 512
    prior = FactorizedPrior(6)
    prior.build_tables()
    assert prior.cdf_table.shape == (6, 65) and (prior.cdf_table.sum(1) == 2**16).all()


@pytest.fixture(scope="module")
def gaussian():
    model = GaussianConditional()
    model.build_tables()
    return model.cdf_table.numpy(), model.table_support.numpy().astype(np.int64), model


def test_range_coder_roundtrip_and_rate(gaussian):
    freq, supports, model = gaussian
    rng = np.random.default_rng(1)
    index = rng.integers(0, 64, size=(3, 50, 40))
    symbols = np.rint(rng.normal(0, model.table_scales()[index])).astype(np.int64)
    symbols[0, 0, 0] = 10_000  # beyond any table: clipped, and the clipped value is returned
    data, coded = encode_symbols(symbols, index, freq, supports)
    assert coded.reshape(symbols.shape)[0, 0, 0] == supports[index[0, 0, 0]]
    decoded = decode_symbols(data, index, freq, supports)
    np.testing.assert_array_equal(decoded.ravel(), coded)
    from scipy.stats import norm

    scales = model.table_scales()[index].ravel()
    c = coded.astype(float)
    ideal_bits = -np.log2(norm.cdf((c + 0.5) / scales) - norm.cdf((c - 0.5) / scales)).sum()
    assert len(data) * 8 < ideal_bits * 1.01 + 64


def test_range_coder_output_is_fixed(gaussian):
    """Golden: these symbols and tables must always give these exact bytes."""
    freq, supports, _ = gaussian
    index = (np.arange(2000) * 7) % 64
    symbols = ((np.arange(2000) * 13) % 9) - 4
    data, _ = encode_symbols(symbols, index, freq, supports)
    assert hashlib.sha256(data).hexdigest() == GOLDEN_CODER_SHA


def test_fixed_point_hyper_synthesis_is_exact_and_thread_independent():
    torch.manual_seed(0)
    h = FixedPointHyperSynthesis(8, 16, 12, upsamplings=2)
    z = torch.randint(-6, 7, (1, 8, 3, 4, 5)).float()
    means, positions = h(z)
    exact_means, indices = h.exact(z)
    # training arithmetic mirrors the integer arithmetic
    np.testing.assert_allclose(means.detach().double().numpy(), exact_means.numpy(), atol=2**-ACT_BITS)
    assert torch.equal(exact_means * 2**ACT_BITS, torch.round(exact_means * 2**ACT_BITS))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = h.exact(z)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(again[0], exact_means) and torch.equal(again[1], indices)
    assert indices.dtype == torch.int64 and 0 <= int(indices.min()) and int(indices.max()) < 64
