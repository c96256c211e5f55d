"""Killing a writer (SIGKILL, at random moments) leaves the previous file or the new one, whole,
under the final name: never a partial file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dstdformat

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import sys
import numpy as np
import dstdformat
from dstdformat.codecs.lossless import LosslessCodec

path, = sys.argv[1:]
rng = np.random.default_rng(0)
a = rng.integers(-1000, 2000, size=(32, 256, 256), dtype=np.int16)
b = a.copy()
b[::2] += 7
codec = LosslessCodec(clevel=1)
print("ready", flush=True)
n = 0
while True:
    dstdformat.save(a if n % 2 == 0 else b, path, codec=codec)
    n += 1
    print(n, flush=True)
"""


def _versions():
    rng = np.random.default_rng(0)
    a = rng.integers(-1000, 2000, size=(32, 256, 256), dtype=np.int16)
    b = a.copy()
    b[::2] += 7
    return a, b


def test_sigkill_at_random_points_never_leaves_a_partial_file(tmp_path):
    a, b = _versions()
    target = tmp_path / "scan.dstd"
    dstdformat.save(a, target)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = random.Random(1234)
    outcomes = {"a": 0, "b": 0}
    mid_write = 0
    kills = 0
    # At least 20 kills; more (up to 60) until one lands mid-write, which random timing may miss.
    while kills < 20 or (mid_write == 0 and kills < 60):
        kills += 1
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 1.5))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        leftovers = list(tmp_path.glob(".scan.tmp-*"))
        mid_write += bool(leftovers)
        for leftover in leftovers:  # what a killed writer cannot clean up; never the final name
            leftover.unlink()
        with dstdformat.open(target) as volume:
            data = volume.read()
        if np.array_equal(data, a):
            outcomes["a"] += 1
        else:
            np.testing.assert_array_equal(data, b)
            outcomes["b"] += 1
    # The kills landed in different phases: some while a temporary file was being written.
    print(f"kills: {sum(outcomes.values())}, final file old/new: {outcomes}, mid-write: {mid_write}")
    assert mid_write >= 1, outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.dstd"]
