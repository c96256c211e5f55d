"""Base-layer encodes are bounded: they run in helper processes, a hung, spinning, failing or
dying encoder is retried with the same settings, and after MAX_ATTEMPTS the write fails with a
CodecError naming the tile and the settings, leaving nothing behind and never hanging."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import dstdformat
from dstdformat.codecs.deepstd.base_layers import av1, bounded, helpers, sperr
from dstdformat.errors import CodecError

STAND_IN = str(Path(__file__).with_name("encoder_stand_in.py"))


def _samples(shape=(6, 40, 56), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.normal(0, 30, size=shape).cumsum(axis=2) + 400
    return np.clip(smooth, 0, av1.LEVELS).astype(np.uint16)


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """Plant a stand-in encoder with a fault; returns a function that picks the fault."""
    pools = []

    def plant(mode: str, stall: float = 1.0) -> None:
        pool = helpers.Pool([STAND_IN, mode, str(tmp_path / "marker")], keep_log=True)
        pools.append(pool)
        monkeypatch.setattr(bounded, "_pool", pool)
        monkeypatch.setattr(bounded, "STALL_SECONDS", stall)
        bounded.stats.reset()

    yield plant
    for pool in pools:
        pool.close()


def test_bounded_encodes_write_the_bytes_of_the_in_process_encoder():
    samples = _samples()
    for crf, preset in ((40, 10), (33.25, 10), (50.5, 8)):
        assert bounded.encode_av1(samples, crf, preset, "tile 0") == av1.encode(samples, crf, preset)
    block = samples.astype(np.float64)
    assert bounded.encode_sperr_rate(block, 2.0, "tile 0") == sperr.encode_bits_per_voxel(block, 2.0)
    assert bounded.encode_sperr_bound(block, 3.0, "tile 0") == sperr.encode_max_error(block, 3.0)


def test_a_hung_encoder_is_stopped_and_the_write_fails_naming_tile_and_settings(stand_in, tmp_path):
    stand_in("hang")
    output = tmp_path / "out.dstd"
    failure: list[BaseException] = []

    def write() -> None:
        try:
            volume = _samples((24, 96, 96)).astype(np.int16)
            dstdformat.save(volume, output, codec="deepstd", codec_options={"ratio": 24, "base": "av1"})
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    worker.join(120)  # three stalls of 1 s each, plus helper starts: far less than this
    assert not worker.is_alive(), "the write hung"
    assert len(failure) == 1 and isinstance(failure[0], CodecError), failure
    message = str(failure[0])
    assert "tile 0" in message and "AV1 crf" in message and "preset" in message
    assert f"in {bounded.MAX_ATTEMPTS} attempts" in message and "used no CPU" in message
    assert not list(tmp_path.glob("*.dstd")) and not list(tmp_path.glob(".out*"))
    counts = bounded.stats.snapshot()
    assert counts["hangs"] == bounded.MAX_ATTEMPTS and counts["failures"] == 1


def test_a_spinning_encoder_is_stopped_at_its_deadline(stand_in, monkeypatch):
    stand_in("spin", stall=60.0)
    monkeypatch.setattr(bounded, "DEADLINE_FLOOR", 0.5)
    monkeypatch.setattr(bounded, "DEADLINE_FACTOR", 0.0)
    with pytest.raises(CodecError, match="still running after"):
        bounded.encode_av1(_samples(), 40, 10, "tile 3")


@pytest.mark.parametrize("mode", ["fail-once", "die-once"])
def test_a_one_time_failure_is_retried_and_lands_the_same_bytes(stand_in, mode):
    samples = _samples(seed=4)
    expected = av1.encode(samples, 37.5, 10)
    # The stall check at its real length: on a loaded machine a retried helper may wait over a
    # second for a core, which a 1 s check would count as a second failure.
    stand_in(mode, stall=bounded.STALL_SECONDS)
    assert bounded.encode_av1(samples, 37.5, 10, "tile 1") == expected
    counts = bounded.stats.snapshot()
    assert counts["retries"] == 1 and counts["encodes"] == 1 and counts["failures"] == 0


def test_an_encoder_that_always_fails_reports_every_attempt_and_what_it_printed(stand_in):
    stand_in("fail", stall=bounded.STALL_SECONDS)  # every attempt fails by itself, none stalls
    with pytest.raises(CodecError) as caught:
        bounded.encode_sperr_rate(_samples().astype(np.float64), 1.5, "tile 7")
    message = str(caught.value)
    assert "tile 7 (SPERR 1.5 bits per voxel, 6x40x56 voxels)" in message
    assert message.count("53 packets for 56 frames") == bounded.MAX_ATTEMPTS
    assert "Svt[error]: bug, no frame in undisplayed queue" in message  # what the encoder printed


def test_a_helper_that_cannot_start_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(bounded, "_pool", helpers.Pool(["-c", "import sys; sys.exit(1)"]))
    with pytest.raises(CodecError, match="could not start an encoding helper.*DSTD_BOUNDED_ENCODER=0"):
        bounded.encode_av1(_samples(), 40, 10, "tile 0")


def test_bounded_encoding_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(bounded.BOUNDED_ENV, "0")
    assert not bounded.bounded_enabled()
    monkeypatch.setattr(bounded, "_pool", None)  # would fail if it were used
    samples = _samples()
    assert bounded.encode_av1(samples, 40, 10, "tile 0") == av1.encode(samples, 40, 10)


def test_deadlines_scale_with_the_tile_and_the_preset():
    small, large = bounded.deadline_seconds(10_000, 3), bounded.deadline_seconds(64 * 512 * 512, 3)
    assert bounded.DEADLINE_FLOOR < small < large
    assert bounded.deadline_seconds(64 * 512 * 512, 10) < large < bounded.deadline_seconds(64 * 512 * 512, 1)


def test_a_forked_child_starts_its_own_encoding_helpers():
    """The pool's helpers belong to the process that started them: a child made by fork uses
    new ones (the parent's pipes would interleave two processes' requests)."""
    import multiprocessing

    samples = _samples(seed=9)
    expected = av1.encode(samples, 40, 10)
    assert bounded.encode_av1(samples, 40, 10, "tile 0") == expected  # a helper idles in the pool
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        got = pool.apply_async(bounded.encode_av1, (samples, 40, 10, "tile 0")).get(timeout=120)
    assert got == expected
    assert sys.platform != "win32"


@pytest.mark.parametrize("shape", [(4, 16, 256), (3, 256, 8), (2, 24, 72), (1, 8, 4096)])
def test_narrow_long_frames_are_widened_so_svt_av1_does_not_hang(shape, monkeypatch):
    """SVT-AV1 4.1 never finishes the flush of frames under 32 pixels on one side and over 64
    on the other; such tiles are coded on frames widened to 32 and decode to the tile."""
    from dstdformat.codecs.deepstd.base_layers import AV1Layer

    height, width = av1.coded_size(shape)
    assert min(height, width) >= av1.NARROW_MIN
    assert av1.coded_size((4, 16, 64)) == (16, 64) and av1.coded_size((4, 16, 16)) == (16, 16)
    monkeypatch.setattr(bounded, "STALL_SECONDS", 5.0)  # a regression fails in seconds, not hangs
    samples = _samples(shape)
    stream = bounded.encode_av1(samples, 30, 10, "tile 0")
    assert av1.check(stream, shape) == (shape[0], height, width)
    layer = AV1Layer(av1.SampleMap(0.0, 1.0))
    decoded = layer.decode(stream, shape, what="tile 0", trusted=True)
    assert decoded.shape == shape and np.abs(decoded - samples).mean() < 40
