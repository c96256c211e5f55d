"""The shape section: the scan-to-template map ``phi`` (affine + SIREN residual) as bytes.

Only ``phi`` is stored: decoding reads the template-space texture at ``phi(x)`` for every scan
voxel ``x``. The affine is 12 float64 values. Each SIREN tensor is quantised uniformly with its own
step (``max |w| / (2^(bits-1) - 1)``) and range coded (constriction) under a zero-mean quantised
Gaussian with the tensor's own standard deviation, both stored as float32.

Layout (little-endian)::

    magic b"DSHP" | u16 version | u16 bits | u16 width | u16 depth | f32 omega | f64[12] affine
    then per tensor, in the network's parameter order:
        u32 count | f32 step | f32 std | u32 coded length (bytes) | coded words (u32)
"""

from __future__ import annotations

import struct

import numpy as np
import torch

from ....errors import CodecError, stream_errors

_MAGIC = b"DSHP"
_VERSION = 1
_HEAD = struct.Struct("<4sHHHHf12d")
_TENSOR = struct.Struct("<IffI")
#: Bits per quantised weight (the shape code's size knob).
DEFAULT_BITS = 8


def _tensor_order(net) -> list[tuple[str, torch.Tensor]]:
    return list(net.state_dict().items())


def encode_shape(affine: np.ndarray, net, bits: int = DEFAULT_BITS) -> bytes:
    """``affine`` is the 3x4 [A | t] (scan -> template); ``net`` the forward SIREN."""
    import constriction

    if not 2 <= bits <= 16:
        raise CodecError(f"shape bits must be in 2..16, not {bits}")
    config = net.config
    out = [
        _HEAD.pack(
            _MAGIC,
            _VERSION,
            bits,
            config.width,
            config.depth,
            config.omega,
            *np.asarray(affine, dtype=np.float64).reshape(12),
        )
    ]
    limit = (1 << (bits - 1)) - 1
    for _, tensor in _tensor_order(net):
        values = tensor.detach().cpu().double().numpy().ravel()
        peak = float(np.abs(values).max()) if values.size else 0.0
        step = np.float32(peak / limit if peak > 0 else 1.0)
        symbols = np.clip(np.round(values / float(step)), -limit, limit).astype(np.int32)
        std = np.float32(max(float(symbols.std()), 0.5))
        encoder = constriction.stream.queue.RangeEncoder()
        if symbols.size:
            model = constriction.stream.model.QuantizedGaussian(-limit, limit)
            encoder.encode(symbols, model, np.zeros(symbols.size), np.full(symbols.size, float(std)))
        words = encoder.get_compressed().astype("<u4").tobytes()
        out.append(_TENSOR.pack(symbols.size, step, std, len(words)) + words)
    return b"".join(out)


def decode_shape(data: bytes):
    """Inverse of :func:`encode_shape`: (affine 3x4 float64, SirenConfig, state dict)."""
    import constriction

    from ....model.deformation import Siren, SirenConfig

    if len(data) < _HEAD.size or data[:4] != _MAGIC:
        raise CodecError("shape section does not start with the shape magic number")
    magic, version, bits, width, depth, omega, *affine = _HEAD.unpack_from(data)
    if version != _VERSION:
        raise CodecError(f"shape section version {version} is not supported (this reader: {_VERSION})")
    if not (2 <= bits <= 16 and 1 <= width <= 4096 and 1 <= depth <= 16 and 0 < omega <= 1e4):
        raise CodecError(f"shape section has invalid settings (bits {bits}, width {width}, depth {depth})")
    config = SirenConfig(width=width, depth=depth, omega=float(omega))
    template = Siren(config)
    limit = (1 << (bits - 1)) - 1
    state = {}
    offset = _HEAD.size
    for name, tensor in _tensor_order(template):
        if offset + _TENSOR.size > len(data):
            raise CodecError("shape section is truncated")
        count, step, std, length = _TENSOR.unpack_from(data, offset)
        offset += _TENSOR.size
        if (
            count != tensor.numel()
            or length % 4
            or offset + length > len(data)
            or not (np.isfinite(step) and np.isfinite(std) and std > 0)
        ):
            raise CodecError(f"shape section entry for {name} is invalid")
        words = np.frombuffer(data, dtype="<u4", count=length // 4, offset=offset).astype(np.uint32)
        offset += length
        if count:
            with stream_errors(f"shape section entry for {name}"):
                decoder = constriction.stream.queue.RangeDecoder(words)
                model = constriction.stream.model.QuantizedGaussian(-limit, limit)
                symbols = decoder.decode(model, np.zeros(count), np.full(count, float(std)))
        else:
            symbols = np.zeros(0, dtype=np.int32)
        state[name] = torch.as_tensor(symbols.astype(np.float32) * np.float32(step)).reshape(tensor.shape)
    if offset != len(data):
        raise CodecError(f"shape section has {len(data) - offset} unexpected trailing bytes")
    return np.asarray(affine, dtype=np.float64).reshape(3, 4), config, state


def quantize_in_place(net, bits: int = DEFAULT_BITS) -> None:
    """Replace ``net``'s weights with what :func:`decode_shape` will give back, so the encoder
    builds the texture with the decoder's deformation."""
    _, _, state = decode_shape(encode_shape(np.zeros((3, 4)), net, bits))
    net.load_state_dict(state)
