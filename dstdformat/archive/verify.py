"""``dstd verify DEST``: every stored scan against its catalog record, and the archive's models.

Without ``decode`` it checks what can be checked from the bytes: each scan's file exists, has the
recorded size and SHA-256, and is a sound ``.dstd`` (header, index and every section checksum)
of the recorded shape; each model's weights match their content address. With ``decode`` every
scan is also decoded (on the dask workers) and its voxels compared with the SHA-256 recorded when
it was archived, which proves the decoder still gives exactly what was measured then.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import DstdError, InvalidInputError
from ..progress import track
from .catalog import OK, read_catalog, read_records
from .cluster import dask_cluster, run_jobs
from .layout import ARCHIVE_FILE, SCANS_DIR, ZARR_GROUP, ArchiveLocation, leftover_temporaries
from .tasks import decode_scan, tree_sha256


@dataclass(frozen=True)
class VerifyProblem:
    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


@dataclass
class VerifySummary:
    archive: str
    checked: int = 0
    decoded: int = 0
    bytes_checked: int = 0
    problems: list[VerifyProblem] = field(default_factory=list)
    #: Scans the catalog records as not archived (they failed when the archive was made).
    failed_records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_manifest(location: ArchiveLocation) -> dict[str, Any]:
    if not location.exists(ARCHIVE_FILE):
        raise InvalidInputError(f"{location.url} is not a dstd archive (no {ARCHIVE_FILE})")
    return location.read_json(ARCHIVE_FILE)


def verify_archive(
    destination: str | os.PathLike[str],
    *,
    decode: bool = False,
    storage_options: dict[str, Any] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = False,
    clean: bool = False,
) -> VerifySummary:
    """Check an archive against its catalog (and, with ``decode``, every scan's voxels).
    Temporary files of killed writes are reported, and removed with ``clean`` (not while a
    ``dstd archive`` run writes to the same archive: its files in flight look the same)."""
    location = ArchiveLocation(destination, storage_options)
    manifest = load_manifest(location)
    summary = VerifySummary(location.url)
    for entry in manifest.get("models", []):
        for name, relative in entry["files"].items():
            if not location.exists(relative):
                summary.problems.append(VerifyProblem(entry["id"], f"{relative} is missing"))
            elif name.endswith(".safetensors"):
                digest = hashlib.sha256(location.read_bytes(relative)).hexdigest()
                if digest != entry["sha256"]:
                    summary.problems.append(
                        VerifyProblem(entry["id"], f"{relative} does not match its sha256 (damaged)")
                    )
    records = read_records(location)
    consolidated = {r["name"]: r for r in read_catalog(location)}
    if consolidated != records:
        summary.notes.append(
            f"catalog.jsonl lags the per-scan records ({len(consolidated)} against "
            f"{len(records)}): the last run stopped early; re-run dstd archive"
        )
    good = {n: r for n, r in records.items() if r.get("status") == OK}
    summary.failed_records = [r for r in records.values() if r.get("status") != OK]
    for name, record in track(
        sorted(good.items()), enabled=progress, desc="checking", total=len(good), unit="scan"
    ):
        problem = _check_stored(location, record, summary)
        if problem:
            summary.problems.append(VerifyProblem(name, problem))
        summary.checked += 1
    _check_orphans(location, manifest, good, summary)
    leftovers = leftover_temporaries(location)
    if leftovers and clean:
        for key in leftovers:
            location.remove(key)
        summary.notes.append(f"removed {len(leftovers)} temporary file(s) of killed writes")
    elif leftovers:
        summary.notes.append(
            f"{len(leftovers)} temporary file(s) of killed writes (e.g. "
            f"{leftovers[0]}); remove them with dstd verify --clean, or they "
            "go with the next dstd archive run"
        )
    if decode and good:
        _check_decoding(location, manifest, good, summary, workers, scheduler, progress)
    return summary


def _check_stored(location: ArchiveLocation, record: dict[str, Any], summary: VerifySummary) -> str | None:
    from ..container.inspect import verify as verify_volume
    from ..container.volume import open_volume

    destination = record["destination"]
    if destination.endswith(".dstd"):
        try:
            stored = location.read_bytes(destination)
        except FileNotFoundError:
            return f"{destination} is missing"
        summary.bytes_checked += len(stored)
        if len(stored) != record["dest_bytes"]:
            return f"{destination} has {len(stored)} bytes, the catalog says {record['dest_bytes']}"
        if hashlib.sha256(stored).hexdigest() != record["dest_sha256"]:
            return f"{destination} differs from what was archived (sha256 mismatch)"
        try:
            with open_volume(stored) as volume:
                report = verify_volume(volume, decode=False)
                shape = list(volume.shape)
        except DstdError as exc:
            return f"{destination} is not a sound .dstd file: {exc}"
        if not report.ok:
            return f"{destination}: {'; '.join(report.problems)}"
        if shape != record["shape"]:
            return f"{destination} holds shape {shape}, the catalog says {record['shape']}"
        return None
    if not location.exists(f"{destination}/zarr.json"):
        return f"{destination} is missing"
    digest, size = tree_sha256(location, destination)
    summary.bytes_checked += size
    if size != record["dest_bytes"] or digest != record["dest_sha256"]:
        return f"{destination} differs from what was archived ({size} bytes, sha256 mismatch)"
    return None


def _check_orphans(
    location: ArchiveLocation, manifest: dict[str, Any], good: dict[str, dict], summary: VerifySummary
) -> None:
    """Stored scans no catalog record names: a run stopped between writing a scan and its record."""
    named = {r["destination"] for r in good.values()}
    if manifest["settings"].get("zarr"):
        found = {
            f"{ZARR_GROUP}/{key[: -len('/0/zarr.json')]}"
            for key in location.find(ZARR_GROUP)
            if key.endswith("/0/zarr.json")
        }
    else:
        found = {
            f"{SCANS_DIR}/{key}"
            for key in location.find(SCANS_DIR)
            if key.endswith(".dstd") and not key.rsplit("/", 1)[-1].startswith(".")
        }
    orphans = sorted(found - named)
    if orphans:
        summary.notes.append(
            f"{len(orphans)} stored scan(s) have no ok catalog record (a run "
            f"stopped before recording them; re-run dstd archive): " + ", ".join(orphans[:5])
        )


def _check_decoding(location, manifest, good, summary, workers, scheduler, progress) -> None:
    learned = manifest["settings"]["codec"] == "deepstd"
    base = {
        "archive": location.url,
        "storage_options": location.storage_options,
        "models": manifest.get("models", []),
        "learned": learned,
    }
    with dask_cluster(workers, scheduler, learned=learned) as cluster:
        jobs = [{**base, "record": r, "threads": cluster.threads} for r in good.values()]
        results = run_jobs(cluster, decode_scan, jobs)
        for job, result, error in track(
            results, enabled=progress, desc="decoding", total=len(jobs), unit="scan"
        ):
            name = job["record"]["name"]
            if error is not None:
                summary.problems.append(VerifyProblem(name, f"decoding failed: {error}"))
            elif result["decoded_sha256"] != job["record"].get("decoded_sha256"):
                summary.problems.append(
                    VerifyProblem(name, "decodes to other voxels than when it was archived (sha256 mismatch)")
                )
            else:
                summary.decoded += 1
