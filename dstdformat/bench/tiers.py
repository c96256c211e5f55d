"""``dstd bench --tier lossless|bounded``: the tiers an archive stores, every codec on the same
slices in one process.

Lossless: ratio, encode and decode MB/s, and a check that every voxel came back. Bounded
(``--errors 1 2 4 8 16``): the same plus the largest error and the MAE, and whether the bound
held on every voxel. Ratios are raw int16 bytes over compressed bytes; speeds use all threads
(``--threads``), which is what "decodes at 50 MB/s on 2 cores" means.
"""

from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..progress import track
from .archival import BOUNDED_CODECS, LOSSLESS_CODECS, make_tier_codec
from .codecs import cpu_threads, payload_size
from .measure import timed
from .runner import load_hu_volume

TIERS = ("lossless", "bounded")
DEFAULT_ERRORS = (1, 2, 4, 8, 16)


@dataclass
class TierConfig:
    volumes: list[Path]
    tier: str = "lossless"
    codecs: list[str] = field(default_factory=list)  # empty: every codec of the tier
    errors: list[int] = field(default_factory=lambda: list(DEFAULT_ERRORS))
    threads: int | None = None
    crop: tuple[int, int, int] | None = None
    progress: bool = False


def measure_tier_point(codec, volume: np.ndarray, bound: int | None, threads: int) -> dict[str, Any]:
    """One encode and decode at ``bound`` (None: lossless): size, speed, and what came back."""
    megabytes = volume.nbytes / 1e6
    payload, encode_s = timed(lambda: codec.encode(volume, bound, threads))
    decoded, decode_s = timed(lambda: codec.decode(payload, volume.shape, threads))
    if decoded.shape != volume.shape:
        return {"error": f"decoded shape {decoded.shape}, expected {volume.shape}"}
    difference = np.abs(decoded.astype(np.int32) - volume.astype(np.int32))
    largest = int(difference.max())
    size = payload_size(payload)
    return {
        "compressed_bytes": size,
        "ratio": volume.nbytes / size,
        "encode_mbps": megabytes / encode_s,
        "decode_mbps": megabytes / decode_s,
        "max_error": largest,
        "mae": float(difference.mean()),
        "held": largest <= (bound or 0),
    }


def run_tier(config: TierConfig) -> dict[str, Any]:
    threads = config.threads or cpu_threads()
    table = LOSSLESS_CODECS if config.tier == "lossless" else BOUNDED_CODECS
    names = config.codecs or list(table)
    codecs = {name: make_tier_codec(config.tier, name) for name in names}
    bounds: list[int | None] = [None] if config.tier == "lossless" else list(config.errors)
    jobs = [(path, name, bound) for path in config.volumes for name in names for bound in bounds]
    records: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    loaded: dict[Path, np.ndarray] = {}
    for path, name, bound in track(jobs, enabled=config.progress, desc=f"bench {config.tier}", unit="point"):
        if path not in loaded:
            loaded.clear()
            loaded[path], spacing = load_hu_volume(path, config.crop)
            volumes.append({"volume": path.name, "shape": list(loaded[path].shape), "spacing": list(spacing)})
        row = {"volume": path.name, "codec": codecs[name].name, "id": name, "bound": bound}
        try:
            row.update(measure_tier_point(codecs[name], loaded[path], bound, threads))
        except Exception as exc:  # noqa: BLE001 - a codec that fails is a row, not the end of the run
            row["error"] = f"{type(exc).__name__}: {exc}"
        records.append(row)
    return {
        "tier": config.tier,
        "version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "threads": threads},
        "volumes": volumes,
        "records": records,
    }


def _best_other(rows: list[dict[str, Any]], row: dict[str, Any]) -> float | None:
    """The best ratio among the installable codecs (not ours) at the same volume and bound."""
    others = [
        r["ratio"]
        for r in rows
        if not r["id"].startswith("dstd")
        and r["volume"] == row["volume"]
        and r["bound"] == row["bound"]
        and "ratio" in r
        and r["held"]
    ]
    return max(others) if others else None


def tier_markdown(results: dict[str, Any]) -> str:
    rows = results["records"]
    lines = [
        f"Tier: {results['tier']} ({results['date']}, dstdformat {results['version']}, "
        f"{results['machine']['threads']} threads)",
        "",
        "| volume | codec | bound HU | ratio | vs best installable | encode MB/s | decode MB/s | max err | "
        "MAE | bound held |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        bound = "lossless" if row["bound"] is None else row["bound"]
        if "error" in row:
            lines.append(f"| {row['volume']} | {row['codec']} | {bound} | failed: {row['error']} ||||||")
            continue
        best = _best_other(rows, row)
        versus = f"{row['ratio'] / best:.3f}" if best else "-"
        lines.append(
            f"| {row['volume']} | {row['codec']} | {bound} | {row['ratio']:.3f} | {versus} | "
            f"{row['encode_mbps']:.1f} | {row['decode_mbps']:.1f} | {row['max_error']} | "
            f"{row['mae']:.3f} | {'yes' if row['held'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def write_tier_reports(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"tier-{results['tier']}"
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    written[0].write_text(json.dumps(results, indent=1))
    written[1].write_text(tier_markdown(results))
    return written
