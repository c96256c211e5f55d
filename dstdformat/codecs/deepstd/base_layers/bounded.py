"""Base-layer encodes that always end: each runs in a helper process under a deadline scaled to
its tile, a hung or failed encode is retried with the same settings, and after
:data:`MAX_ATTEMPTS` the write fails with a CodecError naming the tile and the settings.

Why: on a loaded machine SVT-AV1 now and then never returns from its flush (every thread waits on
a semaphore, 0% CPU) or writes fewer packets than it was given frames (``Svt[error]: bug, no
frame in undisplayed queue``); a thread cannot be abandoned safely inside a native call, a
process can. A hang is seen two ways: the helper has used no CPU for :data:`STALL_SECONDS`
(a wait that will never end; even on a machine loaded several times over a runnable process gets
CPU every second), or it is still running at the tile's deadline (a livelock). SVT-AV1 writes
the same bytes for the same input and settings whatever the load (docs/benchmarks.md), so a
retry lands the stream the first attempt would have written.

``DSTD_BOUNDED_ENCODER=0`` encodes in this process with no deadline (a little faster on tiny
tiles; a hang then hangs the caller). Helpers need POSIX pipes, so elsewhere that is the rule.
"""

from __future__ import annotations

import atexit
import os
import threading
import time

import numpy as np

from ....errors import CodecError
from . import av1, helpers, sperr

BOUNDED_ENV = "DSTD_BOUNDED_ENCODER"
#: Tries of one tile encode before the write fails.
MAX_ATTEMPTS = 3
#: Seconds without CPU progress after which an encoding helper counts as hung.
STALL_SECONDS = 30.0
#: Seconds of one core per coded voxel, measured on a quiet 2-core machine on CT tiles: AV1 at
#: presets 3 and 10 (between them geometric, each slower preset below 3 twice the time), SPERR at
#: a typical rate. A tile's deadline is scaled from these.
AV1_SECONDS_PER_VOXEL = {3: 1.0e-6, 10: 1.0e-7}
SPERR_SECONDS_PER_VOXEL = 3.0e-7
#: The deadline is this many times the expected time, plus :data:`DEADLINE_FLOOR` seconds: loose
#: enough for a machine loaded ten times over, tight enough that a livelock ends.
DEADLINE_FACTOR = 30.0
DEADLINE_FLOOR = 60.0

_AV1, _SPERR_RATE, _SPERR_BOUND = 0, 1, 2


class EncodeStats:
    """Counters of every bounded encode in this process (for benchmarks and reports)."""

    FIELDS = ("encodes", "attempts", "retries", "hangs", "failures", "retry_seconds")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self._counts = dict.fromkeys(self.FIELDS, 0)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._counts)


stats = EncodeStats()
_pool = helpers.Pool(["-m", "dstdformat.codecs.deepstd.base_layers.bounded"], keep_log=True)
atexit.register(_pool.close)


def bounded_enabled() -> bool:
    """True unless switched off (or not on POSIX, where helpers cannot be waited on)."""
    if os.name != "posix":
        return False
    return os.environ.get(BOUNDED_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def deadline_seconds(voxels: int, preset: int | None = None) -> float:
    """The wall-clock time an encode of ``voxels`` coded voxels may take (AV1 at ``preset``,
    SPERR without one)."""
    if preset is None:
        per_voxel = SPERR_SECONDS_PER_VOXEL
    else:
        slow, fast = AV1_SECONDS_PER_VOXEL[3], AV1_SECONDS_PER_VOXEL[10]
        if preset <= 3:
            per_voxel = slow * 2.0 ** (3 - preset)
        else:
            per_voxel = slow * (fast / slow) ** ((min(preset, 10) - 3) / 7)
    return DEADLINE_FLOOR + DEADLINE_FACTOR * per_voxel * voxels


def encode_av1(samples: np.ndarray, crf: float, preset: int, what: str) -> bytes:
    """A tile's AV1 stream (:func:`.av1.encode`), bounded and retried."""
    if not bounded_enabled():
        return av1.encode(samples, crf, preset)
    av1.check_encodable(samples, crf)
    height, width = av1.coded_size(samples.shape)
    voxels = samples.shape[0] * height * width
    samples = np.ascontiguousarray(samples, dtype="<u2")
    params = {"crf": crf, "preset": int(preset), "shape": list(samples.shape)}
    settings = f"AV1 crf {crf} preset {preset}, {_shape(samples.shape)}"
    return _run(_AV1, params, samples, deadline_seconds(voxels, int(preset)), what, settings)


def encode_sperr_rate(block: np.ndarray, bits_per_voxel: float, what: str) -> bytes:
    """A tile's SPERR stream at a rate (:func:`.sperr.encode_bits_per_voxel`), bounded."""
    if not bounded_enabled():
        return sperr.encode_bits_per_voxel(block, bits_per_voxel)
    settings = f"SPERR {bits_per_voxel:g} bits per voxel, {_shape(block.shape)}"
    return _sperr(_SPERR_RATE, {"bits_per_voxel": float(bits_per_voxel)}, block, what, settings)


def encode_sperr_bound(block: np.ndarray, tolerance: float, what: str) -> bytes:
    """A tile's SPERR stream within ``tolerance`` (:func:`.sperr.encode_max_error`), bounded."""
    if not bounded_enabled():
        return sperr.encode_max_error(block, tolerance)
    settings = f"SPERR max error {tolerance:g}, {_shape(block.shape)}"
    return _sperr(_SPERR_BOUND, {"tolerance": float(tolerance)}, block, what, settings)


def _sperr(op: int, params: dict, block: np.ndarray, what: str, settings: str) -> bytes:
    sperr.check_block(block)
    block = np.ascontiguousarray(block, dtype="<f8")
    limit = deadline_seconds(block.size)
    return _run(op, {**params, "shape": list(block.shape)}, block, limit, what, settings)


def _run(op: int, params: dict, block: np.ndarray, limit: float, what: str, settings: str) -> bytes:
    """The stream of one encode request, tried up to MAX_ATTEMPTS times."""
    reasons: list[str] = []
    started = time.monotonic()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        stats.add(attempts=1, retries=int(attempt > 1))
        try:
            deadline = time.monotonic() + limit
            answer = _pool.call(op, params, memoryview(block).cast("B"), deadline, STALL_SECONDS)
        except helpers.HelperCannotStart as exc:
            raise CodecError(
                f"could not start an encoding helper ({exc}); set {BOUNDED_ENV}=0 to encode in "
                "this process (without a deadline)"
            ) from None
        except helpers.HelperTimeout as exc:
            stats.add(hangs=1)
            reasons.append(
                f"attempt {attempt}: the encoder {exc} and was stopped{_svt_errors(getattr(exc, 'log', ''))}"
            )
            continue
        except helpers.HelperDied as exc:
            reasons.append(
                f"attempt {attempt}: the encoder died ({exc}){_svt_errors(getattr(exc, 'log', ''))}"
            )
            continue
        if answer.error is not None:
            reasons.append(f"attempt {attempt}: {answer.error}{_svt_errors(answer.log)}")
            continue
        assert answer.data is not None
        stats.add(encodes=1, retry_seconds=(time.monotonic() - started) if attempt > 1 else 0.0)
        return bytes(answer.data)
    stats.add(failures=1, retry_seconds=time.monotonic() - started)
    raise CodecError(
        f"{what} ({settings}) could not be encoded in {MAX_ATTEMPTS} attempts "
        f"(deadline {limit:.0f} s each): " + "; ".join(reasons)
    )


def _svt_errors(log: str) -> str:
    """The encoder's own error lines, if it printed any while it ran."""
    lines = [line.strip() for line in log.splitlines() if "error" in line.lower()]
    return f" [{'; '.join(dict.fromkeys(lines))[-300:]}]" if lines else ""


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape) + " voxels"


def _encode_here(op: int, params: dict, payload: bytes) -> tuple[dict, bytes]:
    """The helper's side of one request."""
    shape = tuple(int(s) for s in params["shape"])
    if op == _AV1:
        samples = np.frombuffer(payload, "<u2").reshape(shape)
        return {}, av1.encode(samples, params["crf"], int(params["preset"]))
    block = np.frombuffer(payload, "<f8").reshape(shape)
    if op == _SPERR_RATE:
        return {}, sperr.encode_bits_per_voxel(block, float(params["bits_per_voxel"]))
    return {}, sperr.encode_max_error(block, float(params["tolerance"]))


if __name__ == "__main__":
    helpers.serve(
        {
            op: (lambda params, payload, op=op: _encode_here(op, params, payload))
            for op in (_AV1, _SPERR_RATE, _SPERR_BOUND)
        }
    )
