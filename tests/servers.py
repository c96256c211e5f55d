"""Real servers on 127.0.0.1 for the remote-read tests: a range-capable HTTP server of our own (with
a mode that ignores Range, like some misconfigured servers), moto's S3 server, and faults: both
the HTTP server and a proxy in front of S3 can answer ranged GETs with errors, stall, cut the
response short or send fewer bytes than asked, one queued fault per request."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

#: What a queued fault does to one ranged GET: an HTTP error status, "stall" (answer nothing for
#: ``stall_seconds``), "cut" (announce the whole body, send half, close), "short" (announce and
#: send half the bytes, as a server that lost part of an object would).
FAULTS = ("500", "503", "429", "stall", "cut", "short")

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler(SimpleHTTPRequestHandler):
    """GET with single byte ranges (206), HEAD with the length; counts requests. Files named
    ``private*`` are refused with 403."""

    server: _Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        self.server.requests.append((self.command, self.headers.get("Range")))
        path = Path(self.server.root) / self.path.lstrip("/").split("?")[0]
        if path.name.startswith("private"):  # stands for an object the caller may not read
            self.send_error(403)
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if not head and self.headers.get("Range") and apply_fault(self, self.server, data):
            return
        match = _RANGE.match(self.headers.get("Range", "")) if not self.server.ignore_range else None
        status, body = 200, data
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = int(match.group(2)) + 1 if match.group(2) else len(data)
            else:  # suffix range: the last N bytes
                start, end = max(0, len(data) - int(match.group(2))), len(data)
            end = min(end, len(data))
            status, body = 206, data[start:end]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        if not self.server.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            for at in range(0, len(body), 1 << 16):  # counted, so tests see a client hang up
                try:
                    self.wfile.write(body[at : at + (1 << 16)])
                except (BrokenPipeError, ConnectionResetError):
                    return
                self.server.bytes_sent += len(body[at : at + (1 << 16)])


class _LoopbackServer(ThreadingHTTPServer):
    """A threaded server on a free 127.0.0.1 port with a queue of faults to inject."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", free_port()), handler)
        self.faults: deque[str] = deque()
        self.faults_done: list[str] = []
        self.stall_seconds = 3.0
        #: Body bytes the handlers managed to send.
        self.bytes_sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Server(_LoopbackServer):
    def __init__(self, root: Path, ignore_range: bool) -> None:
        super().__init__(_Handler)
        self.root, self.ignore_range = root, ignore_range
        self.requests: list[tuple[str, str | None]] = []


@contextmanager
def _serving(server: ThreadingHTTPServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def http_server(root: Path, ignore_range: bool = False):
    with _serving(_Server(root, ignore_range)) as server:
        yield server


@contextmanager
def s3_server():
    """moto's S3 on 127.0.0.1; yields (endpoint URL, storage options for s3fs)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
    try:
        yield endpoint, options
    finally:
        server.stop()


def apply_fault(handler: BaseHTTPRequestHandler, server, body: bytes) -> bool:
    """Answer with the next queued fault, if any; True when the request was answered."""
    try:
        fault = server.faults.popleft()
    except IndexError:
        return False
    server.faults_done.append(fault)
    if fault.isdigit():
        message = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
        handler.send_response(int(fault))
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(message)))
        handler.end_headers()
        handler.wfile.write(message)
        return True
    if fault == "stall":
        time.sleep(server.stall_seconds)
        handler.close_connection = True
        return True
    match = _RANGE.match(handler.headers.get("Range", ""))
    start, end = 0, len(body)
    if match and match.group(1):
        start = int(match.group(1))
        end = min(len(body), int(match.group(2)) + 1) if match.group(2) else len(body)
    elif match and match.group(2):
        start = max(0, len(body) - int(match.group(2)))
    part = body[start:end]
    half = part[: len(part) // 2]
    handler.send_response(206)
    handler.send_header("Content-Length", str(len(part) if fault == "cut" else len(half)))
    handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
    handler.end_headers()
    handler.wfile.write(half)
    handler.wfile.flush()
    handler.close_connection = True
    if fault == "cut":
        handler.connection.shutdown(socket.SHUT_RDWR)
    return True


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards every request to the upstream server; ranged GETs may get a fault instead."""

    server: _FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(
            self.server.upstream_host, self.server.upstream_port, timeout=30
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=payload, headers=headers)
        response = upstream.getresponse()
        body = response.read()
        upstream.close()
        if (
            self.command == "GET"
            and self.headers.get("Range")
            and self.server.faults
            and response.status in (200, 206)
        ):
            full = body
            content_range = response.getheader("Content-Range", "")
            total = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else len(body)
            first = int(content_range.split()[1].split("-")[0]) if content_range else 0
            # Rebuild the whole object's view so that apply_fault cuts the same range.
            padded = bytes(first) + full + bytes(max(0, total - first - len(full)))
            if apply_fault(self, self.server, padded):
                return
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815


class _FaultProxy(_LoopbackServer):
    def __init__(self, upstream: str) -> None:
        super().__init__(_ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port


@contextmanager
def fault_proxy(upstream: str):
    """A proxy on 127.0.0.1 in front of ``upstream`` (e.g. moto's S3) that injects faults."""
    with _serving(_FaultProxy(upstream)) as proxy:
        yield proxy
