"""The worker side of ``av1_stress.py``: real-CT (or synthetic) tiles, the encoder variants (the
hypotheses) and the loop that encodes JSON jobs read on stdin, one JSON result line each. It runs
in its own process so that the harness can abandon a hung encode.

    python benchmarks/av1_stress_worker.py --slot 0 --sources '[...]'   # started by the harness
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_CT = REPO.parent / "shared" / "data" / "ct"
#: Volumes tiles are cut from (the first found are used), smallest first.
CT_FILES = [
    "totalseg_abdomen_3mm.nii.gz",
    "elastix_lung_baseline.nii.gz",
    "totalseg_chest_1p5mm.nii.gz",
    "lungpetctdx/lungpetctdx_a0002_siemens_8mm_B40f.nii.gz",
]
WINDOW = (-1024.0, 3071.0)
LEVELS = 1023
VARIANTS = [
    "library",
    "raw",
    "no-settle",
    "lp1",
    "lp2",
    "pin",
    "integer-crf",
    "aligned64",
    "flush-batch",
    "flush-sleep",
    "ffmpeg-defaults",
]
SHORT = re.compile(r"wrote (\d+) packets for (\d+) frames")


# ----------------------------------------------------------------------------------------------
# Tiles


def cache_ct(out: Path) -> list[str]:
    """The CT volumes as 10-bit sample arrays (slices, rows, columns) in ``out/ct_cache``."""
    if not SHARED_CT.is_dir():
        return []
    try:
        import nibabel
    except ImportError:
        return []
    folder = out / "ct_cache"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in CT_FILES:
        source = SHARED_CT / name
        target = folder / (Path(name).name.split(".")[0] + ".npy")
        if not source.exists():
            continue
        if not target.exists():
            hu = np.asarray(nibabel.load(str(source)).dataobj, dtype=np.float32).transpose(2, 1, 0)
            samples = np.clip(np.rint((hu - WINDOW[0]) / ((WINDOW[1] - WINDOW[0]) / LEVELS)), 0, LEVELS)
            np.save(target, np.ascontiguousarray(samples.astype(np.uint16)))
        paths.append(str(target))
    return paths


def random_case(rng: random.Random, big: bool = True, long: bool = False) -> dict:
    """A tile shape, CRF and preset, weighted to small tiles and preset 10."""

    def side() -> int:
        u = rng.random()
        size = (
            rng.randint(16, 128) if u < 0.55 else rng.randint(129, 256) if u < 0.85 else rng.randint(257, 512)
        )
        kind = rng.random()
        if kind < 0.3:
            size = max(64, round(size / 64) * 64)
        elif kind < 0.6:
            size = max(16, round(size / 8) * 8)
        return min(size, 512)

    u = rng.random()
    slices = rng.randint(1, 4) if u < 0.3 else rng.randint(5, 24) if u < 0.65 else rng.randint(25, 64)
    shape = [slices, side(), side()]
    if not big:
        shape = [min(shape[0], 32), min(shape[1], 256), min(shape[2], 256)]
    if long:  # many frames in flight, small frames (fast): where the failures of issue 23 were
        shape = [rng.randint(33, 64), min(shape[1], 160), min(shape[2], 160)]
    voxels = math.prod(shape)
    preset = 3 if rng.random() < 0.15 and voxels <= 2_000_000 else 10
    crf = min(63.0, rng.randint(1, 63) + rng.choice([0, 0, 0.25, 0.5, 0.75]))
    return {"shape": shape, "crf": crf, "preset": preset}


def make_tile(shape, seed: int, sources: list[str]) -> tuple[np.ndarray, str]:
    """A (slices, rows, columns) uint16 tile: a box of a CT volume, else synthetic."""
    rng = np.random.default_rng(seed)
    s, r, c = shape
    if sources:
        name = sources[seed % len(sources)]
        volume = _VOLUMES.get(name)
        if volume is None:
            volume = _VOLUMES[name] = np.load(name, mmap_mode="r")
        starts = [int(rng.integers(0, max(1, d - n + 1))) for d, n in zip(volume.shape, shape)]
        box = np.asarray(volume[tuple(slice(a, a + n) for a, n in zip(starts, shape))])
        if box.shape != tuple(shape):  # volume smaller than the tile: mirror it out
            box = np.pad(box, [(0, n - b) for n, b in zip(shape, box.shape)], mode="symmetric")
        return np.ascontiguousarray(box, dtype=np.uint16), Path(name).stem
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = 500 + 300 * ((y**2 + x**2) < 0.6) + 200 * np.sin(8 * x + 3 * z) * ((y**2 + x**2) < 0.3)
    noise = rng.normal(0, 40, size=shape)
    return np.clip(np.rint(body + noise), 0, LEVELS).astype(np.uint16), "synthetic"


_VOLUMES: dict[str, np.ndarray] = {}


# ----------------------------------------------------------------------------------------------
# Encoders (run in the worker)


@contextmanager
def scheduling_kept(enabled: bool = True):
    """Copy of the library's ``scheduling_kept``: yields ``settle``, which puts threads started
    since (SVT-AV1's, at SCHED_FIFO 99 when root) back to the caller's policy."""
    if not enabled or not hasattr(os, "sched_getscheduler"):
        yield lambda: None
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    own, earlier = threading.get_native_id(), set(_tids())

    def settle():
        for tid in [t for t in _tids() if t not in earlier] + [own]:
            try:
                if (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority) != (
                    policy,
                    param.sched_priority,
                ):
                    os.sched_setscheduler(tid, policy, param)
            except OSError:
                pass

    try:
        yield settle
    finally:
        settle()


def _tids() -> list[int]:
    return [int(t) for t in os.listdir("/proc/self/task")]


def raw_encode(
    samples, crf, preset, *, extra="", settle=True, integer_crf=False, align=8, defaults=False, flush="plain"
) -> tuple[list[bytes], int]:
    """The library's encode, written out with one knob per hypothesis; (packets, frames)."""
    import av

    height, width = (max(align, -(-n // align) * align) for n in samples.shape[1:])
    padded = np.pad(
        samples, [(0, 0), (0, height - samples.shape[1]), (0, width - samples.shape[2])], mode="edge"
    )
    context = av.CodecContext.create("libsvtav1", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p10le"
    context.time_base, context.framerate = Fraction(1, 25), 25
    if integer_crf or defaults:
        crf = min(63, max(1, round(crf)))
    if defaults:
        context.options = {"crf": str(int(crf)), "preset": str(preset)}
    else:
        params = "enable-tf=0" + ("" if float(crf).is_integer() else f":crf={float(crf):g}") + extra
        context.options = {"crf": str(int(crf)), "preset": str(preset), "svtav1-params": params}
    chroma = np.full((height // 2, width), 512, np.uint16)

    def frame(number):
        f = av.VideoFrame.from_ndarray(np.concatenate([padded[number], chroma]), format="yuv420p10le")
        f.pts = number
        return f

    frames = [frame(n) for n in range(len(padded))] if flush == "batch" else None
    packets: list[bytes] = []
    with scheduling_kept(settle) as settle_now:
        for number in range(len(padded)):
            packets += [bytes(p) for p in context.encode(frames[number] if frames else frame(number))]
            if number == 0:
                settle_now()
        if flush == "sleep":
            time.sleep(0.2)
        _phase("flush")
        packets += [bytes(p) for p in context.encode(None)]
        del context
    return packets, len(padded)


def run_variant(variant: str, samples, crf, preset, slot: int) -> tuple[list[bytes], int]:
    if variant == "library":
        from dstdformat.codecs.deepstd.base_layers import av1

        payload = av1.encode(samples, crf, preset)  # raises CodecError on a short stream
        frames = int.from_bytes(payload[6:8], "little")
        return [payload], frames  # one blob: counted as complete (the library checked)
    knobs = {
        "raw": {},
        "no-settle": {"settle": False},
        "lp1": {"extra": ":lp=1"},
        "lp2": {"extra": ":lp=2"},
        "pin": {},
        "integer-crf": {"integer_crf": True},
        "aligned64": {"align": 64},
        "flush-batch": {"flush": "batch"},
        "flush-sleep": {"flush": "sleep"},
        "ffmpeg-defaults": {"defaults": True},
    }[variant]
    if variant == "pin":
        everything = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {sorted(everything)[slot % len(everything)]})
        try:
            return raw_encode(samples, crf, preset, **knobs)
        finally:
            os.sched_setaffinity(0, everything)
    return raw_encode(samples, crf, preset, **knobs)


def _phase(name: str) -> None:
    sys.stdout.write(json.dumps({"phase": name}) + "\n")
    sys.stdout.flush()


def worker(sources: list[str], slot: int) -> None:
    """Read JSON jobs on stdin, answer one JSON result line each."""
    import av  # noqa: F401  (imported before the first job so that its time is not counted)

    try:
        from dstdformat.codecs.deepstd.base_layers import av1  # noqa: F401
    except ImportError:
        pass

    os.environ.setdefault("SVT_LOG", "1")
    _phase("ready")
    for line in sys.stdin:
        job = json.loads(line)
        samples, source = make_tile(job["shape"], job["seed"], sources)
        start = time.perf_counter()
        result = {"source": source}
        try:
            packets, frames = run_variant(job["variant"], samples, job["crf"], job["preset"], slot)
            result["seconds"] = time.perf_counter() - start
            result["frames"], result["packets"] = frames, len(packets)
            blob = b"".join(packets)
            result["bytes"], result["sha256"] = len(blob), hashlib.sha256(blob).hexdigest()
            if job["variant"] != "library" and (len(packets) != frames or not all(packets)):
                result["status"] = "short"
            else:
                result["status"] = "ok"
        except Exception as exc:  # noqa: BLE001
            result["seconds"] = time.perf_counter() - start
            message = f"{type(exc).__name__}: {exc}"
            found = SHORT.search(message)
            result["status"] = "short" if found else "error"
            result["error"] = message
            if found:
                result["packets"], result["frames"] = int(found.group(1)), int(found.group(2))
        sys.stdout.write(json.dumps({"result": result}) + "\n")
        sys.stdout.flush()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slot", type=int, default=0, help="worker number (its CPU when pinned)")
    p.add_argument("--sources", default="[]", help="JSON list of cached CT volumes (.npy)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker(json.loads(args.sources), args.slot)


if __name__ == "__main__":
    main()
