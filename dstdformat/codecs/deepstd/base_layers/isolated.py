"""Base-layer decoding (SPERR, AV1) of streams read from files, in helper processes that may die
without harm.

SPERR is a C++ library written for trusted data: a stream whose internal sizes were tampered with
(and whose checksums were then recomputed, so the container cannot tell) makes it throw
``std::bad_alloc`` past its Python binding, which aborts the whole interpreter. Streams that come
from files are therefore decoded in long-lived helper processes (one per concurrent decode, started
on first use with ``python -m dstdformat.codecs.deepstd.base_layers.isolated``): a helper that dies or runs
past its time limit becomes a :class:`~dstdformat.errors.CorruptSectionError` and is replaced.
Helpers also run under an address-space limit, so a hostile stream cannot exhaust memory either.
Streams the encoder just wrote are decoded in process. AV1 streams decode in process too: with
dav1d single-threaded, the structure-aware fuzzer ran 100,000 forged files of the AV1 golden set
through the in-process decoder without a crash, hang or abort (SECURITY.md);
``DSTD_ISOLATE_AV1=1`` sends them to the helpers as well.

The pipe protocol is little-endian: a request is ``u64 length`` + ``u8 itemsize`` (4: float32,
what the codec keeps, half the bytes to move; 8: float64, as SPERR decodes; 2: uint16, AV1's
samples) + ``u8 decoder`` (0 SPERR, 1 AV1) + stream; the answer is ``u8 status`` then, for
status 0, ``3 x u32 shape`` + voxels, or for status 1 ``u32 length`` + UTF-8 message.

``DSTD_ISOLATE_DECODER=0`` decodes in process (trusted data only; a little faster on tiny tiles).
"""

from __future__ import annotations

import atexit
import os
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from ....errors import CodecError, CorruptSectionError

ISOLATE_ENV = "DSTD_ISOLATE_DECODER"
ISOLATE_AV1_ENV = "DSTD_ISOLATE_AV1"
#: Seconds one decode may take before its helper is killed (SPERR decodes a 64x512x512 tile in
#: about 2 s on one core).
DECODE_TIME_LIMIT = 300.0
#: Address space a helper may use beyond what the decoded block needs.
HELPER_MEMORY_MARGIN = 2 << 30

#: Seconds a new helper may take to import numpy and SPERR.
HELPER_START_TIME_LIMIT = 60.0

_READY = b"R"
#: Decoders a request can name.
SPERR, AV1 = 0, 1
_DTYPES = {2: "<u2", 4: "<f4", 8: "<f8"}
_LENGTH = struct.Struct("<Q")
_SHAPE = struct.Struct("<III")
_MESSAGE = struct.Struct("<I")


def isolation_enabled() -> bool:
    """True unless switched off; helpers need POSIX pipes with ``select``, so elsewhere SPERR
    decodes in process."""
    if os.name != "posix":
        return False
    return os.environ.get(ISOLATE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def av1_isolation_enabled() -> bool:
    """True when AV1 streams from files should decode in the helpers too (off by default)."""
    return isolation_enabled() and os.environ.get(ISOLATE_AV1_ENV, "0").strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


class _Helper:
    """One helper process and its pipes."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        # Unbuffered: answers are read with select() + os.read(), which must see every byte
        # that has arrived (a buffered reader could hold it where select() cannot see it).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dstdformat.codecs.deepstd.base_layers.isolated"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        # The helper says it is ready once it has imported SPERR: a helper that cannot start (no
        # usable Python at sys.executable, a broken install) is a clear error here, not a
        # "corrupt section" later.
        try:
            ready = bytes(self._read(1, time.monotonic() + HELPER_START_TIME_LIMIT))
        except (EOFError, TimeoutError):
            ready = b""
        if ready != _READY:
            self.kill()
            raise CodecError(
                f"could not start the isolated SPERR decoder ({sys.executable} -m "
                f"dstdformat.codecs.deepstd.base_layers.isolated); set {ISOLATE_ENV}=0 to decode in this "
                "process (trusted files only)"
            )

    def decode(
        self,
        payload: bytes,
        expected: tuple[int, int, int],
        dtype: np.dtype,
        deadline: float,
        decoder: int = SPERR,
    ) -> np.ndarray | str:
        """The decoded block, or the helper's error message; raises EOFError if the helper died
        and TimeoutError past ``deadline``."""
        try:
            self._write(_LENGTH.pack(len(payload)) + bytes([dtype.itemsize, decoder]))
            self._write(payload)
        except (BrokenPipeError, OSError):
            raise EOFError("the helper is gone") from None
        status = self._read(1, deadline)[0]
        if status != 0:
            (length,) = _MESSAGE.unpack(self._read(_MESSAGE.size, deadline))
            return bytes(self._read(length, deadline)).decode("utf-8", "replace")
        shape = _SHAPE.unpack(self._read(_SHAPE.size, deadline))[::-1]
        if shape != expected:  # never allocate what the helper says without checking it
            raise EOFError(f"the helper answered a block of {shape}, not {expected}")
        out = np.empty(shape, dtype=dtype)
        self._read(out.nbytes, deadline, into=memoryview(out).cast("B"))
        return out

    def _write(self, data: bytes) -> None:
        """All of ``data`` (an unbuffered pipe may take it in several writes)."""
        assert self.process.stdin is not None
        view = memoryview(data)
        while view:
            written = self.process.stdin.write(view)
            if not written:
                raise BrokenPipeError("the helper takes no more input")
            view = view[written:]

    def _read(self, n: int, deadline: float, into: memoryview | None = None) -> memoryview:
        """Exactly ``n`` bytes from the helper, straight into ``into`` when given."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        out = into if into is not None else memoryview(bytearray(n))
        filled = 0
        while filled < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
            got = os.readv(fd, [out[filled:n]])
            if not got:
                raise EOFError("the helper closed its output")
            filled += got
        return out

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._close_pipes()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        """Both pipe ends, so that no ``ResourceWarning: unclosed file`` is left behind."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


class _Pool:
    """Idle helpers, shared by threads; a busy pool starts another helper rather than waiting."""

    def __init__(self) -> None:
        self._idle: list[_Helper] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def acquire(self) -> _Helper:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's helpers are not ours
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                helper = self._idle.pop()
                if helper.alive():
                    return helper
        return _Helper()

    def release(self, helper: _Helper) -> None:
        with self._lock:
            if len(self._idle) < (os.cpu_count() or 1) * 2:
                self._idle.append(helper)
                return
        helper.close()

    def close(self) -> None:
        with self._lock:
            helpers, self._idle = self._idle, []
        for helper in helpers:
            helper.close()


_pool = _Pool()
atexit.register(_pool.close)


def decode_isolated(
    payload: bytes,
    shape: tuple[int, int, int],
    what: str,
    time_limit: float = DECODE_TIME_LIMIT,
    dtype: np.dtype | type = np.float64,
    decoder: int = SPERR,
) -> np.ndarray:
    """Decode ``payload`` (a block of ``shape``) in a helper process, as ``dtype`` (SPERR:
    float64 or float32; AV1: uint16 samples); any failure is a CorruptSectionError."""
    dtype = np.dtype(dtype).newbyteorder("<")
    if dtype.str not in _DTYPES.values() or decoder not in (SPERR, AV1):
        raise ValueError(f"decoded blocks are float32, float64 or uint16, not {dtype}")
    helper = _pool.acquire()
    try:
        answer = helper.decode(bytes(payload), tuple(shape), dtype, time.monotonic() + time_limit, decoder)
    except TimeoutError:
        helper.kill()
        raise CorruptSectionError(
            f"{what} did not decode within {time_limit:.0f} s (the decoder was stopped)"
        ) from None
    except EOFError as exc:
        helper.kill()
        code = helper.process.returncode
        raise CorruptSectionError(
            f"{what} crashed the base-layer decoder (exit status {code}; {exc}): the section is "
            "corrupt although its checksum matches, so the file was written that way or altered "
            "deliberately"
        ) from None
    except BaseException:
        helper.kill()  # interrupted mid-answer: the pipe is out of step
        raise
    _pool.release(helper)
    if isinstance(answer, str):
        raise CorruptSectionError(f"{what} does not decode: {answer}")
    return answer


def _serve(decoders: dict[int, Callable[[bytes], np.ndarray]]) -> None:
    """The helper's loop: requests on stdin, answers on stdout, until stdin closes."""
    source = sys.stdin.buffer
    # Answers go to a private copy of stdout; anything a library prints goes to stderr instead.
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sink.write(_READY)
    sink.flush()
    while True:
        head = source.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        (length,) = _LENGTH.unpack(head)
        itemsize, decoder = source.read(2)
        payload = source.read(length)
        dtype = _DTYPES.get(itemsize, "<f8")
        try:
            decoded = decoders[decoder](payload)
            if decoded.ndim != 3:
                raise ValueError(f"decoded to {decoded.ndim} dimensions")
            # Out-of-range values would become infinities here; the caller refuses those.
            with np.errstate(over="ignore", invalid="ignore"):
                out = np.ascontiguousarray(decoded, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as a message
            message = f"{type(exc).__name__}: {exc}".encode()[:4096]
            sink.write(b"\x01" + _MESSAGE.pack(len(message)) + message)
        else:
            sink.write(b"\x00" + _SHAPE.pack(*out.shape[::-1]))
            sink.write(memoryview(out).cast("B"))
        sink.flush()


def _limit_memory() -> None:
    try:
        import resource

        limit = HELPER_MEMORY_MARGIN + 8 * 512**3 * 2  # two 512^3 float64 blocks
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass


if __name__ == "__main__":
    import imagecodecs

    _limit_memory()

    def _av1(payload: bytes) -> np.ndarray:
        from . import av1

        return av1.decode_coded(payload)

    _serve({SPERR: lambda payload: imagecodecs.sperr_decode(payload, numthreads=1), AV1: _av1})
