"""The reader under fuzzing: a short run of the mutator inside the tests, the findings it made
turned into regression tests, and the fuzz script itself."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from fuzzing import (
    FileParts,
    Mutation,
    default_seed_paths,
    judge,
    load_seeds,
    read_untrusted,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutator import Mutator

from dstdformat.container.format import SectionKind
from dstdformat.errors import CorruptHeaderError, CorruptSectionError, DstdError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "spec" / "golden"


@lru_cache(maxsize=1)
def mutator() -> Mutator:
    return Mutator(load_seeds(default_seed_paths(ROOT / "spec")))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64 - 1))
def test_short_fuzz_run_only_dstd_errors_escape(number):
    mutation = mutator().mutate(random.Random(number))
    verdict = judge(mutation)
    assert not verdict.is_finding, (mutation.seed.name, mutation.how, verdict.detail)


def test_seeds_cover_every_codec_and_the_shape_section():
    seeds = mutator().seeds
    assert len(seeds) >= 10
    kinds = {kind for seed in seeds for kind in (e.kind for e, _ in seed.parts.sections)}
    assert {SectionKind.TEXTURE, SectionKind.OUTLIERS, SectionKind.SHAPE} <= kinds
    assert {s.header["codec"]["id"] for s in seeds} == {"lossless", "deepstd", "predictive"}


def test_every_strategy_makes_an_input_from_every_seed():
    """The mutator itself must not fail: a copy of a file-wide section (tile 0xFFFFFFFF) under
    tile + 10,000 once overflowed the index's u32 and stopped a run on the deepstd-v4 seeds at
    input 66,151 of seed 21."""
    m = mutator()
    for seed in m.seeds:
        for number in range(300):
            assert isinstance(m._sealed_structure(random.Random(number), seed).data, bytes)
        for _, strategy in m._strategies:
            for number in range(5):
                assert isinstance(strategy(random.Random(number), seed).data, bytes)
    v4 = Mutator(load_seeds(sorted((GOLDEN / "deepstd-v4").glob("*.dstd"))))
    assert isinstance(v4.mutate(random.Random("21:66151")).data, bytes)


def test_forged_texture_spacing_of_an_av1_shape_file_is_not_a_crash():
    """Input 56,735 of the in-process run on the deepstd-v4 seeds (seed 23): a forged texture
    spacing sent sampling positions far outside the texture; a tap indexed outside the decoded
    box (IndexError)."""
    v4 = Mutator(load_seeds(sorted((GOLDEN / "deepstd-v4").glob("*.dstd"))))
    mutation = v4.mutate(random.Random("23:56735"))
    assert "texture.spacing" in mutation.how
    assert not judge(mutation).is_finding


def test_sampling_far_outside_or_at_non_finite_positions_reads_padding():
    import torch

    from dstdformat.model.warp import cubic_box, sample_cubic_voxels

    texture = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)
    points = torch.tensor(
        [
            [1.2, 2.5, 3.1],
            [1e30, 2.0, 2.0],
            [float("nan"), 1.0, 1.0],
            [-float("inf"), 0.0, 0.0],
            [2.0, -1e19, 4.0],
        ]
    )
    box = cubic_box(points, texture.shape)
    part = texture[tuple(box)]
    values = sample_cubic_voxels(part, points, texture.shape, box, padding_value=-7.0)
    assert torch.isfinite(values).all() and (values[1:] == -7.0).all()
    assert values[0] == sample_cubic_voxels(texture, points[:1])[0]


def test_reassembling_an_unchanged_file_gives_the_same_bytes():
    for path in default_seed_paths(ROOT / "spec"):
        data = path.read_bytes()
        assert FileParts.parse(data).assemble() == data


def _resealed(name: str, edit_header=None, edit_section=None) -> bytes:
    data = next(GOLDEN.glob(f"*/{name}")).read_bytes()
    parts = FileParts.parse(data)
    if edit_header is not None:
        header = json.loads(parts.header)
        edit_header(header)
        parts.header = json.dumps(header).encode()
    if edit_section is not None:
        parts.sections = [edit_section(e, p) for e, p in parts.sections]
    return parts.assemble()


# Inputs the fuzzer found; each crashed the reader with a non-dstdformat error before its fix.
@pytest.mark.parametrize(
    "name, edit, error",
    [
        ("int16_ct_crop.dstd", lambda h: h["metadata"].update(provenance="x"), CorruptHeaderError),
        ("int16_ct_crop.dstd", lambda h: h["metadata"].update(modality=7), CorruptHeaderError),
        (
            "deepstd_max_error_outliers.dstd",
            lambda h: h["codec"]["state"].update(outlier_tiles=[float("inf")]),
            CorruptHeaderError,
        ),
        ("deepstd_quality45.dstd", lambda h: h["codec"]["params"].update(model=5), DstdError),
        (
            "deepstd_ratio64_refined.dstd",
            lambda h: h["codec"]["model"].update(sha256=1.5),
            CorruptHeaderError,
        ),
        (
            "deepstd_quality45.dstd",
            lambda h: h["codec"]["state"].update(stored_window=[float("-inf"), 0]),
            CorruptHeaderError,
        ),
        # These two made a decode run for hours (a deformation grid of 10^8 points), not crash.
        (
            "deepstd_shape_ratio32.dstd",
            lambda h: h["codec"]["state"]["shape"].update(scan_spacing=[3.0, 3.0, 3000.0]),
            CorruptHeaderError,
        ),
        (
            "deepstd_shape_ratio32.dstd",
            lambda h: h["codec"]["state"]["texture"].update(shape=[4000, 4000, 127]),
            CorruptHeaderError,
        ),
    ],
)
def test_hostile_header_values_are_refused(name, edit, error):
    with pytest.raises(error):
        read_untrusted(_resealed(name, edit_header=edit))


def _wavelet_length_field_set(entry, payload):
    """SPERR trusts a length inside its chunk (bytes 22..26): 0xFF there made it throw
    std::bad_alloc through its binding, which aborts the process."""
    if entry.kind != SectionKind.TEXTURE or entry.tile != 0:
        return entry, payload
    data = bytearray(payload)
    data[40:44] = b"\xff\xff\xff\x7f"
    return entry, bytes(data)


def test_a_stream_that_aborts_sperr_is_a_clean_error_and_reading_goes_on():
    hostile = _resealed("deepstd_quality45.dstd", edit_section=_wavelet_length_field_set)
    with pytest.raises(CorruptSectionError, match="crashed the base-layer decoder"):
        read_untrusted(hostile)
    seed = next(s for s in mutator().seeds if s.name == "deepstd_quality45.dstd")
    voxels, _ = read_untrusted(seed.data)  # a new helper decodes the next file
    assert (voxels == seed.voxels).all()


def test_invalid_shape_stream_is_a_clean_error():
    def scramble(entry, payload):
        if entry.kind != SectionKind.SHAPE:
            return entry, payload
        data = bytearray(payload)
        for at in range(200, len(data), 7):
            data[at] ^= 0x5A
        return entry, bytes(data)

    with pytest.raises(DstdError):
        read_untrusted(_resealed("deepstd_shape_ratio32.dstd", edit_section=scramble))


def test_damaged_copies_that_are_accepted_must_equal_the_seed():
    seed = mutator().seeds[-1]
    other = Mutation(mutator().seeds[-2].data, seed, "another file", resealed=False)
    assert judge(other).outcome == "wrong-data"
    assert judge(Mutation(seed.data, seed, "unchanged", resealed=False)).outcome == "accepted"


def test_fuzz_script_runs_workers_and_reports(tmp_path):
    out = tmp_path / "findings"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "fuzz_reader.py"),
            "--inputs",
            "80",
            "--jobs",
            "2",
            "--seed",
            "7",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 80 and summary["findings"] == 0
    assert sum(summary["outcomes"].values()) == 80 and summary["peak_worker_rss_mib"] > 0


def _shape_section_edit(at: int, value: bytes):
    def edit(entry, payload):
        if entry.kind != SectionKind.SHAPE:
            return entry, payload
        return entry, payload[:at] + value + payload[at + len(value) :]

    return edit


@pytest.mark.parametrize(
    "at, value",
    [
        (12, struct.pack("<f", 0.0)),  # SIREN frequency 0: a division by zero
        (16, struct.pack("<d", 1e300)),  # an affine that throws the scan out of the world
    ],
)
def test_forged_shape_settings_are_refused(at, value):
    with pytest.raises(DstdError):
        read_untrusted(_resealed("deepstd_shape_ratio32.dstd", edit_section=_shape_section_edit(at, value)))
