"""The shape section: the scan-to-template map as bytes, quantised and range coded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dstdformat.codecs.deepstd.shape.section import decode_shape, encode_shape, quantize_in_place
from dstdformat.errors import CodecError
from dstdformat.model.deformation import Siren, SirenConfig


def _trained_like(config: SirenConfig) -> Siren:
    torch.manual_seed(0)
    net = Siren(config)
    with torch.no_grad():  # a fitted net has a non-zero output layer
        net.out.weight.normal_(0, 1e-3)
        net.out.bias.normal_(0, 1e-3)
    return net


def test_round_trip_gives_the_quantised_network():
    net = _trained_like(SirenConfig(width=32, depth=2))
    affine = np.array([[1.02, 0.01, 0, 0.1], [0, 0.98, 0.02, -0.05], [0, 0, 1.0, 0.0]])
    data = encode_shape(affine, net, bits=8)
    decoded_affine, config, state = decode_shape(data)
    np.testing.assert_array_equal(decoded_affine, affine)
    assert config == net.config
    for name, tensor in net.state_dict().items():
        step = float(tensor.abs().max()) / 127
        assert torch.allclose(state[name], tensor, atol=step / 2 + 1e-9), name
    copy = _trained_like(net.config)
    quantize_in_place(copy)
    for name, tensor in copy.state_dict().items():
        assert torch.equal(tensor, state[name])
    points = torch.rand(100, 3) * 2 - 1
    original = net(points)
    restored = Siren(config)
    restored.load_state_dict(state)
    assert (restored(points) - original).abs().max() < 1e-3


def test_fewer_bits_give_fewer_bytes():
    net = _trained_like(SirenConfig(width=64, depth=2))
    sizes = {bits: len(encode_shape(np.eye(3, 4), net, bits)) for bits in (4, 6, 8)}
    assert sizes[4] < sizes[6] < sizes[8]
    raw = sum(t.numel() for t in net.state_dict().values()) * 4
    assert sizes[8] < raw / 3  # entropy coded, not raw floats


@pytest.mark.parametrize("damage", ["magic", "truncate", "trailing", "settings"])
def test_damaged_sections_are_refused(damage):
    data = bytearray(encode_shape(np.eye(3, 4), _trained_like(SirenConfig(width=16, depth=1))))
    if damage == "magic":
        data[:4] = b"XXXX"
    elif damage == "truncate":
        data = data[: len(data) - 9]
    elif damage == "trailing":
        data += b"\0\0\0\0"
    else:
        data[8:10] = (0).to_bytes(2, "little")  # width 0
    with pytest.raises(CodecError):
        decode_shape(bytes(data))
