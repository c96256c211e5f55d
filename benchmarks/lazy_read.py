"""Lazy slice reads from S3 (moto on 127.0.0.1, 20 ms added per request) against downloading the file.

    python benchmarks/lazy_read.py [SCAN.nii.gz] [--slices 275] [--latency-ms 20]

The default scan is the shared 512x512x141 chest, mirrored along the slice axis to ``--slices``
slices. For a lossless and a deepstd (256x) file it prints, in one run: bytes and requests of
opening and of reading the middle axial slice, and the time of that read against downloading and
decoding the whole file, as ratios. A small TCP proxy in front of moto delays every request by
``--latency-ms`` to mimic a cloud round trip.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import fsspec

import dstdformat
from dstdformat.io import read_scan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, mirror_slices  # noqa: E402


class LatencyProxy:
    """Forwards 127.0.0.1:port to a target, sleeping before each burst the client sends."""

    def __init__(self, target_port: int, latency_s: float) -> None:
        self.target_port, self.latency_s = target_port, latency_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, delay: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if delay:
                    time.sleep(self.latency_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.running = False
        self.listener.close()


def mirrored(path: Path, slices: int) -> dstdformat.Scan:
    scan = read_scan(path)
    return dstdformat.Scan(mirror_slices(scan.array, slices), scan.metadata)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scan", nargs="?", type=Path, default=SHARED / "itkelastix_chest_512.nii.gz")
    parser.add_argument("--slices", type=int, default=275)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    if not args.scan.exists():
        print(f"{args.scan} not found (pass a scan)", file=sys.stderr)
        return 1
    from servers import s3_server

    scan = mirrored(args.scan, args.slices)
    z = scan.array.shape[0] // 2
    print(f"volume {scan.array.shape}, middle slice {z}, {args.latency_ms:g} ms per request")
    with tempfile.TemporaryDirectory() as tmp, s3_server() as (endpoint, options):
        proxy = LatencyProxy(int(endpoint.rsplit(":", 1)[1]), args.latency_ms / 1000)
        options = {**options, "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{proxy.port}"}}
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir("bench")
        rows = []
        for label, codec, codec_options in (
            ("lossless", "lossless", {}),
            ("deepstd 256x", "deepstd", {"ratio": 256}),
        ):
            local = Path(tmp) / f"{codec}.dstd"
            dstdformat.save(scan, local, codec=codec, codec_options=codec_options)
            fs.put(str(local), f"bench/{codec}.dstd")
            url = f"s3://bench/{codec}.dstd"
            dstdformat.open(local)[z]  # load the model (deepstd) outside the timings
            start = time.perf_counter()
            volume = dstdformat.open(url, storage_options=options)
            opened = (volume.io_stats.bytes_fetched, volume.io_stats.requests)
            volume[z]
            lazy_s = time.perf_counter() - start
            read = (volume.io_stats.bytes_fetched - opened[0], volume.io_stats.requests - opened[1])
            start = time.perf_counter()
            blob = fs.cat_file(f"bench/{codec}.dstd")
            dstdformat.open(blob).read()
            whole_s = time.perf_counter() - start
            size = local.stat().st_size
            rows.append((label, size, opened, read, lazy_s, whole_s))
        proxy.close()
    print(
        "\n| file | size | open: bytes, requests | slice: bytes (share), requests | open + slice s "
        "| download + decode s | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, size, opened, read, lazy_s, whole_s in rows:
        print(
            f"| {label} | {size / 1e6:.2f} MB | {opened[0] / 1e3:.0f} KB, {opened[1]} | "
            f"{read[0] / 1e3:.0f} KB ({read[0] / size:.1%}), {read[1]} | {lazy_s:.2f} | "
            f"{whole_s:.2f} | {whole_s / lazy_s:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
