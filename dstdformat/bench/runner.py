"""``dstd bench``: every codec at every target ratio on every volume, measured in one process."""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import DstdError, InvalidInputError
from ..progress import track
from .bdrate import bd_rate_summary
from .codecs import BenchCodec, cpu_threads, make_bench_codec, payload_size
from .measure import PeakMemory, timed
from .search import search_ratio

DEFAULT_RATIOS = (32.0, 64.0, 128.0, 256.0, 512.0)
DEFAULT_CODECS = (
    "dstd-*",
    "sperr",
    "av1",
    "av1-deepstd-settings",
    "hevc-12bit",
    "hevc-10bit",
    "vp9",
    "sz3",
    "zfp",
    "zfp-rate",
    "htj2k",
    "jpeg2000",
    "jpegxl",
    "zstd",
    "blosc",
)


@dataclass
class BenchConfig:
    volumes: list[Path]
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    codecs: list[str] = field(default_factory=lambda: list(DEFAULT_CODECS))
    threads: int | None = None  # "all threads"; default: the CPUs this process may use
    crop: tuple[int, int, int] | None = None  # central crop, for quick runs
    progress: bool = False


def load_hu_volume(path: Path, crop: tuple[int, int, int] | None) -> tuple[np.ndarray, tuple]:
    """An int16 HU volume (slope/intercept applied) and its spacing."""
    from ..io import read_scan

    scan = read_scan(path)
    meta = scan.metadata
    hu = scan.array.astype(np.float64) * meta.slope + meta.intercept
    if hu.min() < -32768 or hu.max() > 32767:
        raise InvalidInputError(f"{path}: values do not fit int16 HU")
    volume = np.rint(hu).astype(np.int16)
    if crop:
        starts = [max(0, (s - c) // 2) for s, c in zip(volume.shape, crop)]
        volume = np.ascontiguousarray(volume[tuple(slice(b, b + c) for b, c in zip(starts, crop))])
    return volume, tuple(meta.spacing)


def _expand(codecs: list[str]) -> list[str]:
    from ..codecs.registry import available_codecs

    out: list[str] = []
    for name in codecs:
        out += [f"dstd-{c}" for c in available_codecs()] if name == "dstd-*" else [name]
    return list(dict.fromkeys(out))


def measure_point(
    codec: BenchCodec, volume: np.ndarray, value: float | None, threads: int, spacing: tuple
) -> dict[str, Any]:
    """Encode/decode at ``value`` single- and multi-threaded; quality metrics on the result."""
    from .. import metrics

    mb = volume.nbytes / 1e6
    row: dict[str, Any] = {}
    payload, t_enc1 = timed(lambda: codec.encode(volume, value, 1))
    decoded, t_dec1 = timed(lambda: codec.decode(payload, volume.shape, 1))
    row.update(compressed_bytes=payload_size(payload), encode_mbps_1t=mb / t_enc1, decode_mbps_1t=mb / t_dec1)
    if codec.threaded and threads > 1:
        with PeakMemory() as memory:
            payload, t_enc = timed(lambda: codec.encode(volume, value, threads))
            decoded, t_dec = timed(lambda: codec.decode(payload, volume.shape, threads))
        row.update(encode_mbps_nt=mb / t_enc, decode_mbps_nt=mb / t_dec)
    else:
        with PeakMemory() as memory:
            payload = codec.encode(volume, value, 1)
            decoded = codec.decode(payload, volume.shape, 1)
        row.update(encode_mbps_nt=row["encode_mbps_1t"], decode_mbps_nt=row["decode_mbps_1t"])
    row["peak_memory_mb"] = memory.peak / 1e6
    if decoded.shape != volume.shape:
        raise DstdError(f"{codec.name} decoded shape {decoded.shape}, expected {volume.shape}")
    row["achieved_ratio"] = volume.nbytes / row["compressed_bytes"]
    row.update(metrics.all_metrics(volume, decoded, spacing))
    return row


def run_bench(config: BenchConfig) -> dict[str, Any]:
    threads = config.threads or cpu_threads()
    codec_names = _expand(config.codecs)
    codecs = [make_bench_codec(name) for name in codec_names]
    records: list[dict[str, Any]] = []
    volumes_info = []
    jobs = [(path, codec) for path in config.volumes for codec in codecs]
    loaded: dict[Path, tuple[np.ndarray, tuple]] = {}
    for path, codec in track(jobs, enabled=config.progress, desc="bench", unit="codec"):
        if path not in loaded:
            loaded.clear()
            loaded[path] = load_hu_volume(path, config.crop)
            volume, spacing = loaded[path]
            volumes_info.append(
                {
                    "volume": path.name,
                    "shape": list(volume.shape),
                    "spacing": list(spacing),
                    "raw_bytes": volume.nbytes,
                }
            )
        volume, spacing = loaded[path]
        base = {
            "volume": path.name,
            "codec": codec.name,
            "family": codec.family,
            "knob": codec.knob.name if codec.knob else None,
        }
        cache: dict[tuple, dict[str, Any]] = {}
        for target in config.ratios:
            row = {**base, "target_ratio": target}
            try:

                def ratio_at(v, codec=codec, volume=volume):
                    return volume.nbytes / payload_size(codec.encode(volume, v, threads))

                found = search_ratio(ratio_at, codec.knob, target)
                key = (found.value,)
                if key not in cache:
                    cache[key] = measure_point(codec, volume, found.value, threads, spacing)
                row.update(cache[key])
                row.update(
                    knob_value=found.value,
                    search_evaluations=found.evaluations,
                    reached=found.reached,
                    status="ok"
                    if found.reached
                    else f"unreachable: closest achieved ratio {found.ratio:.1f}"
                    + (f" ({found.note})" if found.note else ""),
                )
            except Exception as exc:  # a baseline failing must not sink the whole run
                row.update(reached=False, status=f"error: {type(exc).__name__}: {exc}")
            records.append(row)
    return {
        "run": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "dstdformat": __version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "python": platform.python_version(),
            "threads_all": threads,
            "ratios": config.ratios,
            "codecs": codec_names,
            "crop": list(config.crop) if config.crop else None,
            "tolerance": 0.05,
            "ratio_definition": "raw int16 bytes / compressed bytes",
        },
        "volumes": volumes_info,
        "records": records,
        "bd_rate": bd_rate_summary(records),
    }
