"""Running per-scan jobs on dask.distributed: local worker processes, or an existing cluster.

A worker process that dies (killed, out of memory) has its job retried on another worker by the
scheduler; a job that kills workers again and again comes back as an error for that job alone.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError, StorageError

#: Memory a worker should have for one big CT scan (a 512x512x600 int16 scan and its decoding).
MEMORY_PER_WORKER = 4 * 1024**3


@dataclass
class Cluster:
    client: Any
    workers: int
    #: Torch threads per task (None: leave the worker's own setting).
    threads: int | None
    description: str


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * 1024**3


def gpu_count(learned: bool) -> int:
    if not learned:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers(learned: bool) -> int:
    """One per GPU when there are GPUs; else one per core, as many as memory allows."""
    gpus = gpu_count(learned)
    if gpus:
        return gpus
    cores = os.cpu_count() or 1
    return max(1, min(cores, _total_memory() // MEMORY_PER_WORKER))


@contextmanager
def dask_cluster(
    workers: int | None = None, scheduler: str | None = None, learned: bool = True, threads: int | None = None
) -> Iterator[Cluster]:
    """A connected dask client: to ``scheduler`` (``tcp://host:8786``) when given, else to a local
    cluster of ``workers`` processes with one task at a time each. ``threads``: torch threads per
    task (default: the cores shared out among the local workers)."""
    if threads is not None and threads < 1:
        raise InvalidInputError(f"threads must be at least 1, got {threads}")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InvalidInputError(
            "archiving runs on dask.distributed: pip install 'dstdformat[dask]'"
        ) from None
    if scheduler:
        if workers is not None:
            raise InvalidInputError(
                "--workers sets up a local cluster; with --scheduler the cluster's own workers are used"
            )
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise StorageError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        try:
            count = len(client.scheduler_info().get("workers", {}))
            yield Cluster(client, count, threads, f"dask cluster {scheduler} ({count} workers)")
        finally:
            client.close()
        return
    count = workers if workers is not None else default_workers(learned)
    if count < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {count}")
    threads = threads or max(1, (os.cpu_count() or 1) // count)
    cluster = LocalCluster(
        n_workers=count,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = Client(cluster)
        try:
            yield Cluster(client, count, threads, f"{count} local worker process{'es' if count > 1 else ''}")
        finally:
            client.close()
    finally:
        cluster.close()


def run_jobs(
    cluster: Cluster,
    function: Callable[[dict[str, Any]], dict[str, Any]],
    jobs: list[dict[str, Any]],
    priorities: list[int] | None = None,
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, BaseException | None]]:
    """Submit every job, yield ``(job, result, error)`` as each finishes (any order)."""
    from distributed import as_completed

    if not jobs:
        return
    run = uuid.uuid4().hex[:8]
    futures = {}
    for number, job in enumerate(jobs):
        priority = priorities[number] if priorities else 0
        future = cluster.client.submit(
            function, job, key=f"{function.__name__}-{run}-{number}", priority=priority, pure=False
        )
        futures[future] = job
    for future in as_completed(futures):
        job = futures.pop(future)
        try:
            yield job, future.result(), None
        except Exception as exc:  # noqa: BLE001 - reported per job by the caller
            yield job, None, exc
        finally:
            future.release()
