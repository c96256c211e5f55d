from __future__ import annotations

import numpy as np
import pytest

import dstdformat
from dstdformat.codecs import available_codecs, get_codec, get_codec_class, register_codec
from dstdformat.codecs.lossless import LosslessCodec


def test_registry_finds_lossless_lazily():
    assert "lossless" in available_codecs()
    assert get_codec_class("lossless") is LosslessCodec
    with pytest.raises(dstdformat.UnknownCodecError, match="available codecs: .*lossless"):
        get_codec_class("does-not-exist")


@pytest.mark.parametrize(
    "params",
    [{}, {"cname": "lz4", "clevel": 1, "shuffle": "bit"}, {"cname": "zlib", "clevel": 9, "shuffle": "none"}],
)
def test_config_roundtrip(tmp_path, ct_like, params):
    codec = get_codec("lossless", **params)
    again = LosslessCodec.from_config(codec.get_config())
    assert again == codec and hash(again) == hash(codec)
    assert "LosslessCodec(" in repr(codec)
    dstdformat.save(ct_like, tmp_path / "x.dstd", codec=codec)
    volume = dstdformat.open(tmp_path / "x.dstd")
    assert volume.header["codec"]["params"] == codec.get_config()
    assert volume.codec == codec
    np.testing.assert_array_equal(volume.read(), ct_like)


@pytest.mark.parametrize(
    "params", [{"cname": "pickle"}, {"clevel": -1}, {"clevel": True}, {"shuffle": "random"}, {"level": 3}]
)
def test_bad_parameters(params):
    with pytest.raises(dstdformat.InvalidInputError):
        get_codec("lossless", **params)


def test_compresses_real_ct_better_than_raw(ct_like, tmp_path):
    result = dstdformat.save(np.resize(ct_like, (16, 128, 128)), tmp_path / "r.dstd", codec="lossless")
    assert result.ratio > 1.5


def test_third_party_codec_can_register(tmp_path, ct_like):
    class Negating(LosslessCodec):
        codec_id = "test-negating"

    register_codec(Negating)
    assert "test-negating" in available_codecs()
    dstdformat.save(ct_like, tmp_path / "n.dstd", codec="test-negating")
    assert dstdformat.open(tmp_path / "n.dstd").codec_id == "test-negating"


def test_codec_version_from_the_future_is_refused(tmp_path, ct_like):
    from helpers import rewrite_header

    path = tmp_path / "v.dstd"
    dstdformat.save(ct_like, path)
    rewrite_header(path, lambda h: {**h, "codec": {**h["codec"], "version": 99}})
    with pytest.raises(dstdformat.CodecError, match="version 99"):
        dstdformat.open(path).read()
