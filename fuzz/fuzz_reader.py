"""Fuzz the ``.dstd`` reader with mutated golden files, in worker processes, and report.

    python fuzz/fuzz_reader.py --inputs 100000 --jobs 2 --out fuzz-findings
    python fuzz/fuzz_reader.py --replay 1234          # re-run input 1234 of --seed 0 here

Input ``i`` of a run is a pure function of ``(--seed, i)``, so a finding is reproduced by its
number alone. Each worker reads inputs under an address-space limit (``--memory-gib``); the parent
watches them: a worker that dies (an abort in native code, the memory limit) or spends more than
``--hang-seconds`` on one input is recorded as a finding with that input, and replaced. Findings
(``crash``, ``wrong-data``, ``abort``, ``hang``) are written to ``--out`` as ``<kind>-<i>.dstd``
with ``findings.jsonl``; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import resource
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

SPEC = Path(__file__).resolve().parents[1] / "spec"


def make_input(mutator, run_seed: int, index: int):
    return mutator.mutate(random.Random(f"{run_seed}:{index}"))


def _mutator(seed_paths: list[str]):
    from fuzzing import load_seeds
    from mutator import Mutator

    return Mutator(load_seeds(seed_paths))


def _worker(
    number: int,
    jobs: int,
    start: int,
    stop: int,
    run_seed: int,
    seed_paths: list[str],
    memory_gib: float,
    current,
    results,
) -> None:
    """Judge inputs start, start + jobs, ... below stop; report counts and findings."""
    import numpy as np  # noqa: F401 - imported before the memory limit
    from fuzzing import judge

    mutator = _mutator(seed_paths)
    if memory_gib > 0:
        limit = int(memory_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    parent = os.getppid()
    for index in range(start, stop, jobs):
        if os.getppid() != parent:  # the run was stopped: do not go on as an orphan
            return
        current[number] = index
        mutation = make_input(mutator, run_seed, index)
        verdict = judge(mutation)
        # One message per input, so that a worker that dies loses no counts.
        results.put(("counts", {f"{verdict.outcome}:{'resealed' if mutation.resealed else 'raw'}": 1}))
        if verdict.is_finding:
            results.put(("finding", index, verdict.outcome, mutation.how, verdict.detail))
    results.put(("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    current[number] = -1


def run(args: argparse.Namespace, seed_paths: list[str]) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    context = mp.get_context("spawn")
    current = context.Array("q", [-2] * args.jobs, lock=False)
    results = context.Queue()
    totals: Counter[str] = Counter()
    findings: list[dict] = []
    peak_rss = 0
    started = time.monotonic()
    inputs_mutator = None  # built lazily in the parent to save findings' bytes

    def start_worker(number: int, first: int):
        proc = context.Process(
            target=_worker,
            daemon=True,
            args=(
                number,
                args.jobs,
                first,
                args.inputs,
                args.seed,
                seed_paths,
                args.memory_gib,
                current,
                results,
            ),
        )
        current[number] = -2
        proc.start()
        return {"proc": proc, "index": -2, "since": time.monotonic()}

    def record(index: int, kind: str, how: str, detail: str) -> None:
        nonlocal inputs_mutator
        if inputs_mutator is None:
            inputs_mutator = _mutator(seed_paths)
        mutation = make_input(inputs_mutator, args.seed, index)
        (out / f"{kind}-{index}.dstd").write_bytes(mutation.data)
        entry = {
            "index": index,
            "kind": kind,
            "seed": mutation.seed.name,
            "how": how or mutation.how,
            "detail": detail,
        }
        findings.append(entry)
        with open(out / "findings.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        print(f"FINDING {kind} at input {index}: {entry['how']}: {detail}", flush=True)

    workers = {n: start_worker(n, n) for n in range(args.jobs)}
    last_print = time.monotonic()
    while workers:
        try:
            message = results.get(timeout=0.5)
            if message[0] == "counts":
                totals.update(message[1])
            elif message[0] == "finding":
                _, index, kind, how, detail = message
                record(index, kind, how, detail)
            elif message[0] == "peak_rss_kib":
                peak_rss = max(peak_rss, message[1])
            continue
        except queue.Empty:
            pass
        now = time.monotonic()
        for number, state in list(workers.items()):
            index = current[number]
            if index != state["index"]:
                state["index"], state["since"] = index, now
            proc = state["proc"]
            if not proc.is_alive():
                if proc.exitcode == 0 and index == -1:
                    del workers[number]
                    continue
                if index < 0:
                    print(f"worker {number} failed to start (exit {proc.exitcode})", flush=True)
                    return 2
                record(index, "abort", "", f"worker died with exit code {proc.exitcode}")
                totals["abort"] += 1
                workers[number] = start_worker(number, index + args.jobs)
            elif index >= 0 and now - state["since"] > args.hang_seconds:
                proc.kill()
                proc.join()
                record(index, "hang", "", f"no result after {args.hang_seconds} s")
                totals["hang"] += 1
                workers[number] = start_worker(number, index + args.jobs)
        if now - last_print > 30:
            done = sum(v for k, v in totals.items())
            print(f"{done} inputs in {now - started:.0f} s, findings {len(findings)}", flush=True)
            last_print = now
    while True:  # drain what the last workers sent
        try:
            message = results.get(timeout=0.5)
        except queue.Empty:
            break
        if message[0] == "counts":
            totals.update(message[1])
        elif message[0] == "peak_rss_kib":
            peak_rss = max(peak_rss, message[1])

    done = sum(totals.values())
    summary = {
        "inputs": done,
        "seconds": round(time.monotonic() - started, 1),
        "jobs": args.jobs,
        "seed": args.seed,
        "seeds": [Path(p).name for p in seed_paths],
        "outcomes": dict(sorted(totals.items())),
        "findings": len(findings),
        "peak_worker_rss_mib": round(peak_rss / 1024, 1),
        "memory_limit_gib": args.memory_gib,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 1 if findings else 0


def replay(args: argparse.Namespace, seed_paths: list[str]) -> int:
    from fuzzing import judge, read_untrusted

    mutation = make_input(_mutator(seed_paths), args.seed, args.replay)
    path = Path(args.out) / f"input-{args.replay}.dstd"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mutation.data)
    print(
        f"input {args.replay}: {mutation.seed.name}, {mutation.how} "
        f"({'resealed' if mutation.resealed else 'raw'}) -> {path}"
    )
    print(judge(mutation))
    try:
        read_untrusted(mutation.data)
    except Exception:  # noqa: BLE001 - show the whole story
        traceback.print_exc()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (inputs depend on it)")
    parser.add_argument("--out", default="fuzz-findings")
    parser.add_argument("--hang-seconds", type=float, default=60.0)
    parser.add_argument(
        "--memory-gib", type=float, default=8.0, help="address-space limit per worker (0: none)"
    )
    parser.add_argument("--replay", type=int, default=None, help="re-run one input in this process")
    parser.add_argument("seed_files", nargs="*", help="valid .dstd files (default: the golden files)")
    args = parser.parse_args()
    from fuzzing import default_seed_paths

    seed_paths = [str(p) for p in (args.seed_files or default_seed_paths(SPEC))]
    if args.replay is not None:
        return replay(args, seed_paths)
    return run(args, seed_paths)


if __name__ == "__main__":
    sys.exit(main())
