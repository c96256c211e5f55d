"""Writes under load: many bounded tile encodes and whole-file writes of real CT scans while the
machine is busy, counting hangs, failed encodes, retries, what the retries cost and failed writes.

    python benchmarks/write_stress.py [--tiles 500] [--writes 50] [--busy 4] [--out DIR]

The load is ``--busy`` busy-loop processes (default two per core) started here and stopped when
the run ends, plus ``--torch-load`` (a torch matmul loop, as training beside an archive run
would be). Tiles are random crops of the shared CT scans (1..64 slices, 16..512 pixels, odd
sizes included), coded at random quarter-step CRFs at presets 10 and 3 through the codec's own
bounded encoder (:mod:`dstdformat.codecs.deepstd.base_layers.bounded`); writes are
``dstdformat.save`` of random crops at 24x..256x. Every result goes to ``DIR/records.jsonl``, the
summary to ``DIR/summary.json`` and the screen. The targets: 0 hangs that stall anything and 0
failed writes (a hang stopped and retried counts as a retry, not a failure).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import dstdformat
from dstdformat.codecs.deepstd.base_layers import av1, bounded
from dstdformat.errors import DstdError
from dstdformat.io import read_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED  # noqa: E402

SCANS = [
    "itkelastix_chest_512.nii.gz",
    "elastix_lung_baseline.nii.gz",
    "totalseg_chest_1p5mm.nii.gz",
    "lungpetctdx/lungpetctdx_a0001_philips_5mm_B.nii.gz",
    "lungpetctdx/lungpetctdx_a0002_siemens_8mm_B70f.nii.gz",
]


def _busy(until: float) -> None:
    while time.time() < until:
        pass


def _torch_busy(until: float) -> None:
    import torch

    torch.set_num_threads(2)
    a = torch.randn(768, 768)
    while time.time() < until:
        a = torch.tanh(a @ a)


def start_load(busy: int, torch_load: bool, seconds: float) -> list[multiprocessing.Process]:
    """Load processes that stop by themselves after ``seconds`` (and are stopped at the end)."""
    context = multiprocessing.get_context("spawn")
    until = time.time() + seconds
    workers = [context.Process(target=_busy, args=(until,), daemon=True) for _ in range(busy)]
    if torch_load:
        workers.append(context.Process(target=_torch_busy, args=(until,), daemon=True))
    for worker in workers:
        worker.start()
    return workers


def random_crop(
    rng: np.random.Generator, volume: np.ndarray, slices: int, rows: int, cols: int
) -> np.ndarray:
    shape = [min(s, v) for s, v in zip((slices, rows, cols), volume.shape)]
    start = [int(rng.integers(0, v - s + 1)) for s, v in zip(shape, volume.shape)]
    return volume[tuple(slice(a, a + s) for a, s in zip(start, shape))]


def tile_shape(rng: np.random.Generator) -> tuple[int, int, int]:
    slices = int(rng.choice([1, 2, 3, 8, 16, 43, 56, 64]))
    if rng.random() < 0.5:  # sizes that are multiples of nothing
        rows, cols = (int(x) for x in rng.integers(16, 513, size=2))
    else:
        rows, cols = (int(rng.choice([16, 64, 128, 256, 512])) for _ in range(2))
    return slices, rows, cols


def run_tiles(rng, volumes, count: int, log) -> list[dict]:
    samples_of = av1.SampleMap.for_window(-1024.0, 3071.0)
    records = []
    for number in tqdm(range(count), desc="tile encodes", unit="tile"):
        preset = 3 if rng.random() < 0.15 else 10
        slices, rows, cols = tile_shape(rng)
        if preset == 3:  # keep the slow preset to tiles that take seconds, not minutes
            slices, rows, cols = min(slices, 16), min(rows, 256), min(cols, 256)
        crop = random_crop(rng, volumes[int(rng.integers(len(volumes)))], slices, rows, cols)
        samples = samples_of.to_samples(np.clip(crop, -1024, 3071))
        crf = av1.crf_of_steps(int(rng.integers(4 * av1.MIN_CRF, 4 * av1.MAX_CRF + 1)))
        before, started = bounded.stats.snapshot(), time.perf_counter()
        record = {"kind": "tile", "n": number, "shape": list(samples.shape), "crf": crf, "preset": preset}
        try:
            stream = bounded.encode_av1(samples, crf, preset, f"stress tile {number}")
            record.update(status="ok", bytes=len(stream))
        except DstdError as exc:
            record.update(status="failed", error=str(exc))
        after = bounded.stats.snapshot()
        record.update(
            seconds=round(time.perf_counter() - started, 3),
            retries=after["retries"] - before["retries"],
            hangs=after["hangs"] - before["hangs"],
        )
        log.write(json.dumps(record) + "\n")
        log.flush()
        records.append(record)
    return records


def run_writes(rng, volumes, count: int, log, folder: Path) -> list[dict]:
    records = []
    for number in tqdm(range(count), desc="file writes", unit="file"):
        volume = volumes[int(rng.integers(len(volumes)))]
        crop = random_crop(
            rng, volume, int(rng.integers(16, 80)), int(rng.integers(96, 513)), int(rng.integers(96, 513))
        )
        ratio = float(rng.choice([24, 32, 64, 128, 256]))
        path = folder / f"write{number}.dstd"
        before, started = bounded.stats.snapshot(), time.perf_counter()
        record = {"kind": "write", "n": number, "shape": list(crop.shape), "ratio": ratio}
        try:
            result = dstdformat.save(
                np.ascontiguousarray(crop), path, codec="deepstd", codec_options={"ratio": ratio}
            )
            with dstdformat.open(path) as written:
                written.read()  # the file reads back whole
            record.update(status="ok", achieved=round(result.ratio, 2))
        except DstdError as exc:
            status = "out of reach" if "out of reach" in str(exc) else "failed"
            record.update(status=status, error=str(exc)[:500])
        after = bounded.stats.snapshot()
        record.update(
            seconds=round(time.perf_counter() - started, 3),
            retries=after["retries"] - before["retries"],
            hangs=after["hangs"] - before["hangs"],
        )
        path.unlink(missing_ok=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
        records.append(record)
    return records


def summarize(tiles: list[dict], writes: list[dict], seconds: float) -> dict:
    counts = bounded.stats.snapshot()
    return {
        "tile_encodes": len(tiles),
        "tile_encodes_failed": sum(r["status"] == "failed" for r in tiles),
        "writes": len(writes),
        "writes_failed": sum(r["status"] == "failed" for r in writes),
        "writes_out_of_reach": sum(r["status"] == "out of reach" for r in writes),
        "encoder_attempts": counts["attempts"],
        "hangs_stopped": counts["hangs"],
        "retries": counts["retries"],
        "failed_attempts": counts["attempts"] - counts["encodes"],
        "retry_seconds": round(counts["retry_seconds"], 1),
        "tile_seconds_median": float(np.median([r["seconds"] for r in tiles])) if tiles else None,
        "wall_seconds": round(seconds, 1),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=500)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--busy", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--torch-load", action="store_true")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--out", type=Path, default=Path("write_stress_out"))
    parser.add_argument("--max-seconds", type=float, default=7200.0, help="the load stops after this")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"this benchmark reads the shared CT scans ({SHARED} is missing)")
    volumes = [read_scan(SHARED / name).array for name in SCANS if (SHARED / name).exists()]
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    load = start_load(args.busy, args.torch_load, args.max_seconds)
    started = time.perf_counter()
    try:
        with open(args.out / "records.jsonl", "w") as log, tempfile.TemporaryDirectory() as tmp:
            tiles = run_tiles(rng, volumes, args.tiles, log)
            writes = run_writes(rng, volumes, args.writes, log, Path(tmp))
    finally:
        for worker in load:
            worker.terminate()
            worker.join()
    summary = summarize(tiles, writes, time.perf_counter() - started)
    summary.update(busy=args.busy, torch_load=args.torch_load, seed=args.seed)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, value in summary.items():
        print(f"{name:>22}: {value}")


if __name__ == "__main__":
    main()
