"""Archiving collections: sources, catalog, resume, verify, restore, S3, killed workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLED_CT, REPO
from servers import s3_server

import dstdformat
from dstdformat.archive import archive_collection, restore_archive, verify_archive
from dstdformat.archive.sources import discover
from dstdformat.errors import InvalidInputError
from dstdformat.io import read_scan, write_scan
from dstdformat.metadata import Scan

pytest.importorskip("distributed")

DICOM_SERIES = REPO / "tests" / "data" / "dicom_3slices"


def _crop(scan: Scan, k: int, size: tuple[int, int, int]) -> Scan:
    """A real-CT sub-volume starting at slice ``k`` with the matching affine."""
    array = np.ascontiguousarray(scan.array[k : k + size[0], : size[1], : size[2]])
    affine = scan.affine.copy()
    affine[:3, 3] += affine[:3, 0] * k
    return Scan(array, scan.metadata.replace(affine=affine))


def make_collection(root: Path, count: int = 4, size=(16, 48, 48), bad: bool = True) -> list[str]:
    """NIfTI crops of the bundled CT (one as HDF5, some in a subfolder), a DICOM series, and, with
    ``bad``, a 2D image and a corrupt DICOM series; returns the names expected to succeed."""
    bundled = read_scan(BUNDLED_CT)
    names = []
    for n in range(count):
        scan = _crop(bundled, 4 + 5 * n, size)
        name = f"{'sub/' if n % 2 else ''}ct{n}"
        suffix = ".h5" if n == 1 else ".nii.gz"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_scan(scan, root / f"{name}{suffix}")
        names.append(name)
    shutil.copytree(DICOM_SERIES, root / "series" / "dicom_3slices")
    names.append("series/dicom_3slices")
    (root / "README.txt").write_text("not a scan\n")
    if bad:
        nib.save(nib.Nifti1Image(np.zeros((32, 32), np.int16), np.eye(4)), root / "flat2d.nii.gz")
        (root / "broken").mkdir()
        first = sorted(DICOM_SERIES.iterdir())[0].read_bytes()
        (root / "broken" / "slice.dcm").write_bytes(first[: len(first) // 3])  # cut short
    return sorted(names)


def _catalog(dest: Path) -> list[dict]:
    return [json.loads(line) for line in (dest / "catalog.jsonl").read_text().splitlines()]


def test_discover_names_formats_and_skips(tmp_path):
    names = make_collection(tmp_path, count=2)
    found = discover(tmp_path)
    by_name = {s.name: s for s in found.scans}
    assert sorted(by_name) == sorted([*names, "flat2d", "broken"])
    assert by_name["sub/ct1"].format == "hdf5" and by_name["ct0"].format == "nifti"
    series = by_name["series/dicom_3slices"]  # files named by UID, found by their DICM magic
    assert series.format == "dicom" and len(series.files) == 3
    assert series.nbytes == sum(p.stat().st_size for p in DICOM_SERIES.iterdir())
    assert [Path(p).name for p in found.ignored] == ["README.txt"]
    assert [s.name for s in discover(str(tmp_path / "sub" / "*.h5")).scans] == ["ct1"]
    (tmp_path / "ct0.nii").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="under one name"):
        archive_collection(tmp_path, tmp_path / "dest", codec="lossless", workers=1)


def test_lossless_archive_catalog_resume_verify_restore(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    good = make_collection(src)
    summary = archive_collection(src, dest, codec="lossless", workers=2)
    assert summary.archived == len(good) and summary.already_done == 0
    failed = {r["name"]: r["error"] for r in summary.failed}
    assert set(failed) == {"flat2d", "broken"}  # reported, not fatal
    assert "3D" in failed["flat2d"] and "DICOM" in failed["broken"]

    catalog = _catalog(dest)
    assert [r["name"] for r in catalog] == sorted([*good, "flat2d", "broken"])
    ok = {r["name"]: r for r in catalog if r["status"] == "ok"}
    assert sorted(ok) == good
    for name, record in ok.items():
        original = read_scan(
            src
            / (name if name.startswith("series") else f"{name}{'.h5' if name == 'sub/ct1' else '.nii.gz'}")
        )
        assert record["shape"] == list(original.array.shape)
        assert record["mae"] == 0 and record["max_abs_error"] == 0
        assert record["raw_bytes"] == original.array.nbytes
        assert record["dest_bytes"] == (dest / record["destination"]).stat().st_size
        assert record["decoded_sha256"] == record["voxels_sha256"]
        assert record["spacing"] == pytest.approx(list(original.spacing), abs=1e-5)
    assert len({r["source_sha256"] for r in ok.values()}) == len(ok)

    again = archive_collection(src, dest, codec="lossless", workers=1)
    assert again.archived == 0 and again.already_done == len(good)
    assert {r["name"] for r in again.failed} == {"flat2d", "broken"}  # retried, failed again
    assert len(_catalog(dest)) == len(catalog)

    report = verify_archive(dest)
    assert report.ok and report.checked == len(good) and not report.notes
    assert {r["name"] for r in report.failed_records} == {"flat2d", "broken"}
    # What a killed writer leaves: reported by verify, removed with --clean.
    stale = dest / "scans" / ".ct0.tmp-0a1b2c3d.dstd"
    stale.write_bytes(b"half a file")
    assert any("temporary file(s) of killed writes" in n for n in verify_archive(dest).notes)
    cleaned = subprocess.run(
        [sys.executable, "-m", "dstdformat", "verify", str(dest), "--clean"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cleaned.returncode == 0 and "removed 1 temporary file" in cleaned.stdout, cleaned.stderr
    assert not stale.exists() and not verify_archive(dest).notes

    out = tmp_path / "restored"
    restored = restore_archive(dest, out, workers=2)
    assert restored.restored == len(good) and not restored.failed
    for name in good:
        back = read_scan(out / f"{name}.nii.gz")
        with dstdformat.open(dest / ok[name]["destination"]) as volume:
            np.testing.assert_array_equal(back.array, volume.read())
            np.testing.assert_allclose(back.affine, volume.metadata.affine, atol=1e-4)
    assert restore_archive(dest, out, workers=1).already_there == len(good)

    collection = dstdformat.open_collection(dest)
    assert sorted(collection) == good and collection.catalog["ct0"]["status"] == "ok"
    np.testing.assert_array_equal(collection["ct0"][3], read_scan(src / "ct0.nii.gz").array[3])

    with pytest.raises(InvalidInputError, match="other settings"):
        archive_collection(src, dest, codec="deepstd", workers=1)


def test_verify_finds_damaged_missing_and_unrecorded_files(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    make_collection(src, count=3, bad=False)
    archive_collection(src, dest, codec="lossless", workers=1)
    damaged = dest / "scans" / "ct0.dstd"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (dest / "scans" / "ct2.dstd").unlink()
    (dest / "catalog" / "sub" / "ct1.json").unlink()  # as if killed before its record
    report = verify_archive(dest)
    problems = {p.name: p.message for p in report.problems}
    assert "sha256" in problems["ct0"] and "missing" in problems["ct2"]
    assert any("sub/ct1.dstd" in note for note in report.notes)
    assert not report.ok


def test_deepstd_archive_from_s3_to_s3_with_two_workers(tmp_path):
    pytest.importorskip("s3fs")
    import fsspec

    src = tmp_path / "src"
    src.mkdir()
    good = make_collection(src, count=3, size=(24, 64, 64), bad=False)
    with s3_server() as (_, options):
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir("raw")
        fs.mkdir("archive")
        fs.put(str(src), "raw/ct", recursive=True)  # the source is a bucket too (DICOM included)
        url = "s3://archive/ct"
        # model="default": the refinement is opt-in on the AV1 base; the model must travel along
        summary = archive_collection(
            "s3://raw/ct",
            url,
            codec="deepstd",
            codec_options={"ratio": 64, "model": "default"},
            workers=2,
            storage_options=options,
            source_options=options,
        )
        assert summary.archived == len(good) and not summary.failed, summary.failed
        assert {r["worker"] for r in _read_records(fs)} <= {"0", "1"}
        manifest = json.loads(fs.cat("archive/ct/archive.json"))
        (model,) = manifest["models"]
        assert model["id"] == "deepstd-refine-v1"
        assert fs.exists(f"archive/ct/models/sha256-{model['sha256']}/deepstd-refine-v1.safetensors")
        catalog = [json.loads(x) for x in fs.cat("archive/ct/catalog.jsonl").decode().splitlines()]
        assert sorted(r["name"] for r in catalog) == good
        local = archive_collection(src, tmp_path / "local", codec="lossless", workers=1)
        hashes = {r["name"]: r["source_sha256"] for r in read_catalog_file(tmp_path / "local")}
        assert local.archived == len(good)
        for record in catalog:
            assert record["ratio"] > 30 and 0 < record["mae"] < 80, record  # HU, 64x on real CT
            assert fs.size(f"archive/ct/{record['destination']}") == record["dest_bytes"]
            assert record["source_sha256"] == hashes[record["name"]]  # same bytes, local or S3

        report = verify_archive(url, decode=True, storage_options=options, workers=2)
        assert report.ok and report.decoded == len(good), report.problems

        collection = dstdformat.open_collection(url, storage_options=options)
        assert sorted(collection) == good
        volume = collection["sub/ct1"]
        before = volume.io_stats.bytes_fetched
        axial = volume[5]
        assert volume.io_stats.bytes_fetched - before < fs.size("archive/ct/scans/sub/ct1.dstd")
        restored = restore_archive(url, tmp_path / "out", storage_options=options, workers=2)
        assert restored.restored == len(good)
        np.testing.assert_array_equal(read_scan(tmp_path / "out" / "sub" / "ct1.nii.gz").array[5], axial)


def read_catalog_file(dest: Path) -> list[dict]:
    return _catalog(dest)


def _read_records(fs) -> list[dict]:
    return [json.loads(fs.cat(p)) for p in fs.find("archive/ct/catalog") if p.endswith(".json")]


def test_zarr_archive(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    good = make_collection(src, count=2, size=(16, 64, 64), bad=False)
    summary = archive_collection(
        src, dest, codec="deepstd", codec_options={"ratio": 32}, zarr=True, workers=1
    )
    assert summary.archived == len(good)
    import zarr

    group = zarr.open_group(dest / "scans.zarr", mode="r")
    array = group["sub/ct1/0"]
    assert array.shape == (16, 64, 64) and array.metadata.codecs[0].to_dict()["name"] == "deepstd"
    collection = dstdformat.open_collection(dest)
    np.testing.assert_array_equal(collection["sub/ct1"][...], array[...])
    assert verify_archive(dest).ok
    restored = restore_archive(dest, tmp_path / "out", workers=1)
    assert restored.restored == len(good)
    back = read_scan(tmp_path / "out" / "sub" / "ct1.nii.gz")
    np.testing.assert_array_equal(back.array, array[...])
    np.testing.assert_allclose(back.spacing, read_scan(src / "sub" / "ct1.h5").spacing, rtol=1e-5)


def _worker_pids(pid: int) -> list[int]:
    import psutil

    children = psutil.Process(pid).children(recursive=True)
    return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]


def _records_done(dest: Path) -> int:
    """Catalog records written; a SIGKILL may leave ``.NAME.tmp-XXXX.json`` files, not records."""
    if not (dest / "catalog").exists():
        return 0
    return sum(1 for p in (dest / "catalog").rglob("*.json") if not p.name.startswith("."))


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_killed_worker_and_killed_run_then_rerun_loses_and_duplicates_nothing(tmp_path):
    pytest.importorskip("psutil")
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    good = make_collection(src, count=10, size=(24, 96, 96), bad=False)
    # With the refinement (opt-in on AV1): slow enough per scan for the kills to land mid-run.
    command = [
        sys.executable,
        "-m",
        "dstdformat",
        "archive",
        str(src),
        str(dest),
        "--ratio",
        "64",
        "--model",
        "default",
        "--workers",
        "2",
        "--quiet",
    ]
    run = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: _records_done(dest) >= 1, 180)
        workers = _worker_pids(run.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # the scheduler hands its scan to another worker
        _wait_for(lambda: _records_done(dest) >= 4, 180)
        os.killpg(run.pid, signal.SIGKILL)  # then the whole run dies
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
    first = _records_done(dest)
    print(f"first run recorded {first} of {len(good)} scans before it was killed")
    assert first < len(good), "the first run finished before it was killed; make the scans bigger"

    again = subprocess.run([*command[:-1]], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"archived {len(good) - first} of {len(good)} scans" in again.stdout
    catalog = _catalog(dest)
    assert [r["name"] for r in catalog] == good  # each scan once
    assert all(r["status"] == "ok" for r in catalog)
    stored = sorted(p.relative_to(dest).as_posix() for p in (dest / "scans").rglob("*"))
    assert [p for p in stored if p.endswith(".dstd")] == sorted(r["destination"] for r in catalog)
    assert not [p for p in stored if Path(p).name.startswith(".")]  # no temporary leftovers
    report = verify_archive(dest)
    assert report.ok and not report.notes


def test_models_are_stored_once_and_fetched_by_readers_that_lack_them(tmp_path, test_model, monkeypatch):
    from dstdformat.errors import CodecError
    from dstdformat.zoo import registry as zoo

    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    good = make_collection(src, count=2, size=(16, 48, 48), bad=False)
    archive_collection(
        src, dest, codec="deepstd", codec_options={"ratio": 32, "model": str(test_model)}, workers=1
    )
    manifest = json.loads((dest / "archive.json").read_text())
    (entry,) = manifest["models"]
    assert entry["id"] == "test-refiner" and manifest["settings"]["codec_options"]["model"] == "test-refiner"
    stored = dest / "models" / f"sha256-{entry['sha256']}"
    assert sorted(p.name for p in stored.iterdir()) == ["test-refiner.json", "test-refiner.safetensors"]
    expected = {r["name"]: r["decoded_sha256"] for r in _catalog(dest)}

    # A reader without the model: no DSTD_MODEL_PATH, an empty cache.
    monkeypatch.delenv(zoo.MODEL_PATH_ENV)
    monkeypatch.setattr(zoo, "_registered", [])
    monkeypatch.setenv("DSTD_CACHE_DIR", str(tmp_path / "cache"))
    from dstdformat.archive.tasks import voxels_sha256

    cached = tmp_path / "cache" / f"sha256-{entry['sha256']}" / "test-refiner.safetensors"
    report = verify_archive(dest, decode=True, workers=1)  # fresh workers fetch it
    assert report.ok and report.decoded == len(good)
    assert cached.is_file()
    shutil.rmtree(tmp_path / "cache")
    collection = dstdformat.open_collection(dest)  # and so does this process
    assert voxels_sha256(collection["ct0"].read()) == expected["ct0"]
    assert cached.is_file()

    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setattr(zoo, "_registered", [])
    weights = stored / "test-refiner.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CodecError, match="damaged"):
        dstdformat.open_collection(dest)
    assert not verify_archive(dest).ok


def test_archive_on_an_existing_dask_cluster(tmp_path):
    from distributed import LocalCluster

    src = tmp_path / "src"
    src.mkdir()
    good = make_collection(src, count=2, bad=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = archive_collection(
            src, tmp_path / "dest", codec="lossless", scheduler=cluster.scheduler_address
        )
        assert summary.archived == len(good) and "dask cluster tcp://" in summary.cluster
        with pytest.raises(InvalidInputError, match="--workers"):
            archive_collection(
                src, tmp_path / "dest", codec="lossless", workers=2, scheduler=cluster.scheduler_address
            )


def test_cli_archive_verify_restore(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    good = make_collection(src, count=2)

    def dstd(*args):
        return subprocess.run(
            [sys.executable, "-m", "dstdformat", *map(str, args)], capture_output=True, text=True, timeout=300
        )

    run = dstd("archive", src, dest, "--codec", "lossless", "--workers", "2")
    assert run.returncode == 3, run.stderr  # finished, with scans it could not archive
    assert f"archived {len(good)} of {len(good) + 2} scans" in run.stdout
    assert "failed: flat2d" in run.stdout and "failed: broken" in run.stdout
    check = dstd("verify", dest, "-q")
    assert check.returncode == 0 and "OK (3 scans" in check.stdout
    assert "not archived: broken" in check.stdout
    (dest / "scans" / "ct0.dstd").write_bytes(b"not the archived file")
    check = dstd("verify", dest, "-q")
    assert check.returncode == 1 and "FAILED: ct0" in check.stdout
    restored = dstd("restore", dest, tmp_path / "out", "--names", "sub/ct1", "-q")
    assert restored.returncode == 0 and (tmp_path / "out" / "sub" / "ct1.nii.gz").is_file()
    bad = dstd("archive", src, dest, "--codec", "lossless", "--ratio", "9")
    assert bad.returncode == 1 and "keeps every voxel exactly" in bad.stderr
    missing = dstd("restore", dest, tmp_path / "out", "--names", "nope")
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_a_scan_whose_encoder_hangs_is_recorded_failed_and_archived_by_the_next_run(tmp_path, monkeypatch):
    """A hung base-layer encode ends in a ``failed`` record with the reason (the run goes on),
    and the next run retries that scan. Workers are threads here so the stand-in reaches them."""
    from distributed import LocalCluster

    from dstdformat.codecs.deepstd.base_layers import bounded, helpers

    stand_in = REPO / "tests" / "codecs" / "encoder_stand_in.py"
    hanging = helpers.Pool([str(stand_in), "hang", str(tmp_path / "marker")], keep_log=True)
    monkeypatch.setattr(bounded, "_pool", hanging)
    monkeypatch.setattr(bounded, "STALL_SECONDS", 1.0)
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    make_collection(src, count=2, size=(24, 64, 64), bad=False)
    options = {"ratio": 32, "base": "av1"}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        first = archive_collection(src, dest, codec_options=options, scheduler=cluster.scheduler_address)
        hanging.close()
        failed = {r["name"]: r["error"] for r in first.failed}
        assert set(failed) >= {"ct0", "sub/ct1"}, failed
        assert all(
            "could not be encoded in 3 attempts" in failed[n] and "used no CPU" in failed[n]
            for n in ("ct0", "sub/ct1")
        )
        monkeypatch.setattr(
            bounded, "_pool", helpers.Pool(["-m", "dstdformat.codecs.deepstd.base_layers.bounded"])
        )
        second = archive_collection(src, dest, codec_options=options, scheduler=cluster.scheduler_address)
        bounded._pool.close()
    records = {r["name"]: r for r in _catalog(dest)}
    assert records["ct0"]["status"] == records["sub/ct1"]["status"] == "ok"
    assert second.archived >= 2
    assert not [p for p in (dest / "scans").rglob(".*")]  # the failed writes left nothing
