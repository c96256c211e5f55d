"""The catalog: one JSON record per scan saying what was saved and how well.

Fields of a record (``status`` ``"ok"``): ``name``, ``source`` (URL), ``source_format``,
``destination`` (relative to the archive), ``shape``, ``dtype``, ``spacing`` (mm), ``source_bytes``
(the source file or series on disk), ``raw_bytes`` (the voxels), ``dest_bytes``, ``ratio``
(raw / stored), ``mae`` and ``max_abs_error`` (physical units, HU for CT, measured by decoding the
stored scan back), ``source_sha256`` (the source's bytes; a DICOM series: every slice file's name
and bytes in name order), ``voxels_sha256`` (the original voxels, little-endian C order),
``dest_sha256`` (the stored bytes; for zarr: every object's key and bytes in key order),
``decoded_sha256`` (the voxels the stored scan decodes to), ``codec``, ``seconds``, ``worker``,
``written_at``, ``writer``. A scan that could not be archived has ``status`` ``"failed"`` and an
``error``; it is tried again on the next run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..errors import CorruptFileError
from .layout import CATALOG_FILE, RECORDS_DIR, ArchiveLocation

OK, FAILED = "ok", "failed"


def read_records(location: ArchiveLocation) -> dict[str, dict[str, Any]]:
    """Every per-scan record under ``catalog/``, by scan name (read concurrently where the
    filesystem can)."""
    found = location.find(RECORDS_DIR)
    paths = [location.path(f"{RECORDS_DIR}/{rel}") for rel in sorted(found) if rel.endswith(".json")]
    if not paths:
        return {}
    blobs = location.fs.cat(paths, on_error="return")
    if not isinstance(blobs, dict):  # one path: fsspec returns its bytes alone
        blobs = {paths[0]: blobs}
    records = {}
    for path, blob in sorted(blobs.items()):
        if isinstance(blob, BaseException):
            if isinstance(blob, FileNotFoundError):
                continue
            raise blob
        try:
            record = json.loads(blob)
        except ValueError as exc:
            raise CorruptFileError(f"catalog record {path} is not valid JSON: {exc}") from None
        records[record["name"]] = record
    return records


def read_catalog(location: ArchiveLocation) -> list[dict[str, Any]]:
    """The consolidated catalog (``catalog.jsonl``) as a list of records; empty when absent."""
    try:
        text = location.read_bytes(CATALOG_FILE).decode()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise CorruptFileError(
                f"{location.url_of(CATALOG_FILE)} line {number} is not valid JSON: {exc}"
            ) from None
    return records


def write_catalog(location: ArchiveLocation, records: Iterable[dict[str, Any]]) -> None:
    """Rewrite ``catalog.jsonl`` from ``records`` (sorted by name), atomically."""
    lines = [json.dumps(r, sort_keys=True) for r in sorted(records, key=lambda r: r["name"])]
    location.write_bytes(CATALOG_FILE, ("\n".join(lines) + "\n" if lines else "").encode())
