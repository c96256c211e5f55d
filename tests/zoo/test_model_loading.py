"""Loading models runs no code: only safetensors and JSON are read, weights are checked against the
sha256 a file records, and a file naming a model we do not have fails with that model's id."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from fuzzing import FileParts
from helpers import assert_matches_golden_reference, ct_chunk, make_model

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec as Codec
from dstdformat.codecs.deepstd import refiner_cache
from dstdformat.errors import CodecError
from dstdformat.zoo import registry as zoo
from dstdformat.zoo.registry import MODEL_PATH_ENV, file_sha256

GOLDEN = Path(__file__).resolve().parents[2] / "spec" / "golden"


def _forbid(*args, **kwargs):
    raise AssertionError("a model was loaded through pickle")


@pytest.fixture
def no_pickle(monkeypatch):
    """Any use of torch.load or pickle while the test runs fails it."""
    for owner, name in (
        (torch, "load"),
        (torch.serialization, "load"),
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
    ):
        monkeypatch.setattr(owner, name, _forbid)
    refiner_cache._load.cache_clear()
    yield
    refiner_cache._load.cache_clear()


def test_shipped_model_and_template_load_without_pickle(no_pickle):
    for golden in (
        GOLDEN / "deepstd-v2" / "deepstd_ratio64_refined.dstd",
        GOLDEN / "deepstd-v3" / "deepstd_shape_ratio32.dstd",
    ):
        with dstdformat.open(golden) as volume:
            assert_matches_golden_reference(volume.read(), golden)


def test_user_model_encodes_and_decodes_without_pickle(tmp_path, test_model, no_pickle):
    path = tmp_path / "scan.dstd"
    dstdformat.save(ct_chunk(), path, codec=Codec(ratio=16, model="test-refiner"))
    with dstdformat.open(path) as volume:
        assert volume.header["codec"]["model"] == {"id": "test-refiner", "sha256": file_sha256(test_model)}
        volume.read()


def _with_model_record(source: Path, model_id: str, sha256: str | None = None) -> bytes:
    parts = FileParts.parse(source.read_bytes())
    header = json.loads(parts.header)
    header["codec"]["params"]["model"] = model_id
    header["codec"]["model"] = {"id": model_id, "sha256": sha256 or header["codec"]["model"]["sha256"]}
    parts.header = json.dumps(header).encode()
    return parts.assemble()


def test_unknown_model_is_named(tmp_path):
    data = _with_model_record(GOLDEN / "deepstd-v2" / "deepstd_ratio64_refined.dstd", "ct-model-9")
    with dstdformat.open(data) as volume:
        with pytest.raises(CodecError, match="unknown model 'ct-model-9'.*available: deepstd-refine-v1"):
            volume.read()


def test_weights_that_differ_from_the_recorded_sha256_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    make_model(folder, "deepstd-refine-v1")  # same id, other weights, searched first
    monkeypatch.setenv(MODEL_PATH_ENV, str(folder))
    golden = GOLDEN / "deepstd-v2" / "deepstd_ratio64_refined.dstd"
    refiner_cache._load.cache_clear()
    with dstdformat.open(golden) as volume:  # the recorded sha picks the package's weights
        assert_matches_golden_reference(volume.read(), golden)
    data = _with_model_record(golden, "deepstd-refine-v1", "ab" * 32)
    with dstdformat.open(data) as volume:
        with pytest.raises(CodecError, match="weights differ from the ones this data was written with"):
            volume.read()


def test_pickles_and_disguised_pickles_are_never_loaded(tmp_path, monkeypatch, no_pickle):
    folder = tmp_path / "models"
    folder.mkdir()
    config = {"id": "evil", "kind": "deepstd-refiner", "architecture": {"channels": 8, "blocks": 1}}
    (folder / "evil.json").write_text(json.dumps(config))
    with open(folder / "evil.pt", "wb") as fh:  # a torch pickle is not a model we look at
        fh.write(b"\x80\x04not-run")
    monkeypatch.setenv(MODEL_PATH_ENV, str(folder))
    assert "evil" not in zoo.available_models()
    with pytest.raises(CodecError, match="unknown model 'evil'"):
        zoo.find_model("evil")
    # A pickle renamed .safetensors is found (by name) but fails to parse as safetensors.
    shutil.copy(folder / "evil.pt", folder / "evil.safetensors")
    model = zoo.find_model("evil")
    with pytest.raises(CodecError, match="evil"):
        refiner_cache.load_refiner(model, "cpu")


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "x" * 5000, "a/b", ""])
def test_model_ids_are_names_not_paths(bad_id):
    with pytest.raises(CodecError):
        zoo.find_model(bad_id)
