"""Retrying storage requests that failed for reasons that pass: timeouts, dropped connections,
responses cut short, servers asking to slow down (HTTP 408/429/5xx).

Everything else (no such object, no permission, a server that ignores ranges) fails at once. No
retry can return wrong data: whatever comes back is still length-checked and, for sections,
checksum-verified.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ..errors import StorageError

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Exception classes, by name, of the HTTP and S3 clients fsspec uses, that mean "try again".
_TRANSIENT_NAMES = frozenset(
    {
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ClientConnectionError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerTimeoutError",
        "ConnectionTimeoutError",
        "SocketTimeoutError",
        "IncompleteRead",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ResponseStreamingError",
    }
)
_TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestTimeTooSkewed",
    }
)


class ShortReadError(StorageError):
    """A response ended before the bytes asked for (a dropped or cut connection)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How remote reads retry: ``attempts`` tries in all, waits growing from ``initial_delay`` by
    ``multiplier`` up to ``max_delay`` (each with up to ``jitter`` of itself added at random),
    and ``timeout`` seconds for one request (async filesystems: HTTP, S3, GCS, ...)."""

    attempts: int = 5
    initial_delay: float = 0.2
    multiplier: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.25
    timeout: float | None = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_delay < 0 or self.multiplier < 1 or self.max_delay < 0:
            raise ValueError(f"invalid retry policy {self}")

    def delays(self) -> Iterator[float]:
        """The waits between attempts (one fewer than ``attempts``)."""
        delay = self.initial_delay
        for _ in range(self.attempts - 1):
            yield min(self.max_delay, delay) * (1 + self.jitter * random.random())
            delay *= self.multiplier


NO_RETRY = RetryPolicy(attempts=1)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is worth another attempt."""
    for err in _chain(exc):
        if isinstance(err, (ShortReadError, TimeoutError, ConnectionError)):
            return True
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(err).__mro__):
            return True
        status = getattr(err, "status", None)
        if isinstance(status, int) and status in TRANSIENT_STATUS:
            return True
        response = getattr(err, "response", None)  # botocore's ClientError
        if isinstance(response, dict):
            error = response.get("Error", {})
            code = str(error.get("Code", ""))
            http = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if (
                code in _TRANSIENT_S3_CODES
                or http in TRANSIENT_STATUS
                or (code.isdigit() and int(code) in TRANSIENT_STATUS)
            ):
                return True
    return False


def call_with_retries(
    call: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``call()``, retried under ``policy`` while it fails transiently; the last error is raised
    with the number of attempts noted on it (``exc.attempts``)."""
    delays = policy.delays()
    attempt = 1
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                exc.attempts = attempt  # type: ignore[attr-defined]
                raise
            sleep(delay)
            attempt += 1
