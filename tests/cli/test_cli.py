"""The command line through subprocess, as users run it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLED_CT

import dstdformat


def dstd(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "dstdformat", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"dstd {args} failed ({result.returncode}):\n{result.stderr}")
    return result


def test_console_script_is_installed():
    # Beside the interpreter that runs the tests: a virtual environment used without activating
    # it has its scripts there but not on PATH.
    script = shutil.which("dstd", path=str(Path(sys.executable).parent)) or shutil.which("dstd")
    assert script, "the dstd console script is not installed"
    out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.startswith("dstd ")


def test_nifti_lossless_roundtrip_keeps_voxels_and_affine(tmp_path):
    out_dstd, out_nii = tmp_path / "ct.dstd", tmp_path / "back.nii.gz"
    result = dstd("compress", BUNDLED_CT, out_dstd, "--quiet", "--codec", "lossless")
    assert result.stdout == "" and result.stderr == ""
    dstd("decompress", out_dstd, out_nii, "--quiet")
    original, back = nib.load(BUNDLED_CT), nib.load(out_nii)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(original.dataobj))
    assert back.get_data_dtype() == original.get_data_dtype()
    np.testing.assert_array_equal(back.affine, original.affine)
    for code in ("qform", "sform"):
        a, acode = getattr(original, f"get_{code}")(coded=True)
        b, bcode = getattr(back, f"get_{code}")(coded=True)
        assert acode == bcode
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("suffix", [".h5", ".npy"])
def test_decompress_to_other_formats(tmp_path, suffix):
    dstd("compress", BUNDLED_CT, tmp_path / "ct.dstd", "-q", "--codec", "lossless")
    dstd("decompress", tmp_path / "ct.dstd", tmp_path / f"out{suffix}", "-q")
    scan = dstdformat.read_scan(tmp_path / f"out{suffix}")
    np.testing.assert_array_equal(scan.array, dstdformat.open(tmp_path / "ct.dstd").read())


def test_compress_prints_summary_and_tile_option(tmp_path):
    result = dstd(
        "compress", BUNDLED_CT, tmp_path / "ct.dstd", "--tile", "4", "64", "64", "--codec", "lossless"
    )
    assert "ct.dstd" in result.stdout and "x, codec lossless" in result.stdout
    assert dstdformat.open(tmp_path / "ct.dstd").tile_shape == (4, 64, 64)
    # a .dstd is a valid input too (re-encode)
    dstd("compress", tmp_path / "ct.dstd", tmp_path / "again.dstd", "-q", "--codec", "lossless")
    np.testing.assert_array_equal(
        dstdformat.open(tmp_path / "again.dstd").read(), dstdformat.open(tmp_path / "ct.dstd").read()
    )


def test_info_prints_header_and_json(tmp_path):
    dstd("compress", BUNDLED_CT, tmp_path / "ct.dstd", "-q", "--codec", "lossless")
    text = dstd("info", tmp_path / "ct.dstd").stdout
    for expected in (
        "dstd 2.0",
        "112 x 101 x 122",
        "int16",
        "3 x 3 x 3 mm",
        "lossless v1",
        "texture",
        "ratio",
        "sha256",
    ):
        assert expected in text, expected
    data = json.loads(dstd("info", tmp_path / "ct.dstd", "--json").stdout)
    assert data["header"]["array"]["shape"] == [112, 101, 122]
    assert data["sections"]["texture"]["count"] == data["header"]["tiles"]["grid"][0]
    assert data["ratio"] == pytest.approx(112 * 101 * 122 * 2 / data["file_size"])


def test_verify_ok_and_damaged(tmp_path):
    path = tmp_path / "ct.dstd"
    dstd("compress", BUNDLED_CT, path, "-q", "--codec", "lossless")
    ok = dstd("verify", path, "-q")
    assert "OK" in ok.stdout and "match the original" in ok.stdout
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = dstd("verify", path, "-q", check=False)
    assert bad.returncode == 1
    assert "FAILED" in bad.stdout and "checksum mismatch" in bad.stdout


def test_demo_runs_and_reports(tmp_path):
    result = dstd("demo", "--out", tmp_path, "--quiet")
    out = result.stdout
    assert "ratio" in out and "lazy read" in out and "codec deepstd" in out
    mean_error = float(re.search(r"mean ([0-9.]+) HU", out).group(1))
    assert 0 < mean_error < 60  # the bundled 3 mm abdomen at 256x
    volume = dstdformat.open(tmp_path / "totalseg_abdomen_3mm.dstd")
    assert volume.shape == (112, 101, 122)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("info", "{tmp}/missing.dstd"), "no such file"),
        (("info", "{tmp}/notdstd.dstd"), "not a .dstd file"),
        (("verify", "{tmp}"), "directory"),
        (("compress", "{tmp}/notdstd.dstd", "{tmp}/o.dstd"), "not a .dstd file"),
        (("compress", "{bundled}", "{tmp}/o.nii"), "must end in .dstd"),
        (("compress", "{bundled}", "{tmp}/o.dstd", "--codec", "lossless", "--ratio", "64"), "lossy codecs"),
        (("compress", "{bundled}", "{tmp}/o.dstd", "--ratio", "64", "--quality", "40"), "at most one"),
        (("compress", "{bundled}", "{tmp}/o.dstd", "--model", "nope"), "unknown model 'nope'"),
        (("compress", "{tmp}/notdstd.txt", "{tmp}/o.dstd"), "suffix|format"),
        (("decompress", "{tmp}/notdstd.dstd", "{tmp}/o.nii.gz"), "not a .dstd file"),
        (("decompress", "{tmp}/ok.dstd", "{tmp}/o.xyz"), "suffix|format"),
        (("compress", "{tmp}/4d.nii.gz", "{tmp}/o.dstd"), "4 dimensions"),
        # Bad destinations are refused before any decoding or encoding, naming the user's path.
        (("compress", "{bundled}", "{tmp}/nodir/sub/o.dstd"), r"nodir/sub/o\.dstd.*does not exist"),
        (("decompress", "{tmp}/ok.dstd", "{tmp}/nodir/o.nii.gz"), "does not exist"),
        (("to-zarr", "{bundled}", "{tmp}/nodir/o.zarr"), "does not exist"),
        (("compress", "{bundled}", "{tmp}/ok.dstd"), r"ok\.dstd already exists; use --force"),
        (("decompress", "{tmp}/ok.dstd", "{tmp}/4d.nii.gz"), "already exists"),
        (("to-zarr", "{bundled}", "{tmp}"), "already exists"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    (tmp_path / "notdstd.dstd").write_text("plain text, not a volume\n" * 20)
    (tmp_path / "notdstd.txt").write_text("plain text\n")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), tmp_path / "4d.nii.gz")
    dstdformat.save(np.zeros((2, 3, 4), np.int16), tmp_path / "ok.dstd")
    argv = [a.format(tmp=tmp_path, bundled=BUNDLED_CT) for a in args]
    result = dstd(*argv, check=False)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0]
    import re

    assert re.search(message, lines[0], re.IGNORECASE), lines[0]


def test_force_overwrites_an_existing_output(tmp_path):
    target = tmp_path / "o.dstd"
    target.write_bytes(b"an older file")
    dstd("compress", str(BUNDLED_CT), str(target), "--codec", "lossless", "-q", "--force")
    assert dstdformat.open(target).shape == (112, 101, 122)
    out = tmp_path / "o.npy"
    out.write_bytes(b"older")
    dstd("decompress", str(target), str(out), "-q", "-f")
    np.testing.assert_array_equal(np.load(out), dstdformat.read_scan(BUNDLED_CT).array)


def test_bare_dstd_prints_the_help_and_the_package_shows_public_names():
    result = dstd(check=False)
    assert result.returncode == 0 and "COMMAND" in result.stdout and "compress" in result.stdout
    assert not result.stderr
    assert {"os", "Any", "annotations"}.isdisjoint(dir(dstdformat))
    assert {"open", "save", "read_scan", "DeepSTD", "FileMissingError"} <= set(dir(dstdformat))


def test_decompress_names_writable_formats_and_the_nifti_axis_order(tmp_path):
    dstdformat.save(np.zeros((2, 3, 4), np.int16), tmp_path / "a.dstd")
    result = dstd("decompress", str(tmp_path / "a.dstd"), str(tmp_path / "a.dcm"), check=False)
    assert result.returncode == 1 and ".nii.gz" in result.stderr and "<folder>" not in result.stderr
    result = dstd("decompress", str(tmp_path / "a.dstd"), str(tmp_path / "a.nii.gz"))
    assert "(i, j, k) = (4, 3, 2)" in result.stdout
    assert nib.load(tmp_path / "a.nii.gz").shape == (4, 3, 2)


def test_usage_errors_exit_2():
    result = dstd("compress", check=False)
    assert result.returncode == 2 and "usage" in result.stderr
    result = dstd("compress", "a", "b.dstd", "--codec", "nonexistent", check=False)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_train_collection_runs_the_three_steps(tmp_path):
    from helpers import phantom_hu

    scans = tmp_path / "scans"
    scans.mkdir()
    spacing = (4.0, 3.0, 3.0)
    for n, scale in enumerate((0.95, 1.0, 1.05)):
        hu = phantom_hu(shape=(24, 40, 40), spacing=spacing, scale=scale).astype(np.int16)
        dstdformat.write_scan(
            dstdformat.Scan(hu, dstdformat.ScanMetadata(spacing=spacing)), scans / f"s{n}.nii.gz"
        )
    out = tmp_path / "model"
    args = [
        "train",
        "--collection",
        scans,
        "--out",
        out,
        "--steps",
        "2",
        "--shape-steps",
        "5",
        "--batch",
        "1",
        "--crop",
        "12",
        "16",
        "16",
        "--channels",
        "4",
        "--blocks",
        "1",
    ]
    result = dstd(*args)
    assert "3 scans aligned, 0 texture-only" in result.stdout
    assert sorted(p.name for p in (out / "aligned").glob("*.shape")) == ["s0.shape", "s1.shape", "s2.shape"]
    assert "3 resumed" in dstd(*args).stdout
    bad = dstd("train", "--out", out, check=False)
    assert bad.returncode == 1 and "--collection" in bad.stderr
    bad = dstd("train", "--collection", scans / "s0.nii.gz", "--out", out, check=False)
    assert bad.returncode == 1 and "is not a folder" in bad.stderr


def test_compress_with_shape_records_the_outcome(tmp_path):
    """--shape with the shipped template: the bundled abdomen crop is far from the chest template
    (affine NCC ~0.08), so the file is texture only and says why; bad combinations are refused."""
    scan = dstdformat.read_scan(BUNDLED_CT)
    crop = dstdformat.Scan(np.ascontiguousarray(scan.array[30:78, 20:84, 25:97]), scan.metadata)
    dstdformat.write_scan(crop, tmp_path / "crop.nii.gz")
    dstd(
        "compress",
        tmp_path / "crop.nii.gz",
        tmp_path / "s.dstd",
        "-q",
        "--ratio",
        "32",
        "--model",
        "none",
        "--shape",
        "default",
    )
    state = dstdformat.open(tmp_path / "s.dstd").header["codec"]["state"]
    assert state["shape"]["used"] is False and "far from the template" in state["shape"]["reason"]
    result = dstd(
        "compress",
        tmp_path / "crop.nii.gz",
        tmp_path / "t.dstd",
        "-q",
        "--shape-policy",
        "always",
        check=False,
    )
    assert result.returncode == 1 and "--shape-policy needs --shape" in result.stderr
    result = dstd(
        "compress",
        tmp_path / "crop.nii.gz",
        tmp_path / "t.dstd",
        "-q",
        "--codec",
        "lossless",
        "--shape",
        "default",
        check=False,
    )
    assert result.returncode == 1 and "lossy codecs" in result.stderr


def test_compress_and_info_print_the_recorded_error(tmp_path):
    result = dstd("compress", BUNDLED_CT, tmp_path / "e.dstd", "--ratio", "64")
    assert re.search(r"MAE [0-9.]+ HU, max [0-9]+ HU, PSNR [0-9.]+ dB", result.stdout)
    info = dstd("info", tmp_path / "e.dstd").stdout
    assert re.search(r"error\s+MAE [0-9.]+ HU", info) and "AV1 base layer" in info
