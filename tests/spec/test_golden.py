"""Golden files of every released format version keep decoding; headers follow the JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from helpers import REPO

import dstdformat
import dstdformat.container

SPEC = REPO / "spec"
SCHEMA = json.loads((SPEC / "header.schema.json").read_text())
GOLDEN = sorted(p for p in (SPEC / "golden").glob("v*") if (p / "manifest.json").exists())
CODEC_SETS = sorted(p for p in (SPEC / "golden").glob("*-v*") if (p / "manifest.json").exists())

sys.path.insert(0, str(SPEC))
from conformance import check_folder  # noqa: E402


def test_there_are_golden_files_for_the_current_version():
    names = [p.name for p in GOLDEN]
    major, minor = dstdformat.container.FORMAT_MAJOR, dstdformat.container.FORMAT_MINOR
    assert f"v{major}.{minor}" in names


@pytest.mark.parametrize("folder", GOLDEN, ids=[p.name for p in GOLDEN])
def test_conformance(folder):
    results = check_folder(folder)
    assert len(results) >= 8
    assert [(name, problem) for name, problem in results if problem] == []


@pytest.mark.parametrize("folder", CODEC_SETS, ids=[p.name for p in CODEC_SETS])
def test_codec_golden_files_decode_and_damaged_ones_are_refused(folder):
    results = check_folder(folder)
    assert len(results) >= 4
    assert [(name, problem) for name, problem in results if problem] == []


@pytest.mark.parametrize("folder", GOLDEN + CODEC_SETS, ids=[p.name for p in GOLDEN + CODEC_SETS])
def test_golden_headers_match_schema(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    for item in manifest["valid"]:
        with dstdformat.open(folder / item["file"]) as volume:
            jsonschema.validate(volume.header, SCHEMA)


def test_fresh_headers_match_schema(tmp_path, ct_like):
    dstdformat.save(
        ct_like,
        tmp_path / "a.dstd",
        affine=np.diag([2.0, 1, 1, 1]),
        modality="CT",
        attributes={"x": [1, None]},
    )
    jsonschema.validate(dstdformat.open(tmp_path / "a.dstd").header, SCHEMA)


def test_golden_float_specials_bit_exact():
    folder = SPEC / "golden" / "v1.0"
    array = dstdformat.open(folder / "float32_specials.dstd").read()
    assert np.isnan(array.flat[0]) and array.flat[7] == np.inf and array.flat[11] == -np.inf
    assert np.signbit(array.flat[19]) and array.flat[19] == 0


def test_info_prints_a_golden_header():
    out = subprocess.run(
        [sys.executable, "-m", "dstdformat", "info", str(SPEC / "golden" / "v1.0" / "int16_ct_crop.dstd")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "24 x 40 x 40" in out and "lossless v1" in out and "27 texture" in out


def test_conformance_script_exit_code():
    result = subprocess.run([sys.executable, str(SPEC / "conformance.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "0 failed" in result.stdout
