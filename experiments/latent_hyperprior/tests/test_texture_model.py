from __future__ import annotations

import pytest
import torch
from latent_hyperprior.texture_model import (
    TextureModel,
    TextureModelConfig,
    compress_latents,
    decompress_latents,
    pad_to_stride,
)

pytest.importorskip("constriction")

SMALL = TextureModelConfig(channels=8, latent_channels=12, hyper_channels=6)


def test_forward_shapes_and_gradients():
    torch.manual_seed(0)
    model = TextureModel(SMALL)
    x = torch.randn(2, 1, 32, 64, 32)
    out = model(x)
    assert out["x_hat"].shape == x.shape
    assert out["y_likelihood"].shape == (2, 12, 2, 4, 2)
    assert out["z_likelihood"].shape == (2, 6, 1, 2, 1)
    likelihood = out["y_likelihood"].detach()
    assert 0 < float(likelihood.min()) and float(likelihood.max()) <= 1
    loss = (out["x_hat"] - x).pow(2).mean() - out["y_likelihood"].log2().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.g_a.parameters())
    assert all(p.grad is not None for p in model.h_s.parameters())


def test_compress_decompress_latents_is_consistent_and_deterministic():
    torch.manual_seed(1)
    model = TextureModel(SMALL).eval()
    # make latents non-trivial: scale the analysis output
    x = torch.randn(1, 1, 64, 32, 32) * 3
    model.build_tables()
    y = model.g_a(x) * 20
    block = compress_latents(model, y)
    y_hat = decompress_latents(model, block)
    z_hat = torch.clamp(torch.floor(model.h_a(y) + 0.5), -32, 32).double()
    means, indices = model.h_s.exact(z_hat)
    limit = model.y_model.table_support.long()[indices].double()
    symbols = torch.clamp(torch.floor(y.double() - means + 0.5), -limit, limit)
    assert torch.equal(y_hat, (symbols + means).float())
    assert symbols.abs().sum() > 0  # the test exercises real symbols
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert compress_latents(model, y) == block
        assert torch.equal(decompress_latents(model, block), y_hat)
    finally:
        torch.set_num_threads(old)


def test_pad_to_stride():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(1, 1, 2, 3, 5)
    padded, size = pad_to_stride(x)
    assert padded.shape[-3:] == (32, 32, 32) and size == (2, 3, 5)
    assert torch.equal(padded[..., :2, :3, :5], x)
