"""What a worker does for one scan: archive it, restore it, or decode it to check it.

Each function takes one plain ``job`` dict (cheap to ship to a dask worker) and returns a plain
dict. :func:`archive_scan` never raises for a bad scan: it writes a ``failed`` record saying why,
so one corrupt file does not stop a collection.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import InvalidInputError
from ..metrics import error_summary
from .catalog import FAILED, OK
from .layout import ArchiveLocation, record_path, scan_destination
from .models import ensure_models
from .sources import SourceScan, stage

_configured: dict[str, Any] = {}


def worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"pid-{os.getpid()}"


def _worker_index() -> int:
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    return name if isinstance(name, int) else int(hashlib.sha256(str(name).encode()).hexdigest(), 16)


def configure_worker(threads: int | None, learned: bool) -> str:
    """Torch threads for this process (once) and the device its scans run on: with GPUs, worker
    ``i`` takes GPU ``i mod count`` (one worker per GPU is the default cluster)."""
    if not learned:
        return "cpu"
    import torch

    if threads and _configured.get("threads") != threads:
        torch.set_num_threads(threads)
        _configured["threads"] = threads
    if torch.cuda.is_available():
        return f"cuda:{_worker_index() % torch.cuda.device_count()}"
    return "cpu"


def voxels_sha256(array: np.ndarray) -> str:
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(np.ascontiguousarray(little).data).hexdigest()


def tree_sha256(location: ArchiveLocation, relative: str) -> tuple[str, int]:
    """SHA-256 over every object under ``relative`` (key and bytes, in key order) and their size."""
    found = location.find(relative)
    digest = hashlib.sha256()
    total = 0
    paths = [location.path(f"{relative}/{key}") for key in sorted(found)]
    blobs = location.fs.cat(paths) if paths else {}
    if not isinstance(blobs, dict):
        blobs = {paths[0]: blobs}
    prefix = location.path(relative).rstrip("/") + "/"
    for path in sorted(blobs):
        blob = bytes(blobs[path])
        digest.update(path[len(prefix) :].encode() + b"\0" + len(blob).to_bytes(8, "little"))
        digest.update(blob)
        total += len(blob)
    return digest.hexdigest(), total


def archive_scan(job: dict[str, Any]) -> dict[str, Any]:
    """Read one source scan, store it under the archive, decode it back to measure it, and
    write its catalog record (the last step: no record means not done)."""
    from ..container.volume import open_volume
    from ..io import read_scan
    from ..io.dstd_files import save

    started = time.perf_counter()
    scan = SourceScan(**{**job["scan"], "files": tuple(job["scan"]["files"])})
    location = ArchiveLocation(job["archive"], job["storage_options"])
    destination = scan_destination(scan.name, job["zarr"])
    record: dict[str, Any] = {
        "name": scan.name,
        "source": scan.url,
        "source_format": scan.format,
        "destination": destination,
        "source_bytes": scan.nbytes,
        "codec": job["codec"],
        "worker": worker_name(),
        "writer": f"dstdformat {__version__}",
    }
    try:
        learned = job["codec"] == "deepstd"
        device = configure_worker(job.get("threads"), learned)
        ensure_models(location, job["models"])
        with tempfile.TemporaryDirectory(prefix="dstd-archive-") as tmp:
            path, source_sha256 = stage(scan, Path(tmp), job.get("source_options"))
            ct = read_scan(path, **({"progress": False} if scan.format == "dicom" else {}))
        array = ct.array
        if array.ndim != 3 or min(array.shape) < 2:
            # A 2D image (a scout, a key image) read as one slice is not a CT volume.
            raise InvalidInputError(
                f"a 2D image, not a 3D volume: shape {array.shape} (an "
                "archive takes volumes with at least 2 voxels along each axis)"
            )
        record.update(
            {
                "shape": list(array.shape),
                "dtype": array.dtype.name,
                "spacing": [round(float(s), 6) for s in ct.spacing],
                "raw_bytes": int(array.nbytes),
                "source_sha256": source_sha256,
                "voxels_sha256": voxels_sha256(array),
            }
        )
        options = dict(job["codec_options"])
        if learned and not job["zarr"] and options.get("model", "x") is not None:
            options.setdefault("device", device)
        if job["zarr"]:
            decoded, dest_sha256, dest_bytes = _store_zarr(ct, location, destination, options)
        else:
            location.prepare_parent(destination)
            save(
                ct,
                location.url_of(destination),
                codec=job["codec"],
                codec_options=options,
                storage_options=location.storage_options or None,
            )
            stored = location.read_bytes(destination)
            dest_sha256, dest_bytes = hashlib.sha256(stored).hexdigest(), len(stored)
            with open_volume(stored) as volume:  # the stored bytes themselves, not a cached copy
                decoded = volume.read()
        error = error_summary(array, decoded, ct.metadata.slope, ct.metadata.intercept)
        mae, worst = error["mae_hu"], error["max_error_hu"]
        record.update(
            {
                "status": OK,
                "dest_bytes": dest_bytes,
                "dest_sha256": dest_sha256,
                "ratio": round(array.nbytes / dest_bytes, 3),
                "mae": round(mae, 4),
                "max_abs_error": round(worst, 4),
                "decoded_sha256": voxels_sha256(decoded),
            }
        )
    except Exception as exc:  # noqa: BLE001 - a bad scan is recorded, never fatal to the run
        record.update({"status": FAILED, "error": f"{type(exc).__name__}: {exc}"})
    record["seconds"] = round(time.perf_counter() - started, 3)
    record["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    location.write_json(record_path(scan.name), record)
    return record


def _store_zarr(ct, location: ArchiveLocation, destination: str, options: dict[str, Any]):
    import zarr

    from ..interop.to_zarr import scan_to_zarr

    options.pop("device", None)
    url = location.url_of(destination)
    storage = location.storage_options or None
    location.remove(destination, recursive=True)  # what a killed attempt may have left
    scan_to_zarr(ct, url, zarr_format=3, codec_options=options, storage_options=storage)
    decoded = zarr.open_array(f"{url}/0", mode="r", storage_options=storage)[...]
    dest_sha256, dest_bytes = tree_sha256(location, destination)
    return decoded, dest_sha256, dest_bytes


def decode_scan(job: dict[str, Any]) -> dict[str, Any]:
    """Decode one archived scan and return the sha256 of its voxels (``verify --decode``)."""
    configure_worker(job.get("threads"), job.get("learned", True))
    location = ArchiveLocation(job["archive"], job["storage_options"])
    ensure_models(location, job["models"])
    scan = load_archived(location, job["record"])
    return {"name": job["record"]["name"], "decoded_sha256": voxels_sha256(scan.array)}


def restore_scan(job: dict[str, Any]) -> dict[str, Any]:
    """Decode one archived scan into a NIfTI file under the output folder (atomic write)."""
    from ..io import write_scan

    started = time.perf_counter()
    configure_worker(job.get("threads"), job.get("learned", True))
    location = ArchiveLocation(job["archive"], job["storage_options"])
    ensure_models(location, job["models"])
    scan = load_archived(location, job["record"])
    target = Path(job["output"])
    target.parent.mkdir(parents=True, exist_ok=True)
    write_scan(scan, target)
    return {
        "name": job["record"]["name"],
        "output": str(target),
        "bytes": target.stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
    }


def load_archived(location: ArchiveLocation, record: dict[str, Any]):
    """The decoded :class:`~dstdformat.Scan` of one catalog record (a .dstd file or zarr group)."""
    from ..container.volume import open_volume
    from ..metadata import Scan

    destination = record["destination"]
    if destination.endswith(".dstd"):
        with open_volume(location.url_of(destination), location.storage_options or None) as volume:
            return Scan(volume.read(), volume.metadata)
    from ..interop.to_zarr import zarr_to_scan

    return zarr_to_scan(location.url_of(destination), location.storage_options or None)
