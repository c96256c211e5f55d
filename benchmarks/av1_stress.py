"""Stress harness for the AV1 base layer's encoder (SVT-AV1 through PyAV) on a loaded machine.

What it measures: how often an AV1 tile encode fails when the machine is busy, and in which way:

* ``hang``  - the encode never finishes (seen: the flush ``context.encode(None)`` blocked for ever
  in ``svt_av1_enc_get_packet`` -> ``sem_wait``); detected by a deadline (20x the expected time
  + 30 s) or a stall (the worker's CPU time, /proc/PID/stat, not advancing for ``--stall`` s);
  the hung worker is optionally backtraced with gdb, killed, and a fresh worker started;
* ``short`` - the stream holds fewer packets than frames (seen with ``Svt[error]: bug, no frame
  in undisplayed queue`` on stderr);
* ``error`` - any other exception.

Every encode runs in a worker process (``av1_stress_worker.py``, fed JSON jobs on stdin) so that a hang can be
abandoned. The harness starts its own load, bounded in time and stopped when it stops: ``--busy``
busy-loop processes, ``--concurrent`` encoder workers at once, ``--torch-load`` (a torch CPU
matmul loop). Tiles are random boxes of real CT (``../shared/data/ct`` beside the repository,
window -1024..3071 HU mapped onto 0..1023 like ``SampleMap.for_window``) or synthetic noise and
structure where that folder is missing; random CRF 1..63 in quarter steps; presets 10 and 3.

Variants (the hypotheses; ``--variant`` may be given several times, cases interleave so that all
variants see the same load and the same tiles):

``library``        dstdformat's own ``av1.encode`` (whatever it does today);
``raw``            a copy of that logic (the baseline the variants below change one thing of);
``no-settle``      raw without moving SVT-AV1's threads back from SCHED_FIFO;
``lp1``, ``lp2``   raw plus ``svtav1-params`` ``lp=1`` / ``lp=2`` (level of parallelism);
``pin``            raw with the worker pinned to one CPU (SVT-AV1 4.x rejects ``pin=1``);
``integer-crf``    raw with the CRF rounded to a whole number (no extended ``crf=X.25``);
``aligned64``      raw with frames padded to multiples of 64 instead of 8;
``flush-batch``    raw with all frames built first, then fed in a tight loop;
``flush-sleep``    raw with a 0.2 s pause before the flush (the encoder idle at end of stream);
``flush-variants`` shorthand for both flush variants;
``ffmpeg-defaults`` only ``crf`` (whole) and ``preset``, no ``svtav1-params`` (settle kept).

Outputs under ``--out``: ``encodes.jsonl`` (one line per encode), ``summary.json`` and
``summary.md`` (per variant: encodes, hangs, short streams, other errors, failures per 1000
encodes, median seconds), ``hangs/`` (gdb backtraces and thread states of hung workers),
``workers/`` (each worker's stderr). ``--determinism`` instead encodes fixed tiles several times,
quiet and under load, with the default ``lp`` and lp=1/2, and compares the streams' sha256;
``--cost`` times a few real tiles at presets 3 and 10 with the given variants on a quiet machine.

Examples::

    python benchmarks/av1_stress.py --variant library --busy 4 --concurrent 4 --torch-load \
        --minutes 20 --encodes 2000 --out /tmp/av1_stress/repro
    python benchmarks/av1_stress.py --variant raw --variant lp1 --variant no-settle --minutes 30
    python benchmarks/av1_stress.py --determinism --out /tmp/av1_stress/det
    python benchmarks/av1_stress.py --cost --variant library --variant lp1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from av1_stress_worker import VARIANTS, cache_ct, random_case

from dstdformat.codecs.deepstd.base_layers.helpers import cpu_seconds

WORKER = Path(__file__).resolve().with_name("av1_stress_worker.py")

# ----------------------------------------------------------------------------------------------
# Load


def start_load(args, seconds: float) -> list[subprocess.Popen]:
    """Busy loops and a torch matmul loop, each ending by itself after ``seconds`` or when this
    process is gone."""
    parent = os.getpid()
    guard = (
        f"import os,time\nend=time.time()+{seconds:.0f}\n"
        f"alive=lambda: time.time()<end and os.getppid()=={parent}\n"
    )
    procs = []
    for _ in range(args.busy):
        code = guard + "n=0\nwhile alive():\n  for _ in range(200000): n+=1\n"
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
    if args.torch_load:
        code = guard + (
            "import torch\ntorch.set_num_threads(2)\na=torch.randn(768,768)\n"
            "while alive():\n  for _ in range(20): b=a@a\n"
        )
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
    return procs


def stop_load(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


# ----------------------------------------------------------------------------------------------
# Parent: workers with deadlines


def narrow_frames(record: dict) -> bool:
    """Frames SVT-AV1 4.1 always hangs on (a side under 32 beside one over 64, after padding),
    which the library widens: a hang there is that known cause, not the load race."""
    align = 64 if record["variant"] == "aligned64" else 8
    if record["variant"] == "library":
        return False
    sides = [max(align, -(-n // align) * align) for n in record["shape"][1:]]
    return min(sides) < 32 and max(sides) > 64


def expected_seconds(shape, preset) -> float:
    return 0.3 + math.prod(shape) * (3e-7 if preset <= 3 else 3e-8)


class Worker:
    def __init__(self, harness, slot: int):
        self.h, self.slot, self.generation = harness, slot, 0
        self.proc = None
        self.start()

    def start(self):
        self.generation += 1
        folder = self.h.out / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        self.err_path = folder / f"w{self.slot}-{self.generation}.err"
        self.err = open(self.err_path, "wb")
        env = dict(os.environ, SVT_LOG=os.environ.get("SVT_LOG", "1"), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--slot",
                str(self.slot),
                "--sources",
                json.dumps(self.h.sources),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            env=env,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        self.err_offset = 0
        message = self.lines.get(timeout=120)
        assert json.loads(message).get("phase") == "ready", message

    @staticmethod
    def _read(proc, lines):
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def stderr_new(self) -> list[str]:
        self.err.flush()
        with open(self.err_path, "rb") as f:
            f.seek(self.err_offset)
            data = f.read()
        self.err_offset += len(data)
        return [line for line in data.decode(errors="replace").splitlines() if "Svt[error]" in line]

    def run(self, job: dict) -> dict:
        deadline = 20 * expected_seconds(job["shape"], job["preset"]) + 30
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        start = time.monotonic()
        last_cpu, last_change, phase = cpu_seconds(self.proc.pid), start, "encode"
        while True:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                line = ""
            now = time.monotonic()
            if line is None:  # worker died
                self.proc.wait()
                record = {
                    "status": "error",
                    "error": f"worker died rc={self.proc.returncode}",
                    "seconds": now - start,
                    "phase": phase,
                }
                record["svt_errors"] = self.stderr_new()
                self.start()
                return record
            if line:
                message = json.loads(line)
                if "phase" in message:
                    phase = message["phase"]
                    continue
                record = message["result"]
                record["svt_errors"] = self.stderr_new()
                return record
            cpu = cpu_seconds(self.proc.pid)
            if cpu != last_cpu:
                last_cpu, last_change = cpu, now
            stalled = now - last_change > self.h.args.stall
            if stalled or now - start > deadline:
                record = {
                    "status": "hang",
                    "seconds": now - start,
                    "phase": phase,
                    "why": "stall" if stalled else "deadline",
                }
                record["trace"] = self.h.backtrace(self.proc.pid, job)
                record["svt_errors"] = self.stderr_new()
                self.proc.kill()
                self.proc.wait()
                self.err.close()
                self.start()
                return record


class Harness:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sources = [] if args.synthetic else cache_ct(self.out)
        self.lock = threading.Lock()
        self.log = open(self.out / "encodes.jsonl", "a")
        self.records: list[dict] = []
        self.gdb_left = args.gdb

    def backtrace(self, pid: int, job: dict) -> str | None:
        folder = self.out / "hangs"
        folder.mkdir(exist_ok=True)
        name = folder / f"{job['variant']}-{job['case']}-{pid}.txt"
        lines = []
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text()
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                lines.append(f"{tid} {comm} state={stat[0]} policy={stat[38]} prio={stat[37]} wchan={wchan}")
            except (OSError, IndexError):
                pass
        text = json.dumps(job) + "\n" + "\n".join(lines) + "\n"
        with self.lock:
            take = self.gdb_left > 0
            self.gdb_left -= take
        if take:
            try:
                text += subprocess.run(
                    ["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                    capture_output=True,
                    text=True,
                    timeout=90,
                ).stdout
            except (OSError, subprocess.TimeoutExpired) as exc:
                text += f"gdb failed: {exc}\n"
        name.write_text(text)
        return name.name

    def record(self, job: dict, result: dict) -> None:
        entry = {**job, **result, "time": time.time()}
        with self.lock:
            self.records.append(entry)
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()
        if result["status"] != "ok" or result.get("svt_errors"):
            print(
                f"[{entry['variant']}] case {job['case']} {job['shape']} crf {job['crf']} p{job['preset']}: "
                f"{result['status']} {result.get('error', '')} {result.get('svt_errors', '')}",
                flush=True,
            )

    def summary(self) -> dict:
        table = {}
        for variant in sorted({r["variant"] for r in self.records}):
            rows = [r for r in self.records if r["variant"] == variant]
            count = {k: sum(r["status"] == k for r in rows) for k in ("ok", "hang", "short", "error")}
            narrow = sum(r["status"] == "hang" and narrow_frames(r) for r in rows)
            fails = count["hang"] + count["short"] + count["error"]
            table[variant] = {
                "encodes": len(rows),
                **count,
                "hang_narrow": narrow,
                "svt_error_encodes": sum(bool(r.get("svt_errors")) for r in rows),
                "hang_with_svt_error": sum(r["status"] == "hang" and bool(r.get("svt_errors")) for r in rows),
                "failures_per_1000": round(1000 * fails / len(rows), 2),
                "median_s": round(statistics.median(r["seconds"] for r in rows if r["status"] == "ok"), 3)
                if count["ok"]
                else None,
            }
        lines = [
            "| variant | encodes | ok | hang | of them narrow frames | short | other error | "
            "Svt[error] encodes | hang with Svt[error] | failures /1000 | median s |",
            "|" + "---|" * 11,
        ]
        for v, t in table.items():
            lines.append(
                f"| {v} | {t['encodes']} | {t['ok']} | {t['hang']} | {t['hang_narrow']} | {t['short']} | "
                f"{t['error']} | {t['svt_error_encodes']} | {t['hang_with_svt_error']} | "
                f"{t['failures_per_1000']} | {t['median_s']} |"
            )
        (self.out / "summary.json").write_text(json.dumps(table, indent=1))
        (self.out / "summary.md").write_text("\n".join(lines) + "\n")
        return table

    def run_jobs(self, jobs, concurrent: int) -> None:
        """Run ``jobs`` (an iterator, shared between the slots) until it ends or time runs out."""
        end = time.monotonic() + 60 * self.args.minutes
        jobs_lock = threading.Lock()

        def slot_loop(slot):
            w = Worker(self, slot)
            try:
                while time.monotonic() < end:
                    with jobs_lock:
                        job = next(jobs, None)
                    if job is None:
                        return
                    self.record(job, w.run(job))
            finally:
                w.proc.kill()
                w.proc.wait()

        threads = [threading.Thread(target=slot_loop, args=(s,), daemon=True) for s in range(concurrent)]
        for t in threads:
            t.start()
        last = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.monotonic() - last > 30:
                last = time.monotonic()
                with self.lock:
                    table = self.summary()
                print(time.strftime("%H:%M:%S"), json.dumps(table), flush=True)


def expand(variants: list[str]) -> list[str]:
    out = []
    for v in variants or ["library"]:
        out += ["flush-batch", "flush-sleep"] if v == "flush-variants" else [v]
    for v in out:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}, flush-variants")
    return out


def stress(args) -> None:
    h = Harness(args)
    variants = expand(args.variant)
    rng = random.Random(args.seed)

    def jobs():
        for case in range(args.encodes):
            if case % len(variants) == 0:
                tile = random_case(rng, big=not args.small, long=args.long)
                while not args.narrow and narrow_frames({"variant": "raw", **tile}):
                    tile = random_case(
                        rng, big=not args.small, long=args.long
                    )  # the known hang: not the race
                tile_seed = rng.randrange(1 << 30)
            yield {"case": case, "variant": variants[case % len(variants)], "seed": tile_seed, **tile}

    load = start_load(args, 60 * args.minutes + 120)
    try:
        h.run_jobs(jobs(), args.concurrent)
    finally:
        stop_load(load)
    print(open(h.out / "summary.md").read() if h.records and h.summary() else "no encodes")


def determinism(args) -> None:
    h = Harness(args)
    rng = random.Random(args.seed)
    tiles = [random_case(rng, big=False) for _ in range(args.tiles)]
    seeds = [rng.randrange(1 << 30) for _ in tiles]
    settings = expand(args.variant) if args.variant else ["raw", "lp1", "lp2"]
    phases = [("quiet", False)] * args.repeats + [("loaded", True)] * args.repeats
    case = 0
    for number, (phase, loaded) in enumerate(phases):
        jobs = []
        for t, (tile, seed) in enumerate(zip(tiles, seeds)):
            for variant in settings:
                jobs.append(
                    {
                        "case": case,
                        "variant": variant,
                        "seed": seed,
                        "tile": t,
                        "run": f"{phase}{number}",
                        **tile,
                    }
                )
                case += 1
        load = start_load(args, 60 * args.minutes + 120) if loaded else []
        try:
            h.run_jobs(iter(jobs), args.concurrent if loaded else 1)
        finally:
            stop_load(load)
    hashes: dict = {}
    for r in h.records:
        if r["status"] == "ok":
            hashes.setdefault((r["tile"], r["variant"]), {})[r["run"]] = r["sha256"]
    report = {"tiles": [{"shape": t["shape"], "crf": t["crf"], "preset": t["preset"]} for t in tiles]}
    same_runs = {
        v: sum(len(set(hashes.get((t, v), {}).values())) == 1 for t in range(len(tiles))) for v in settings
    }
    report["identical_across_runs_and_load"] = {v: f"{n}/{len(tiles)} tiles" for v, n in same_runs.items()}
    across_lp = 0
    for t in range(len(tiles)):
        per = [set(hashes.get((t, v), {}).values()) for v in settings]
        across_lp += all(len(p) == 1 for p in per) and len(set().union(*per)) == 1
    report["identical_across_settings"] = f"{across_lp}/{len(tiles)} tiles ({', '.join(settings)})"
    report["detail"] = {f"tile{t}/{v}": runs for (t, v), runs in sorted(hashes.items())}
    report["failures"] = [r for r in h.records if r["status"] != "ok"]
    (h.out / "determinism.json").write_text(json.dumps(report, indent=1))
    h.summary()
    print(
        json.dumps(
            {k: report[k] for k in ("identical_across_runs_and_load", "identical_across_settings")}, indent=1
        )
    )


def cost(args) -> None:
    """Seconds and bytes of a few real tiles, quiet machine, per variant and preset."""
    h = Harness(args)
    variants = expand(args.variant) if args.variant else ["library"]
    shapes = [[64, 512, 512], [32, 256, 256], [43, 157, 115]]
    jobs, case = [], 0
    for repeat in range(args.repeats):
        for shape in shapes:
            for preset in (3, 10):
                for variant in variants:
                    jobs.append(
                        {
                            "case": case,
                            "variant": variant,
                            "seed": 7 + shapes.index(shape),
                            "shape": shape,
                            "crf": 29.25,
                            "preset": preset,
                            "repeat": repeat,
                        }
                    )
                    case += 1
    h.run_jobs(iter(jobs), 1)
    rows = {}
    for r in h.records:
        if r["status"] == "ok":
            rows.setdefault((str(r["shape"]), r["preset"], r["variant"]), []).append(r)
    lines = ["| tile | preset | variant | median s | bytes |", "|---|---|---|---|---|"]
    for (shape, preset, variant), rs in sorted(rows.items()):
        lines.append(
            f"| {shape} | {preset} | {variant} | {statistics.median(r['seconds'] for r in rs):.3f} | "
            f"{rs[0]['bytes']} |"
        )
    (h.out / "cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for the variants.",
    )
    p.add_argument(
        "--variant", action="append", help=f"one of {', '.join(VARIANTS)}, flush-variants (repeatable)"
    )
    p.add_argument("--out", default="av1_stress_out", help="output folder")
    p.add_argument("--encodes", type=int, default=2000, help="total encodes (all variants)")
    p.add_argument("--minutes", type=float, default=20, help="time bound of the run")
    p.add_argument("--busy", type=int, default=4, help="busy-loop load processes")
    p.add_argument("--concurrent", type=int, default=2, help="encoder workers at once")
    p.add_argument("--torch-load", action="store_true", help="also run a torch CPU matmul loop")
    p.add_argument(
        "--stall", type=float, default=20, help="seconds without CPU progress that count as a hang"
    )
    p.add_argument("--gdb", type=int, default=3, help="backtrace at most this many hung workers with gdb")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--small", action="store_true", help="tiles of at most 32x256x256")
    p.add_argument(
        "--narrow",
        action="store_true",
        help="keep tiles with narrow frames (the known deterministic hang) in the stress mix",
    )
    p.add_argument("--long", action="store_true", help="tiles of 33..64 slices, at most 160x160 in-plane")
    p.add_argument("--synthetic", action="store_true", help="synthetic tiles even where CT is available")
    p.add_argument("--determinism", action="store_true", help="compare sha256 of repeated encodes")
    p.add_argument("--tiles", type=int, default=6, help="tiles of --determinism")
    p.add_argument("--repeats", type=int, default=2, help="runs per phase (--determinism, --cost)")
    p.add_argument("--cost", action="store_true", help="time real tiles at presets 3 and 10, quiet")
    args = p.parse_args(argv)
    if args.determinism:
        determinism(args)
    elif args.cost:
        args.busy, args.torch_load = 0, False
        cost(args)
    else:
        stress(args)


if __name__ == "__main__":
    main()
