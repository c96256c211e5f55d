"""Helper processes that run native coders where a crash, a hang or a runaway allocation costs
only the helper: the parent sends a request over a pipe, waits under a deadline and kills the
helper when it dies, stalls or runs late.

Two roles use them: :mod:`.isolated` decodes streams from files (SPERR aborts the interpreter on
some forged streams) and :mod:`.bounded` encodes tiles (SVT-AV1 can wait for ever in its flush
on a loaded machine). Each role is a module whose ``__main__`` calls :func:`serve` with its
operations; :class:`Pool` keeps idle helpers of one role for reuse by any thread.

The pipe protocol is little-endian. A request is ``u8 op`` + ``u32 params length`` + ``u64
payload length`` + UTF-8 JSON params + payload. An answer is ``u8 status``: 0 is followed by
``u32 meta length`` + JSON meta + ``u64 data length`` + data, 1 by ``u32 length`` + UTF-8 message.
The parent reads the meta before the data, so it can check what it is about to allocate.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_READY = b"R"
_REQUEST = struct.Struct("<BIQ")
_META = struct.Struct("<I")
_DATA = struct.Struct("<Q")
_MESSAGE = struct.Struct("<I")
#: How often a waiting parent looks at the helper's CPU time.
_POLL_SECONDS = 0.5
#: A helper's error log is kept to its last this many bytes for messages.
_LOG_TAIL = 4096


class HelperTimeout(Exception):
    """The helper ran past its deadline or stopped using CPU; it has been killed."""

    def __init__(self, stalled: bool, seconds: float) -> None:
        self.stalled, self.seconds = stalled, seconds
        how = "used no CPU for" if stalled else "was still running after"
        super().__init__(f"{how} {seconds:.0f} s")


class HelperDied(Exception):
    """The helper exited (or broke the protocol) before answering; it has been killed."""


class HelperCannotStart(Exception):
    """No helper process could be started (no usable Python, a broken install)."""


@dataclass(frozen=True)
class Answer:
    """A helper's reply: its meta record and data, or the error message it reported."""

    meta: dict
    data: memoryview | None = None
    error: str | None = None
    #: What the helper printed while it served this request (with ``keep_log``).
    log: str = ""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of every thread of process ``pid`` (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Helper:
    """One helper process, its pipes and (optionally) a file that keeps what it prints."""

    def __init__(self, command: list[str], env: dict[str, str], start_limit: float, keep_log: bool) -> None:
        self.log = tempfile.TemporaryFile() if keep_log else None
        # Unbuffered: answers are read with select() + os.read(), which must see every byte
        # that has arrived (a buffered reader could hold it where select() cannot see it).
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log if self.log is not None else subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        try:
            ready = bytes(self._read(1, time.monotonic() + start_limit, stall=None))
        except (HelperDied, HelperTimeout):
            ready = b""
        if ready != _READY:
            self.kill()
            raise HelperCannotStart(" ".join(command))

    def call(
        self,
        op: int,
        params: dict,
        payload: bytes | memoryview,
        deadline: float,
        stall: float | None,
        receive: Callable[[dict, int], memoryview] | None = None,
    ) -> Answer:
        """Send one request and wait for its answer. ``receive(meta, length)`` gives the buffer
        the data goes into (it may raise to refuse what the meta announces); without it the data
        lands in a new buffer. Raises HelperDied or HelperTimeout (the helper is then unusable)."""
        encoded = json.dumps(params).encode()
        try:
            self._write(_REQUEST.pack(op, len(encoded), len(payload)) + encoded)
            self._write(payload)
        except OSError:
            raise HelperDied("the helper takes no more input") from None
        status = self._read(1, deadline, stall)[0]
        if status != 0:
            (length,) = _MESSAGE.unpack(self._read(_MESSAGE.size, deadline, stall))
            message = bytes(self._read(length, deadline, stall)).decode("utf-8", "replace")
            return Answer({}, error=message)
        (length,) = _META.unpack(self._read(_META.size, deadline, stall))
        try:
            meta = json.loads(bytes(self._read(length, deadline, stall)))
        except ValueError:
            raise HelperDied("the helper answered a malformed record") from None
        (size,) = _DATA.unpack(self._read(_DATA.size, deadline, stall))
        into = receive(meta, size) if receive is not None else None
        return Answer(meta, self._read(size, deadline, stall, into=into))

    def _write(self, data: bytes | memoryview) -> None:
        """All of ``data`` (an unbuffered pipe may take it in several writes)."""
        assert self.process.stdin is not None
        view = memoryview(data).cast("B")
        while view:
            written = self.process.stdin.write(view)
            if not written:
                raise BrokenPipeError("the helper takes no more input")
            view = view[written:]

    def _read(
        self, n: int, deadline: float, stall: float | None, into: memoryview | None = None
    ) -> memoryview:
        """Exactly ``n`` bytes from the helper. Raises HelperTimeout past ``deadline`` or once
        the helper has used no CPU for ``stall`` seconds (a wait that will never end)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        out = into if into is not None else memoryview(bytearray(n))
        filled, started = 0, time.monotonic()
        idle_since, last_cpu = started, cpu_seconds(self.process.pid)
        while filled < n:
            now = time.monotonic()
            if now >= deadline:
                raise HelperTimeout(False, now - started)
            if select.select([fd], [], [], min(deadline - now, _POLL_SECONDS))[0]:
                got = os.readv(fd, [out[filled:n]])
                if not got:
                    raise HelperDied("the helper closed its output")
                filled += got
                idle_since = time.monotonic()
                continue
            if stall is None:
                continue
            cpu = cpu_seconds(self.process.pid)
            if cpu is None or cpu != last_cpu:
                idle_since, last_cpu = time.monotonic(), cpu
            elif time.monotonic() - idle_since >= stall:
                raise HelperTimeout(True, time.monotonic() - idle_since)
        return out

    def log_tail(self, since: int = 0) -> str:
        """The end of what the helper printed after byte ``since`` of its log (empty without
        a log)."""
        if self.log is None:
            return ""
        try:
            size = os.fstat(self.log.fileno()).st_size
            start = max(since, size - _LOG_TAIL)
            return os.pread(self.log.fileno(), size - start, start).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def log_size(self) -> int:
        return os.fstat(self.log.fileno()).st_size if self.log is not None else 0

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
        self._close_files()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_files()

    def _close_files(self) -> None:
        """Pipes and log, so that no ``ResourceWarning: unclosed file`` is left behind."""
        for file in (self.process.stdin, self.process.stdout, self.log):
            if file is not None:
                try:
                    file.close()
                except OSError:
                    pass


class Pool:
    """Idle helpers of one role, shared by threads; a busy pool starts another helper rather
    than waiting. A forked child starts its own (the parent's pipes are not its to use)."""

    def __init__(
        self,
        arguments: list[str],
        env: dict[str, str] | None = None,
        start_limit: float = 60.0,
        keep_log: bool = False,
        max_log: int = 1 << 20,
    ) -> None:
        #: What follows the interpreter on a helper's command line (``["-m", module]``).
        self.arguments = list(arguments)
        self.env, self.start_limit, self.keep_log, self.max_log = env or {}, start_limit, keep_log, max_log
        self._idle: list[Helper] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def acquire(self) -> Helper:
        with self._lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                helper = self._idle.pop()
                if helper.alive():
                    return helper
        command = [sys.executable, *self.arguments]
        return Helper(command, dict(os.environ, **self.env), self.start_limit, self.keep_log)

    def release(self, helper: Helper) -> None:
        with self._lock:
            keep = len(self._idle) < (os.cpu_count() or 1) * 2 and helper.log_size() < self.max_log
            if keep and self._pid == os.getpid():
                self._idle.append(helper)
                return
        helper.close()

    def close(self) -> None:
        with self._lock:
            helpers, self._idle = self._idle, []
        for helper in helpers:
            helper.close()

    def call(
        self,
        op: int,
        params: dict,
        payload: bytes | memoryview,
        deadline: float,
        stall: float | None = None,
        receive: Callable[[dict, int], memoryview] | None = None,
    ) -> Answer:
        """One request on an idle (or new) helper. A helper that died, ran late or was
        interrupted is killed (with what it printed in the exception's ``log``); any other
        helper goes back to the pool."""
        helper = self.acquire()
        logged = helper.log_size()
        try:
            answer = helper.call(op, params, payload, deadline, stall, receive)
        except (HelperDied, HelperTimeout) as exc:
            helper.kill()
            if isinstance(exc, HelperDied):
                said = exc.args[0] if exc.args else "died"
                exc.args = (f"{said} (exit status {helper.process.returncode})",)
            exc.log = helper.log_tail(logged)  # type: ignore[attr-defined]
            raise
        except BaseException:
            helper.kill()  # interrupted mid-answer, or the data refused: the pipe is out of step
            raise
        if answer.error is not None and helper.log is not None:
            answer = Answer(answer.meta, answer.data, answer.error, helper.log_tail(logged))
        self.release(helper)
        return answer


Operation = Callable[[dict, bytes], tuple[dict, "bytes | memoryview"]]


def serve(operations: dict[int, Operation]) -> None:
    """The helper's loop: requests on stdin, answers on stdout, until stdin closes."""
    source = sys.stdin.buffer
    # Answers go to a private copy of stdout; anything a library prints goes to stderr instead.
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sink.write(_READY)
    sink.flush()
    while True:
        head = source.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return
        op, params_length, payload_length = _REQUEST.unpack(head)
        params = json.loads(source.read(params_length) or b"{}")
        payload = source.read(payload_length)
        try:
            meta, data = operations[op](params, payload)
        except Exception as exc:  # noqa: BLE001 - reported to the parent as a message
            message = f"{type(exc).__name__}: {exc}".encode()[:4096]
            sink.write(b"\x01" + _MESSAGE.pack(len(message)) + message)
        else:
            encoded = json.dumps(meta).encode()
            data = memoryview(data).cast("B")
            sink.write(b"\x00" + _META.pack(len(encoded)) + encoded + _DATA.pack(len(data)))
            sink.write(data)
        sink.flush()
