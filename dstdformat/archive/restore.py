"""``dstd restore DEST OUTDIR``: every archived scan back to NIfTI, in parallel, resumable.

Each scan goes to ``OUTDIR/<name>.nii.gz`` with its geometry and intensity scaling; files are
written atomically, so a re-run skips the ones already there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..progress import bar
from .catalog import OK, read_records
from .cluster import dask_cluster, run_jobs
from .layout import ArchiveLocation
from .tasks import restore_scan
from .verify import load_manifest


@dataclass
class RestoreSummary:
    output: str
    restored: int = 0
    already_there: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    failed: list[tuple[str, str]] = field(default_factory=list)


def restore_archive(
    destination: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    names: list[str] | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> RestoreSummary:
    """Decode the archived scans (all, or ``names``) into NIfTI files under the local ``output``."""
    started = time.perf_counter()
    if "://" in os.fspath(output):
        raise InvalidInputError("restore writes NIfTI files into a local folder; got a URL")
    location = ArchiveLocation(destination, storage_options)
    manifest = load_manifest(location)
    records = {n: r for n, r in read_records(location).items() if r.get("status") == OK}
    if names:
        unknown = sorted(set(names) - set(records))
        if unknown:
            raise InvalidInputError(f"not archived (or failed) in {location.url}: {', '.join(unknown)}")
        records = {n: records[n] for n in names}
    out = Path(output)
    summary = RestoreSummary(str(out))
    todo = []
    for name, record in sorted(records.items()):
        target = out / f"{name}.nii.gz"
        if target.exists() and not overwrite:
            summary.already_there += 1
            continue
        todo.append((record, target))
    learned = manifest["settings"]["codec"] == "deepstd"
    base = {
        "archive": location.url,
        "storage_options": location.storage_options,
        "models": manifest.get("models", []),
        "learned": learned,
    }
    if todo:
        with dask_cluster(workers, scheduler, learned=learned) as cluster:
            jobs = [
                {**base, "record": r, "output": str(t.resolve()), "threads": cluster.threads} for r, t in todo
            ]
            with bar(enabled=progress, desc="restoring", total=len(jobs), unit="scan") as shown:
                for job, result, error in run_jobs(cluster, restore_scan, jobs):
                    if error is not None:
                        summary.failed.append((job["record"]["name"], f"{type(error).__name__}: {error}"))
                    else:
                        summary.restored += 1
                        summary.bytes_written += result["bytes"]
                    shown.update(1)
    summary.seconds = time.perf_counter() - started
    return summary
