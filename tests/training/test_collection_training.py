"""`dstd train --collection`: the three DeepSTD steps on a tiny collection, and resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import phantom_hu

import dstdformat
from dstdformat.model.deformation import SirenConfig
from dstdformat.model.registration import RegistrationConfig
from dstdformat.training.collection import CollectionTrainConfig, train_collection


@pytest.fixture
def collection(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    spacing = (4.0, 3.0, 3.0)
    variants = {
        "a": dict(scale=1.05, centre_mm=(0, 6, 0)),
        "b": {},
        "c": dict(scale=0.95, centre_mm=(0, -3, 6)),
    }
    for name, kwargs in variants.items():
        hu = phantom_hu(shape=(24, 40, 40), spacing=spacing, **kwargs).astype(np.int16)
        dstdformat.write_scan(
            dstdformat.Scan(hu, dstdformat.ScanMetadata(spacing=spacing)), folder / f"{name}.nii.gz"
        )
    # A "scan" that is nothing like the others: noise, which no affine lines up with anatomy.
    odd = np.random.default_rng(0).integers(-1000, 1500, (24, 40, 40)).astype(np.int16)
    dstdformat.write_scan(
        dstdformat.Scan(odd, dstdformat.ScanMetadata(spacing=spacing)), folder / "odd.nii.gz"
    )
    return folder


def _config(collection, out) -> CollectionTrainConfig:
    return CollectionTrainConfig(
        sources=[str(collection)],
        out=str(out),
        registration=RegistrationConfig(
            siren=SirenConfig(width=16, depth=1), affine_steps=40, steps=10, points=1024
        ),
        reference_affine_steps=20,
        min_affine_ncc=0.5,
        texture={
            "steps": 2,
            "batch_size": 1,
            "crop": (12, 16, 16),
            "ratios": (32.0,),
            "checkpoint_every": 1,
            "model": {"channels": 4, "blocks": 1},
        },
    )


def test_three_steps_then_resume(collection, tmp_path):
    out = tmp_path / "model"
    summary = train_collection(_config(collection, out))
    assert summary["reference"] in {"a.nii.gz", "b.nii.gz", "c.nii.gz"}
    assert summary["aligned"] == 3 and summary["texture_only"] == ["odd"]
    assert summary["resumed_scans"] == 0 and summary["texture_training"]["step"] == 2
    reference = json.loads((out / "reference.json").read_text())
    assert (out / f"template-{reference['sha256']}.safetensors").is_file()
    record = json.loads((out / "aligned" / "b.json").read_text())
    assert record["shape_bytes"] == (out / "aligned" / "b.shape").stat().st_size
    texture = dstdformat.open(out / "aligned" / "b.dstd")
    assert texture.metadata.attributes["template_sha256"] == reference["sha256"]
    assert "far from the template" in json.loads((out / "aligned" / "odd.json").read_text())["texture_only"]

    # A second run redoes nothing: reference, alignments and training are all resumed.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "aligned").iterdir()}
    again = train_collection(_config(collection, out))
    assert again["resumed_scans"] == 4 and again["reference"] == summary["reference"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "aligned").iterdir()} == before


def test_a_collection_of_one_is_refused(collection, tmp_path):
    config = _config(collection, tmp_path / "model")
    config.sources = [str(collection / "a.nii.gz")]
    with pytest.raises(ValueError, match="at least 2 scans"):
        train_collection(config)
