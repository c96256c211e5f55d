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

A request names the decoder (``decoder``: 0 SPERR, 1 AV1) and the dtype the voxels come back as
(``itemsize`` 4: float32, what the codec keeps, half the bytes to move; 8: float64, as SPERR
decodes; 2: uint16, AV1's samples); the answer's meta gives the block's shape, checked against
the tile before anything is allocated (the protocol itself: :mod:`.helpers`).

``DSTD_ISOLATE_DECODER=0`` decodes in process (trusted data only; a little faster on tiny tiles).
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable

import numpy as np

from ....errors import CodecError, CorruptSectionError
from . import helpers

ISOLATE_ENV = "DSTD_ISOLATE_DECODER"
ISOLATE_AV1_ENV = "DSTD_ISOLATE_AV1"
#: Seconds one decode may take before its helper is killed (SPERR decodes a 64x512x512 tile in
#: about 2 s on one core).
DECODE_TIME_LIMIT = 300.0
#: Address space a helper may use beyond what the decoded block needs.
HELPER_MEMORY_MARGIN = 2 << 30

#: Seconds a new helper may take to import numpy and SPERR.
HELPER_START_TIME_LIMIT = 60.0

#: Decoders a request can name.
SPERR, AV1 = 0, 1
_DECODE = 0
_DTYPES = {2: "<u2", 4: "<f4", 8: "<f8"}


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


_pool = helpers.Pool(
    ["-m", "dstdformat.codecs.deepstd.base_layers.isolated"],
    env={"OMP_NUM_THREADS": "1"},
    start_limit=HELPER_START_TIME_LIMIT,
)
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
    shape = tuple(int(s) for s in shape)

    def receive(meta: dict, length: int) -> memoryview:
        answered = tuple(meta.get("shape", ()))
        if answered != shape or length != int(np.prod(shape)) * dtype.itemsize:
            raise helpers.HelperDied(f"the helper answered a block of {answered}, not {shape}")
        out[0] = np.empty(shape, dtype=dtype)  # never allocate what the helper says unchecked
        return memoryview(out[0]).cast("B")

    out: list[np.ndarray] = [np.empty(0, dtype)]
    params = {"decoder": decoder, "itemsize": dtype.itemsize}
    try:
        answer = _pool.call(_DECODE, params, payload, time.monotonic() + time_limit, receive=receive)
    except helpers.HelperCannotStart as exc:
        raise CodecError(
            f"could not start the isolated SPERR decoder ({exc}); set {ISOLATE_ENV}=0 to decode "
            "in this process (trusted files only)"
        ) from None
    except helpers.HelperTimeout:
        raise CorruptSectionError(
            f"{what} did not decode within {time_limit:.0f} s (the decoder was stopped)"
        ) from None
    except helpers.HelperDied as exc:
        raise CorruptSectionError(
            f"{what} crashed the base-layer decoder ({exc}): the section is corrupt although its "
            "checksum matches, so the file was written that way or altered deliberately"
        ) from None
    if answer.error is not None:
        raise CorruptSectionError(f"{what} does not decode: {answer.error}")
    return out[0]


def _decode(decoders: dict[int, Callable[[bytes], np.ndarray]], params: dict, payload: bytes):
    """The helper's side of one request: the block and its shape."""
    decoded = decoders[int(params["decoder"])](payload)
    if decoded.ndim != 3:
        raise ValueError(f"decoded to {decoded.ndim} dimensions")
    # Out-of-range values would become infinities here; the caller refuses those.
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(decoded, dtype=_DTYPES.get(int(params["itemsize"]), "<f8"))
    return {"shape": list(out.shape)}, out


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

    decoders = {SPERR: lambda payload: imagecodecs.sperr_decode(payload, numthreads=1), AV1: _av1}
    helpers.serve({_DECODE: lambda params, payload: _decode(decoders, params, payload)})
