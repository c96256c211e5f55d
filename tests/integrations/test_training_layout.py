"""The training layout: tiles for random patch reads, by name, from save(), codec_options, the
CLI and `dstd archive`; refused where it cannot apply."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import dstdformat
from dstdformat.archive.run import archive_collection
from dstdformat.errors import InvalidInputError
from dstdformat.tiling import LAYOUTS, layout_tile_shape


def _volume(shape=(70, 260, 300)) -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16)


def test_the_training_layout_tiles_a_volume_in_equal_tiles_of_at_most_its_shape(tmp_path):
    assert LAYOUTS["training"] == (64, 128, 128)
    assert layout_tile_shape("training", (70, 260, 300)) == (35, 87, 100)
    assert layout_tile_shape("training", (20, 100, 90)) == (20, 100, 90)
    assert layout_tile_shape("default", (70, 260, 300)) is None
    volume = _volume()
    result = dstdformat.save(volume, tmp_path / "a.dstd", codec="lossless", layout="training")
    assert tuple(dstdformat.open(tmp_path / "a.dstd").tile_shape) == (35, 87, 100)
    assert result.file_size > 0
    dstdformat.save(volume, tmp_path / "b.dstd", codec="lossless", codec_options={"layout": "training"})
    reopened = dstdformat.open(tmp_path / "b.dstd")
    assert reopened.tile_shape == (35, 87, 100)
    np.testing.assert_array_equal(reopened.read(), volume)
    default = dstdformat.save(volume, tmp_path / "c.dstd", codec="lossless", layout="default")
    assert dstdformat.open(tmp_path / "c.dstd").tile_shape != (35, 87, 100) and default.file_size > 0


def test_lossy_files_in_the_training_layout(tmp_path):
    volume = _volume((24, 140, 150))
    dstdformat.save(
        volume, tmp_path / "l.dstd", codec="deepstd", codec_options={"ratio": 16, "layout": "training"}
    )
    opened = dstdformat.open(tmp_path / "l.dstd")
    assert opened.tile_shape == (24, 70, 75)
    assert "layout" not in opened.header["codec"]["params"]  # a container choice, not the codec's


def test_bad_layouts_are_refused(tmp_path):
    volume = _volume((8, 16, 16))
    with pytest.raises(InvalidInputError, match="layout must be one of default, training"):
        dstdformat.save(volume, tmp_path / "x.dstd", layout="patches")
    with pytest.raises(InvalidInputError, match="tile_shape or layout"):
        dstdformat.save(volume, tmp_path / "x.dstd", layout="training", tile_shape=(8, 8, 8))
    with pytest.raises(InvalidInputError, match="give layout once"):
        dstdformat.save(
            volume,
            tmp_path / "x.dstd",
            codec="lossless",
            layout="training",
            codec_options={"layout": "training"},
        )


def _dstd(*args):
    return subprocess.run(
        [sys.executable, "-m", "dstdformat", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_the_cli_and_archives_write_the_training_layout(tmp_path):
    volume = _volume((20, 200, 140))
    src = tmp_path / "src"
    src.mkdir()
    nib.save(nib.Nifti1Image(volume.transpose(2, 1, 0), np.eye(4)), str(src / "ct.nii.gz"))
    done = _dstd(
        "compress",
        src / "ct.nii.gz",
        tmp_path / "ct.dstd",
        "--codec",
        "lossless",
        "--layout",
        "training",
        "-q",
    )
    assert done.returncode == 0, done.stderr
    assert dstdformat.open(tmp_path / "ct.dstd").tile_shape == (20, 100, 70)
    bad = _dstd("compress", src / "ct.nii.gz", tmp_path / "x.dstd", "--layout", "patches")
    assert bad.returncode != 0 and "training" in bad.stderr
    zarr = _dstd("to-zarr", src / "ct.nii.gz", tmp_path / "x.zarr", "--layout", "training")
    assert zarr.returncode == 1 and "does not apply to zarr" in zarr.stderr
    archive_collection(
        src, tmp_path / "dest", codec="lossless", codec_options={"layout": "training"}, workers=1
    )
    assert dstdformat.open(tmp_path / "dest" / "scans" / "ct.dstd").tile_shape == (20, 100, 70)
    with pytest.raises(InvalidInputError, match="--layout applies to .dstd"):
        archive_collection(
            src, tmp_path / "z", codec="deepstd", codec_options={"layout": "training"}, zarr=True
        )
