"""Range-readable byte sources with I/O accounting."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..errors import FileMissingError, StorageError
from .filesystems import ProcessFilesystem
from .retry import RetryPolicy, ShortReadError, call_with_retries, is_transient

T = TypeVar("T")

ByteRange = tuple[int, int]  # half-open [start, end)

#: Ranges closer than this are fetched as one request and split locally.
DEFAULT_MAX_GAP = 64 * 1024


@dataclass
class IOStats:
    """What reads cost: bytes transferred and requests made (one per coalesced range)."""

    bytes_fetched: int = 0
    requests: int = 0

    def reset(self) -> None:
        self.bytes_fetched = 0
        self.requests = 0


class ByteSource(Protocol):
    size: int | None  # None until known: a remote source learns it from its first read
    stats: IOStats
    description: str

    def read_ranges(self, ranges: Sequence[ByteRange]) -> list[bytes]: ...

    def read_ends(self, length: int) -> tuple[bytes, bytes]: ...

    def close(self) -> None: ...


def coalesce(ranges: Sequence[ByteRange], max_gap: int = DEFAULT_MAX_GAP) -> list[ByteRange]:
    """Merge sorted-by-start ranges whose gaps are at most ``max_gap`` bytes."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def _split(ranges: Sequence[ByteRange], merged: Sequence[ByteRange], blobs: Sequence[bytes]) -> list[bytes]:
    out = []
    for start, end in ranges:
        for (m_start, m_end), blob in zip(merged, blobs):
            if m_start <= start and end <= m_end:
                out.append(blob[start - m_start : end - m_start])
                break
    return out


def check_lengths(description: str, merged: Sequence[ByteRange], blobs: Sequence[bytes]) -> list[bytes]:
    """``blobs`` if each has its range's length; a short one is a :class:`ShortReadError`
    (worth retrying), a long one means the server ignored the range."""
    for (start, end), blob in zip(merged, blobs):
        if len(blob) > end - start:
            raise StorageError(
                f"asked {description} for bytes {start}..{end} ({end - start} bytes) and got "
                f"{len(blob)}: the server ignores range requests"
            )
        if len(blob) < end - start:
            raise ShortReadError(
                f"asked {description} for bytes {start}..{end} ({end - start} bytes) and got "
                f"{len(blob)}: the response was cut short or the file shrank"
            )
    return list(blobs)


class _RangeReader:
    """Shared logic: bounds checks, coalescing, accounting, and length verification."""

    size: int | None
    description: str
    #: Keep a file that opening read whole (remote sources, where a request costs a round trip).
    keeps_small_files = False

    def __init__(self) -> None:
        self.stats = IOStats()
        self._lock = threading.Lock()
        #: The whole file when opening read all of it (a small file) and the source is remote:
        #: later reads are served from it, so a slice costs no second request.
        self._whole: bytes | None = None

    def read_ends(self, length: int) -> tuple[bytes, bytes]:
        """The first and the last ``length`` bytes (the whole file for both when it is shorter),
        fetched together: what opening a file needs."""
        assert self.size is not None
        if self.size <= 2 * length:
            whole = self.read_ranges([(0, self.size)])[0]
            if self.keeps_small_files:
                self._whole = whole
            return whole, whole[-length:] if length else b""
        head, tail = self.read_ranges([(0, length), (self.size - length, self.size)], max_gap=0)
        return head, tail

    def _ask_size(self) -> int:
        raise StorageError(f"the size of {self.description} is not known")

    def _account(self, blobs: Sequence[bytes]) -> None:
        with self._lock:
            self.stats.requests += len(blobs)
            self.stats.bytes_fetched += sum(len(b) for b in blobs)

    def _fetch(self, merged: Sequence[ByteRange]) -> list[bytes]:
        raise NotImplementedError

    def read_ranges(self, ranges: Sequence[ByteRange], max_gap: int = DEFAULT_MAX_GAP) -> list[bytes]:
        if self.size is None:
            self.size = self._ask_size()
        for start, end in ranges:
            if start < 0 or end < start or end > self.size:
                raise StorageError(f"range {start}..{end} is outside {self.description} ({self.size} bytes)")
        if not ranges:
            return []
        if self._whole is not None:
            return [self._whole[start:end] for start, end in ranges]
        merged = coalesce(ranges, max_gap)
        blobs = self._fetch_checked(merged)
        self._account(blobs)
        return _split(ranges, merged, blobs)

    def _fetch_checked(self, merged: Sequence[ByteRange]) -> list[bytes]:
        return check_lengths(self.description, merged, self._fetch(merged))


class LocalFileSource(_RangeReader):
    """A local file read with ``os.pread`` (thread-safe, no shared file position)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.description = str(self.path)
        if self.path.is_dir():
            raise StorageError(f"{self.path} is a directory, not a .dstd file")
        self._fd: int | None = None
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise FileMissingError(2, "No such file or directory", str(self.path)) from None
        self.size = os.fstat(self._fd).st_size

    def _fetch(self, merged: Sequence[ByteRange]) -> list[bytes]:
        out = []
        for start, end in merged:
            chunks, pos = [], start
            while pos < end:
                chunk = os.pread(self._fd, end - pos, pos)
                if not chunk:
                    break
                chunks.append(chunk)
                pos += len(chunk)
            out.append(b"".join(chunks))
        return out

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __reduce__(self) -> tuple:
        """Pickled as its path (reopened where it is unpickled: a dask worker on the same
        filesystem), not as a file descriptor and a lock."""
        return (LocalFileSource, (str(self.path),))


class FsspecSource(_RangeReader):
    """Any fsspec URL; several ranges go out as one concurrent ``cat_ranges`` call.

    Opening asks for no size: :meth:`read_ends` fetches the first bytes and a suffix range (the
    last N bytes) together, and the reader derives the file size from the footer, so a remote
    open is exactly two concurrent range requests.
    """

    keeps_small_files = True

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, retry: RetryPolicy | None = None
    ) -> None:
        super().__init__()
        self.description = url
        self.size = None
        self.retry = retry or RetryPolicy()
        self._storage_options = dict(storage_options or {})
        #: Requests that failed transiently and were made again.
        self.retries = 0
        with self._errors_named():
            self._filesystem = ProcessFilesystem(url, storage_options)
        self.path = self._filesystem.path
        self._pid = os.getpid()

    @property
    def fs(self) -> Any:
        """The filesystem, made again in a forked child (the parent's is not fork-safe)."""
        if self._pid != os.getpid():
            self._lock = threading.Lock()  # another thread may have held the parent's at fork
            self._pid = os.getpid()
            with self._errors_named():
                return self._filesystem.fs
        return self._filesystem.fs

    def _call(self, call: Callable[[], T]) -> T:
        """``call()`` under the retry policy, its final failure named for the user."""

        def counted() -> T:
            try:
                return call()
            except Exception as exc:
                if is_transient(exc):
                    with self._lock:
                        self.retries += 1
                raise

        with self._errors_named():
            return call_with_retries(counted, self.retry)

    def _cat_ranges(self, starts: list[int | None], ends: list[int | None]) -> list[bytes]:
        if _is_http(self.fs):
            return _http_ranges(self.fs, self.path, starts, ends, self.retry.timeout)
        kwargs: dict[str, Any] = {"on_error": "raise"}
        if getattr(self.fs, "async_impl", False) and self.retry.timeout:
            kwargs["timeout"] = self.retry.timeout  # fsspec's sync wrapper cancels the request
        blobs = self.fs.cat_ranges([self.path] * len(starts), starts, ends, **kwargs)
        for blob in blobs:
            if isinstance(blob, BaseException):
                raise blob
        return [bytes(b) for b in blobs]

    @contextmanager
    def _errors_named(self) -> Iterator[None]:
        url = self.description
        try:
            yield
        except ShortReadError as exc:
            raise StorageError(f"{exc} (after {getattr(exc, 'attempts', 1)} attempts)") from None
        except FileNotFoundError:
            # HTTP servers answer 403 and 404 alike through fsspec; say both.
            raise FileMissingError(
                f"no file at {url} (it does not exist, or the server refuses access)"
            ) from None
        except PermissionError as exc:
            raise StorageError(f"no permission to read {url}: {exc}") from None
        except StorageError:
            raise
        except (OSError, ValueError) as exc:
            raise StorageError(f"reading {url} failed{_after(exc)}: {exc}") from exc
        except Exception as exc:
            # HTTP clients raise their own errors with a status (fsspec maps only 404).
            status = getattr(exc, "status", None)
            if status in (401, 403):
                raise StorageError(f"no permission to read {url} (HTTP {status})") from None
            if status is not None:
                raise StorageError(f"reading {url} failed{_after(exc)}: HTTP {status} {exc}") from exc
            if is_transient(exc):
                raise StorageError(f"reading {url} failed{_after(exc)}: {type(exc).__name__} {exc}") from exc
            # Whatever else a filesystem raises still reaches the user as a library error.
            raise StorageError(f"reading {url} failed: {type(exc).__name__}: {exc}") from exc

    def read_ends(self, length: int) -> tuple[bytes, bytes]:
        if self.size is not None:
            return super().read_ends(length)
        try:
            head, tail = self._call(lambda: self._cat_ranges([0, -length], [length, None]))
        except (NotImplementedError, TypeError):
            # A filesystem without suffix ranges: ask for the size, then read both ends.
            self.size = self._ask_size()
            return super().read_ends(length)
        self._account([head, tail])
        if len(head) > length or len(tail) > length:
            raise StorageError(
                f"asked {self.description} for {length} bytes and got "
                f"{max(len(head), len(tail))}: the server ignores range requests"
            )
        if len(head) < length:  # the whole file fits in the probe
            if tail != head:
                raise StorageError(f"{self.description} changed while it was being opened")
            self.size = len(head)
            self._whole = head
        return head, tail

    def _ask_size(self) -> int:
        """One metadata request; only for reads that come before :meth:`read_ends`."""
        return int(self._call(lambda: self.fs.size(self.path)))

    def _fetch_checked(self, merged: Sequence[ByteRange]) -> list[bytes]:
        # The length check is inside the retried call: a response cut short is asked for again.
        return self._call(
            lambda: check_lengths(
                self.description, merged, self._cat_ranges([s for s, _ in merged], [e for _, e in merged])
            )
        )

    def close(self) -> None:
        pass

    def __reduce__(self) -> tuple:
        """Pickled as its URL, storage options and retry policy (reopened where unpickled)."""
        return (FsspecSource, (self.description, self._storage_options, self.retry))


class MemorySource(_RangeReader):
    """A whole ``.dstd`` stream held in memory (a zarr chunk, a message)."""

    def __init__(self, data: bytes | bytearray | memoryview, description: str = "in-memory .dstd") -> None:
        super().__init__()
        self._data = memoryview(data).cast("B")
        self.size = len(self._data)
        self.description = description

    def _fetch(self, merged: Sequence[ByteRange]) -> list[bytes]:
        return [bytes(self._data[start:end]) for start, end in merged]

    def close(self) -> None:
        pass

    def __reduce__(self) -> tuple:
        return (MemorySource, (bytes(self._data), self.description))


def local_path(
    path_or_url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> str | None:
    """The local filesystem path ``path_or_url`` names, or None when fsspec must handle it
    (a URL with a protocol, a chained URL, or storage options)."""
    text = os.fspath(path_or_url)
    if storage_options or "::" in text:
        return None
    if text.startswith("file://"):
        return text.removeprefix("file://")
    return None if "://" in text else text


def open_source(
    path_or_url: str | os.PathLike[str] | bytes | bytearray | memoryview,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> ByteSource:
    """Open a local path, fsspec URL or in-memory bytes for range reads; remote reads follow
    ``retry`` (default :class:`RetryPolicy`)."""
    if isinstance(path_or_url, (bytes, bytearray, memoryview)):
        return MemorySource(path_or_url)
    local = local_path(path_or_url, storage_options)
    if local is not None:
        return LocalFileSource(local)
    return FsspecSource(os.fspath(path_or_url), storage_options, retry)


def _after(exc: BaseException) -> str:
    attempts = getattr(exc, "attempts", None)
    return f" after {attempts} attempts" if attempts else ""


def _is_http(fs: Any) -> bool:
    try:
        from fsspec.implementations.http import HTTPFileSystem
    except ImportError:  # no aiohttp: not an HTTP filesystem either
        return False
    return isinstance(fs, HTTPFileSystem)


def _http_ranges(
    fs: Any, url: str, starts: list[int | None], ends: list[int | None], timeout: float | None
) -> list[bytes]:
    """Ranged GETs through fsspec's HTTP session, concurrently, each refused on its status line
    when the server answers with the whole file (200, not 206): fsspec would read that body, so a
    server that ignores Range would send the whole file once per range before being refused."""
    import asyncio

    from fsspec.asyn import sync

    async def one(start: int | None, end: int | None) -> bytes:
        if start == end:
            return b""
        options = fs.kwargs.copy()
        headers = options.pop("headers", {}).copy()
        headers["Range"] = await fs._process_limits(url, start, end)
        session = await fs.set_session()
        async with session.get(fs.encode_url(url), headers=headers, **options) as response:
            fs._raise_not_found_for_status(response, url)
            if response.status != 206:
                response.close()  # the body is never read
                raise StorageError(
                    f"{url} ignores range requests (it answered {response.status} with the whole "
                    "file to a ranged GET), so it cannot be read lazily: serve it from a server "
                    "that supports HTTP Range requests, or read a local copy (download it, or "
                    f"open 'simplecache::{url}')"
                )
            return await response.read()

    async def every() -> list[bytes]:
        return list(await asyncio.gather(*(one(a, b) for a, b in zip(starts, ends))))

    return sync(fs.loop, every, timeout=timeout)
