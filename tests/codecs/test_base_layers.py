"""The base-layer contract: every registered layer keeps it, and a new layer is one class.

The stand-in layer below (a uniform quantiser over zlib) is registered for the length of a test
and used through the public codec, so the codec, rate control, the header and the reader are
shown to reach a layer only through the contract and the registry.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import pytest
from helpers import ct_volume

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec as Codec
from dstdformat.codecs.deepstd import base_layers
from dstdformat.codecs.deepstd.base_layers import BASE_LAYERS, BaseLayerCoder, BudgetOutOfReach
from dstdformat.errors import CorruptHeaderError, InvalidInputError
from dstdformat.tiling import TileGrid

_HEAD = struct.Struct("<d")


class QuantiserLayer(BaseLayerCoder):
    """Values rounded to multiples of a step (the knob) and deflated. Its sizes jump where the
    step divides the window evenly, so it lands below a budget by up to ~15%."""

    layer_id = "quantiser"
    label = "quantiser layer"
    modes = frozenset({"ratio", "quality", "max_error"})
    max_extent = 512
    format_version = 4
    record_bytes_per_tile = 8
    encodes = 0

    @classmethod
    def for_encoding(cls, window, preset=None):
        return cls()

    @classmethod
    def from_record(cls, record, n_tiles):
        if record is None or len(record["steps"]) != n_tiles:
            raise ValueError("a quantiser record names every tile's step")
        return cls()

    def record(self, knobs: Sequence[float]) -> dict:
        return {"codec": self.layer_id, "steps": [float(k) for k in knobs]}

    def encode(self, block, knob, what):
        type(self).encodes += 1
        levels = np.rint(block / knob).astype("<i4")
        return _HEAD.pack(knob) + zlib.compress(levels.tobytes(), 9)

    def encode_bound(self, block, tolerance, what):
        return self.encode(block, 2.0 * tolerance * (1 - 1e-9), what)

    def decode(self, payload, shape, *, what, trusted=False, dtype=np.float32, depth=None):
        (step,) = _HEAD.unpack_from(payload)
        levels = np.frombuffer(zlib.decompress(payload[_HEAD.size :]), "<i4").reshape(shape)
        return (levels * step).astype(dtype)

    def rate_of(self, stream, knob, shape):
        return 8.0 * len(stream) / math.prod(shape)

    def code_budget(self, blocks, grid: TileGrid, budget, ratio, clamp, progress):
        lo, hi = math.log(0.01), math.log(4096.0)

        def streams_at(step):
            return [self.encode(blocks(t), step, f"tile {t}") for t in grid]

        coarsest = streams_at(math.exp(hi))
        if sum(map(len, coarsest)) > budget:
            if not clamp:
                raise BudgetOutOfReach(sum(map(len, coarsest)), budget, "step 4096")
            return coarsest, [math.exp(hi)] * grid.n_tiles
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if sum(map(len, streams_at(math.exp(mid)))) > budget else (lo, mid)
        return streams_at(math.exp(hi)), [math.exp(hi)] * grid.n_tiles

    def code_quality(self, block, target_db, quality_of, what):
        lo, hi = math.log(0.01), math.log(4096.0)
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (
                (mid, hi) if quality_of(self.encode(block, math.exp(mid), what)) >= target_db else (lo, mid)
            )
        return self.encode(block, math.exp(lo), what), math.exp(lo)


@pytest.fixture
def quantiser(monkeypatch):
    monkeypatch.setitem(BASE_LAYERS, QuantiserLayer.layer_id, QuantiserLayer)
    return QuantiserLayer


def test_a_new_layer_is_one_class_and_a_registry_line(tmp_path, quantiser):
    vol = ct_volume()
    path = tmp_path / "q.dstd"
    dstdformat.save(vol, path, codec=Codec(ratio=12, model=None, base="quantiser"), tile_shape=(16, 64, 64))
    ratio = vol.nbytes / path.stat().st_size
    assert 12 * 0.98 <= ratio <= 12 * 1.2  # the layer's own search, rate control's accounting
    volume = dstdformat.open(path)
    state = volume.header["codec"]["state"]
    assert state["base"]["codec"] == "quantiser" and len(state["base"]["steps"]) == 8  # 2 x 2 x 2 tiles
    full = volume.read()
    assert np.array_equal(volume[5:20, 10:70, 3:50], full[5:20, 10:70, 3:50])
    inside = (vol >= -1024) & (vol <= 3071)
    assert np.abs(full.astype(float) - vol)[inside].mean() < 40
    far = (vol < -1024 - 128) | (vol > 3071 + 128)
    assert far.any() and np.array_equal(full[far], vol[far])  # outliers: exact, as on every layer


def test_the_new_layer_serves_quality_and_max_error_through_rate_control(tmp_path, quantiser):
    vol = ct_volume()
    path = tmp_path / "b.dstd"
    dstdformat.save(vol, path, codec=Codec(max_error=6, model=None, base="quantiser"))
    back = dstdformat.open(path).read()
    assert np.abs(back.astype(np.int64) - vol).max() <= 6
    dstdformat.save(vol, path, codec=Codec(quality=40, model=None, base="quantiser"))
    decoded = dstdformat.open(path).read().astype(float)
    inside = (vol >= -1024) & (vol <= 3071)
    mse = np.mean((decoded - vol)[inside] ** 2)
    assert 10 * math.log10(4095.0**2 / mse) >= 40


def test_an_unreachable_budget_is_one_message_whichever_layer(quantiser):
    vol = ct_volume()[:4, :32, :32]
    for base in ("quantiser", "av1"):
        with pytest.raises(InvalidInputError, match=r"ratio 2000 is out of reach .* ask for at most"):
            Codec(ratio=2000, model=None, base=base).encode(vol, TileGrid(vol.shape, vol.shape))


def test_modes_a_layer_does_not_serve_are_refused_naming_those_that_do():
    assert "max_error" not in BASE_LAYERS["av1"].modes
    with pytest.raises(InvalidInputError, match="max_error needs the sperr base layer"):
        Codec(max_error=2, base="av1")
    with pytest.raises(InvalidInputError, match="base must be one of"):
        Codec(ratio=64, base="jpeg")


@pytest.mark.parametrize("layer_id", sorted(BASE_LAYERS))
def test_every_registered_layer_keeps_the_contract(layer_id):
    layer = BASE_LAYERS[layer_id]
    assert layer.layer_id == layer_id and layer.modes <= {"ratio", "quality", "max_error"}
    assert {"ratio", "quality"} <= layer.modes and layer.max_extent >= 64
    coder = layer.for_encoding((-1024.0, 3071.0))
    record = coder.record([30, 31.25])
    assert record is None or json.loads(json.dumps(record)) == record  # the header holds it as is
    assert type(layer.from_record(record, 2)) is layer
    block = np.clip(ct_volume()[:8, :32, :32].astype(np.float64), -1024, 3071)
    knob = 30 if layer_id == "av1" else 2.0
    stream = coder.encode(block, knob, "tile 0")
    decoded = coder.decode(stream, block.shape, what="tile 0", trusted=True, dtype=np.float64)
    assert decoded.shape == block.shape and np.abs(decoded - block).mean() < 60
    assert coder.rate_of(stream, knob, block.shape) > 0


def test_a_header_naming_an_unknown_or_malformed_layer_is_corrupt():
    with pytest.raises(CorruptHeaderError, match="unknown base layer 'jpeg'"):
        base_layers.layer_from_state({"base": {"codec": "jpeg"}}, 1)
    with pytest.raises(CorruptHeaderError, match="malformed"):
        base_layers.layer_from_state({"base": {"codec": "av1", "crf": [30]}}, 2)
    assert type(base_layers.layer_from_state({}, 3)) is BASE_LAYERS["sperr"]  # files before the choice
