"""``dstd archive``: a collection of CT scans into an archive, in parallel, resumable.

The client lists the sources, stores the models once, and hands one job per scan to the dask
workers; each worker writes its scan and then the scan's catalog record. A re-run of the same
command skips every scan with an ``ok`` record, retries the failed ones and takes new sources.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._version import __version__
from ..errors import InvalidInputError
from ..progress import bar
from ..tiling import check_layout
from .catalog import FAILED, OK, read_records, write_catalog
from .cluster import dask_cluster, run_jobs
from .layout import (
    ARCHIVE_FILE,
    ARCHIVE_FORMAT,
    ZARR_GROUP,
    ArchiveLocation,
    leftover_temporaries,
    record_path,
    scan_destination,
)
from .models import resolve_models, store_models
from .sources import check_names, discover
from .tasks import archive_scan

#: Seconds between rewrites of ``catalog.jsonl`` during a run (records are written at once).
CATALOG_INTERVAL = 30.0


@dataclass
class ArchiveSummary:
    archive: str
    found: int
    already_done: int
    archived: int
    failed: list[dict[str, Any]]
    raw_bytes: int
    source_bytes: int
    dest_bytes: int
    seconds: float
    cluster: str
    ignored: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.dest_bytes if self.dest_bytes else 0.0


def _settings(codec: str, codec_options: dict[str, Any], zarr: bool) -> tuple[dict, list]:
    from ..codecs.registry import get_codec

    if zarr and codec != "deepstd":
        raise InvalidInputError("--zarr stores DeepSTD chunks; it needs --codec deepstd")
    if zarr and codec_options.get("shape"):
        raise InvalidInputError("--zarr chunks are coded texture only; drop --shape")
    if zarr and codec_options.get("layout"):
        raise InvalidInputError("--zarr chunks are the tiles; --layout applies to .dstd files")
    needed: list[dict[str, Any]] = []
    options = dict(codec_options)
    layout = options.pop("layout", None)  # the container's choice; save() takes it back
    if layout is not None:
        check_layout(layout)  # a bad name fails here, before any scan
    if codec == "deepstd":
        options, needed = resolve_models(options)
    get_codec(codec, **options)  # bad options fail here, before any scan
    if layout is not None:
        options["layout"] = layout
    return {"codec": codec, "codec_options": options, "zarr": bool(zarr)}, needed


def open_archive(
    location: ArchiveLocation, settings: dict[str, Any], needed: list[dict[str, Any]], source: str
) -> list[dict[str, Any]]:
    """Create the archive, or check that an existing one was made with the same settings; store
    the models; return the model entries the workers need."""
    existing = location.read_json(ARCHIVE_FILE) if location.exists(ARCHIVE_FILE) else None
    wanted_models = sorted((n["kind"], n["id"], n["sha256"]) for n in needed)
    if existing is not None:
        if existing.get("format", 0) > ARCHIVE_FORMAT:
            raise InvalidInputError(
                f"{location.url} was written by a newer dstdformat (archive "
                f"format {existing.get('format')}); upgrade to add to it"
            )
        had_models = sorted((m["kind"], m["id"], m["sha256"]) for m in existing.get("models", []))
        if existing.get("settings") != settings or had_models != wanted_models:
            raise InvalidInputError(
                f"{location.url} holds an archive made with other settings "
                f"({_describe(existing.get('settings', {}))}, models {had_models}) than these "
                f"({_describe(settings)}, models {wanted_models}); archive into another "
                "destination, or run with the same options to resume"
            )
    entries = store_models(location, needed)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = {
        "format": ARCHIVE_FORMAT,
        "settings": settings,
        "models": entries,
        "created": existing.get("created", now) if existing else now,
        "updated": now,
        "sources": sorted({*(existing or {}).get("sources", []), source}),
        "writer": f"dstdformat {__version__}",
    }
    location.write_json(ARCHIVE_FILE, manifest)
    return entries


def _describe(settings: dict[str, Any]) -> str:
    options = ", ".join(f"{k}={v}" for k, v in sorted(settings.get("codec_options", {}).items()))
    return f"codec {settings.get('codec')} ({options}){', zarr' if settings.get('zarr') else ''}"


def _make_zarr_groups(location: ArchiveLocation, names: list[str]) -> None:
    """The root group and every intermediate group, so zarr finds each scan by walking."""
    import zarr

    options = location.storage_options or None
    zarr.open_group(location.url_of(ZARR_GROUP), mode="a", zarr_format=3, storage_options=options)
    parents = sorted({"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)})
    for parent in parents:
        zarr.open_group(
            location.url_of(f"{ZARR_GROUP}/{parent}"), mode="a", zarr_format=3, storage_options=options
        )


def archive_collection(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    codec: str = "deepstd",
    codec_options: dict[str, Any] | None = None,
    zarr: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    storage_options: dict[str, Any] | None = None,
    source_options: dict[str, Any] | None = None,
    progress: bool = False,
) -> ArchiveSummary:
    """Archive every scan under ``source`` into ``destination`` (any fsspec URL); see the module
    docstring. ``storage_options`` are for the destination, ``source_options`` for the source;
    ``threads``: torch threads per worker (default: the cores shared out among local workers)."""
    started = time.perf_counter()
    source_text = os.fspath(source)
    settings, needed = _settings(codec, dict(codec_options or {}), zarr)
    found = discover(source_text, source_options)
    if not found.scans:
        raise InvalidInputError(
            f"no scans under {source_text} (looked for NIfTI .nii/.nii.gz, "
            "HDF5 .h5/.hdf5 and DICOM series folders)"
        )
    check_names(found.scans)
    location = ArchiveLocation(destination, storage_options)
    location.makedirs("")
    models = open_archive(location, settings, needed, source_text)
    _remove_leftovers(location)
    records = read_records(location)
    todo = [
        s
        for s in found.scans
        if records.get(s.name, {}).get("status") != OK
        or records[s.name].get("destination") != scan_destination(s.name, zarr)
    ]
    if zarr:
        _make_zarr_groups(location, [s.name for s in found.scans])

    base = {
        "archive": location.url,
        "storage_options": location.storage_options,
        "source_options": dict(source_options or {}),
        "codec": codec,
        "codec_options": settings["codec_options"],
        "zarr": zarr,
        "models": models,
    }
    summary = ArchiveSummary(
        location.url, len(found.scans), len(found.scans) - len(todo), 0, [], 0, 0, 0, 0.0, "", found.ignored
    )
    last_catalog = time.monotonic()
    # Biggest scans first: the last scans to finish are then small ones and workers idle less.
    order = sorted(todo, key=lambda s: -s.nbytes)
    with dask_cluster(workers, scheduler, codec == "deepstd", threads) as cluster:
        summary.cluster = cluster.description
        jobs = [{**base, "scan": s.to_json(), "threads": cluster.threads} for s in order]
        with bar(enabled=progress, desc="archiving", total=len(jobs), unit="scan") as shown:
            for job, record, error in run_jobs(
                cluster, archive_scan, jobs, [len(jobs) - i for i in range(len(jobs))]
            ):
                if record is None:  # the job never wrote its record: its worker kept dying
                    record = _failed_record(job, error)
                    location.write_json(record_path(record["name"]), record)
                records[record["name"]] = record
                _count(summary, record)
                shown.update(1)
                shown.set_postfix_str(f"{summary.archived} ok, {len(summary.failed)} failed")
                if time.monotonic() - last_catalog > CATALOG_INTERVAL:
                    write_catalog(location, records.values())
                    last_catalog = time.monotonic()
    write_catalog(location, records.values())
    summary.seconds = time.perf_counter() - started
    return summary


def _remove_leftovers(location: ArchiveLocation) -> None:
    """Temporary files of writes killed midway (a local archive's atomic renames never ran).
    One run at a time per archive: a concurrent run's files in flight would be removed too."""
    for key in leftover_temporaries(location):
        location.remove(key)


def _count(summary: ArchiveSummary, record: dict[str, Any]) -> None:
    if record.get("status") == OK:
        summary.archived += 1
        summary.raw_bytes += record["raw_bytes"]
        summary.source_bytes += record["source_bytes"]
        summary.dest_bytes += record["dest_bytes"]
    else:
        summary.failed.append(record)


def _failed_record(job: dict[str, Any], error: BaseException | None) -> dict[str, Any]:
    scan = job["scan"]
    reason = f"{type(error).__name__}: {error}" if error is not None else "no result"
    if type(error).__name__ == "KilledWorker":
        reason = f"the worker process died each time it tried this scan ({reason})"
    return {
        "name": scan["name"],
        "source": scan["url"],
        "source_format": scan["format"],
        "destination": scan_destination(scan["name"], job["zarr"]),
        "source_bytes": scan["nbytes"],
        "codec": job["codec"],
        "status": FAILED,
        "error": reason,
        "writer": f"dstdformat {__version__}",
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
