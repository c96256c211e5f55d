"""Range coding of integer symbols with stored integer frequency tables (constriction).

Symbols are grouped by the table that codes them and coded table by table, so the decoder, which
knows every symbol's table index from the hyperprior, reads them back in the same order. The
probabilities come from integer tables only, so encoding and decoding agree bit for bit on any
machine.
"""

from __future__ import annotations

import numpy as np

from dstdformat.errors import stream_errors

from .entropy_models import CDF_PRECISION


def _models(freq_rows: np.ndarray, supports: np.ndarray):
    import constriction

    Categorical = constriction.stream.model.Categorical
    models = []
    for row, s in zip(freq_rows, supports):
        counts = row[: 2 * int(s) + 1].astype(np.float64)
        models.append(Categorical(counts / float(1 << CDF_PRECISION), perfect=False))
    return models


def encode_symbols(
    symbols: np.ndarray, table_index: np.ndarray, freq: np.ndarray, supports: np.ndarray
) -> tuple[bytes, np.ndarray]:
    """Code ``symbols`` (signed ints), each with table ``table_index``; returns the bytes and the
    symbols as actually coded (clipped to each table's support)."""
    import constriction

    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    table_index = np.asarray(table_index, dtype=np.int64).ravel()
    limit = supports[table_index]
    clipped = np.clip(symbols, -limit, limit)
    encoder = constriction.stream.queue.RangeEncoder()
    models = _models(freq, supports)
    for t in np.unique(table_index):
        chosen = clipped[table_index == t] + supports[t]
        encoder.encode(chosen.astype(np.int32), models[t])
    data = encoder.get_compressed()
    return data.astype("<u4").tobytes(), clipped


def decode_symbols(
    data: bytes, table_index: np.ndarray, freq: np.ndarray, supports: np.ndarray
) -> np.ndarray:
    """Inverse of :func:`encode_symbols` given the same table indices."""
    import constriction

    if len(data) % 4:
        raise ValueError("range-coded stream length is not a multiple of 4 bytes")
    table_index = np.asarray(table_index, dtype=np.int64)
    flat = table_index.ravel()
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    models = _models(freq, supports)
    out = np.empty(flat.shape, dtype=np.int64)
    with stream_errors("latent stream"):
        for t in np.unique(flat):
            where = flat == t
            out[where] = decoder.decode(models[t], int(where.sum())).astype(np.int64) - supports[t]
    return out.reshape(table_index.shape)
