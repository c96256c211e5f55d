"""compress, archive and to-zarr take one set of codec flags; the codec says which apply."""

from __future__ import annotations

import argparse

import pytest
from helpers import BUNDLED_CT

from dstdformat.cli.codec_flags import CODEC_FLAGS, flag_name
from dstdformat.cli.main import build_parser, main


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("command", ["compress", "archive", "to-zarr"])
def test_every_command_takes_every_codec_flag(command):
    flags = {s for a in _subparser(command)._actions for s in a.option_strings}
    assert {flag_name(o) for o in CODEC_FLAGS} <= flags


def test_the_flags_are_declared_once():
    helps = {
        a.help
        for command in ("compress", "archive", "to-zarr")
        for a in _subparser(command)._actions
        if a.option_strings and a.option_strings[0] == "--max-error"
    }
    assert len(helps) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["compress", "IN", "o.dstd", "--codec", "lossless", "--max-error", "2"],
            "keeps every voxel exactly",
        ),
        (["compress", "IN", "o.dstd", "--codec", "predictive", "--base", "av1"], "--base does not apply"),
        (["compress", "IN", "o.dstd", "--shape-policy", "always"], "--shape-policy needs --shape"),
        (["to-zarr", "IN", "o.zarr", "--shape", "default"], "--shape does not apply to zarr chunks"),
        (["archive", "SRC", "DEST", "--codec", "predictive", "--ratio", "8"], "--ratio does not apply"),
    ],
)
def test_flags_a_codec_does_not_take_are_refused_by_name(tmp_path, capsys, argv, message):
    argv = [
        str(BUNDLED_CT) if a == "IN" else str(tmp_path / a) if "." in a or a in ("SRC", "DEST") else a
        for a in argv
    ]
    assert main(argv) != 0
    assert message in capsys.readouterr().err


def test_archive_stores_the_bounded_tier(tmp_path):
    import shutil

    import numpy as np

    import dstdformat

    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(BUNDLED_CT, source / "ct.nii.gz")
    argv = ["archive", str(source), str(tmp_path / "dest"), "--codec", "predictive", "--max-error", "2"]
    assert main([*argv, "--workers", "1", "--quiet"]) == 0
    (stored,) = (tmp_path / "dest").rglob("*.dstd")
    scan = dstdformat.io.read_scan(BUNDLED_CT)
    with dstdformat.open(stored) as volume:
        assert volume.codec.guarantee().max_error == 2
        assert np.abs(volume.read().astype(np.int32) - scan.array).max() <= 2
