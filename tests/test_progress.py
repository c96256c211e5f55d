"""Progress bars end on screen at their final count; inner passes may vanish; disabled is silent."""

from __future__ import annotations

import contextlib
import io

from dstdformat.progress import bar, track


def _stderr_of(run) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        run()
    return err.getvalue()


def test_bars_stay_at_their_final_count():
    text = _stderr_of(lambda: list(track(range(997), enabled=True, desc="tiles")))
    assert text.rstrip().splitlines()[-1].split("\r")[-1].startswith("tiles: 100%")

    def manual():
        with bar(enabled=True, desc="bytes", total=10) as shown:
            for _ in range(10):
                shown.update(1)

    assert "bytes: 100%" in _stderr_of(manual).split("\r")[-1]


def test_inner_passes_vanish_and_disabled_bars_are_silent():
    text = _stderr_of(lambda: list(track(range(5), enabled=True, desc="pass", leave=False)))
    assert not text.endswith("\n")
    assert _stderr_of(lambda: list(track(range(5), enabled=False, desc="x"))) == ""
