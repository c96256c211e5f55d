"""benchmarks/training_patches.py's tiny variant runs and prints every source's row."""

from __future__ import annotations

import sys

from helpers import REPO


def test_the_training_benchmark_runs_on_the_bundled_scan(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["training_patches.py"])
    import training_patches

    assert training_patches.main(["--quick", "--workers", "1"]) == 0
    table = capsys.readouterr().out
    for source in ("dstd 32x, default tiles", "(16, 64, 64)", "lossless (predictive)", "zarr v2", "nibabel"):
        assert source in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "patches/s" not in line]
    assert len(rows) == 17
    for row in rows:
        assert float(row.split("|")[4]) > 0  # patches/s measured
