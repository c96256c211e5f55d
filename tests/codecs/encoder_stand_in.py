"""A stand-in encoding helper for tests: the real helper's protocol and encoders, with a planted
fault. Run as ``python encoder_stand_in.py MODE MARKER``:

- ``hang``: every request blocks for ever without using CPU (SVT-AV1's lost flush);
- ``spin``: every request spins on the CPU for ever (a livelock: only the deadline ends it);
- ``fail-once`` / ``die-once``: the first request (the first helper to create MARKER) reports the
  short-stream failure / exits, every later one encodes for real;
- ``fail``: every request reports the short-stream failure.
"""

from __future__ import annotations

import os
import sys
import time

from dstdformat.codecs.deepstd.base_layers import bounded, helpers


def _first_time(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def main(mode: str, marker: str) -> None:
    def operation(op: int):
        def run(params: dict, payload: bytes):
            if mode == "hang":
                while True:
                    time.sleep(3600)
            if mode == "spin":
                while True:
                    pass
            if mode == "fail" or (mode == "fail-once" and _first_time(marker)):
                print("Svt[error]: bug, no frame in undisplayed queue", file=sys.stderr, flush=True)
                raise RuntimeError("the AV1 encoder wrote 53 packets for 56 frames")
            if mode == "die-once" and _first_time(marker):
                os._exit(3)
            return bounded._encode_here(op, params, payload)

        return run

    helpers.serve({op: operation(op) for op in (bounded._AV1, bounded._SPERR_RATE, bounded._SPERR_BOUND)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
