"""Real servers on 127.0.0.1 for the remote-read tests: a range-capable HTTP server of our own (with
a mode that ignores Range, like some misconfigured servers), and moto's S3 server."""

from __future__ import annotations

import re
import socket
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, ignore_range: bool) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.root, self.ignore_range = root, ignore_range
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def http_server(root: Path, ignore_range: bool = False):
    server = _Server(root, ignore_range)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
