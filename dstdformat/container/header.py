"""The JSON header of a ``.dstd`` file: building it and validating what a file claims.

Validation is hand-written (no jsonschema at run time) so errors name the exact field; the JSON
Schema in ``spec/header.schema.json`` describes the same rules and the tests keep them in step.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import CorruptHeaderError, InvalidInputError
from ..metadata import ScanMetadata
from ..tiling import MAX_TILE_VOXELS, TileGrid
from .format import FORMAT_MAJOR, FORMAT_MINOR

DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
#: A decoded volume larger than this (16 TiB) is refused before anything is allocated.
MAX_DECODED_BYTES = 1 << 44
MAX_DIM = 1 << 24
#: A file may not claim to decode to more than this many times its own size. The best real ratios
#: are orders of magnitude lower (lossless zeros: ~2,000:1); the cap keeps a small forged file
#: from making a reader allocate gigabytes.
MAX_DECLARED_RATIO = 1 << 20


def build_header(
    *,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    metadata: ScanMetadata,
    codec: dict[str, Any],
    grid: TileGrid,
    payload_nbytes: int,
    original_sha256: str,
    writer: str,
) -> dict[str, Any]:
    raw_nbytes = int(np.prod(shape)) * dtype.itemsize
    return {
        "format": "dstd",
        "format_version": [FORMAT_MAJOR, FORMAT_MINOR],
        "writer": writer,
        "array": {"shape": list(shape), "dtype": dtype.name, "byte_order": "little", "order": "C"},
        "metadata": metadata.to_json(),
        "codec": codec,
        "tiles": grid.to_json(),
        "stats": {
            "raw_nbytes": raw_nbytes,
            "payload_nbytes": payload_nbytes,
            "payload_ratio": raw_nbytes / payload_nbytes if payload_nbytes else None,
        },
        "original_sha256": original_sha256,
    }


def encode_header(header: dict[str, Any]) -> bytes:
    try:
        return json.dumps(
            header, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata cannot be stored as JSON: {exc}") from None


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise CorruptHeaderError(f"header is missing {where}{key}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise CorruptHeaderError(f"header field {where}{key} has the wrong type")
    return value


def _int_list(value: Any, where: str, length: int = 3) -> list[int]:
    if not (
        isinstance(value, list)
        and len(value) == length
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise CorruptHeaderError(f"header field {where} must be a list of {length} integers")
    return value


class ParsedHeader:
    """A validated header with the derived objects the reader needs."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        if _require(raw, "format", str, "") != "dstd":
            raise CorruptHeaderError("header field format is not 'dstd'")
        array = _require(raw, "array", dict, "")
        shape = _int_list(_require(array, "shape", list, "array."), "array.shape")
        if any(not 1 <= s <= MAX_DIM for s in shape):
            raise CorruptHeaderError(f"array.shape {shape} has a size outside 1..{MAX_DIM}")
        dtype_name = _require(array, "dtype", str, "array.")
        if dtype_name not in DTYPES:
            raise CorruptHeaderError(f"array.dtype {dtype_name!r} is not one of {DTYPES}")
        if array.get("byte_order", "little") != "little" or array.get("order", "C") != "C":
            raise CorruptHeaderError("array must be little-endian and C order in format v1")
        self.shape: tuple[int, int, int] = tuple(shape)  # type: ignore[assignment]
        self.dtype = np.dtype(dtype_name)
        if int(np.prod(shape, dtype=object)) * self.dtype.itemsize > MAX_DECODED_BYTES:
            raise CorruptHeaderError(f"array.shape {shape} declares an implausibly large volume")

        tiles = _require(raw, "tiles", dict, "")
        tile_shape = _int_list(_require(tiles, "tile_shape", list, "tiles."), "tiles.tile_shape")
        if any(t < 1 for t in tile_shape) or int(np.prod(tile_shape, dtype=object)) > MAX_TILE_VOXELS:
            raise CorruptHeaderError(
                f"tiles.tile_shape {tile_shape} is not positive or exceeds {MAX_TILE_VOXELS} voxels"
            )
        self.grid = TileGrid(self.shape, tuple(tile_shape))  # type: ignore[arg-type]
        if tiles.get("grid") != list(self.grid.grid):
            raise CorruptHeaderError(
                f"tiles.grid {tiles.get('grid')} does not match shape {shape} cut into "
                f"{tile_shape} tiles ({list(self.grid.grid)})"
            )

        codec = _require(raw, "codec", dict, "")
        self.codec_id: str = _require(codec, "id", str, "codec.")
        self.codec_version: int = _require(codec, "version", int, "codec.")
        self.codec_params: dict[str, Any] = _require(codec, "params", dict, "codec.")
        state = codec.get("state", {})
        if not isinstance(state, dict):
            raise CorruptHeaderError("header field codec.state must be an object")
        self.codec_state: dict[str, Any] = state
        self.model = codec.get("model")
        if self.model is not None and not (
            isinstance(self.model, dict)
            and isinstance(self.model.get("id"), str)
            and isinstance(self.model.get("sha256"), str)
            and _is_sha256(self.model["sha256"])
        ):
            raise CorruptHeaderError(
                "header field codec.model must be an object with a model id "
                "and the sha256 of its weights (64 hex digits)"
            )

        try:
            self.metadata = ScanMetadata.from_json(_require(raw, "metadata", dict, ""))
        except InvalidInputError as exc:
            raise CorruptHeaderError(f"header metadata is invalid: {exc}") from None

        stats = raw.get("stats", {})
        self.raw_nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.payload_nbytes = stats.get("payload_nbytes") if isinstance(stats, dict) else None
        index_crc = stats.get("index_crc32") if isinstance(stats, dict) else None
        if index_crc is not None and not (
            isinstance(index_crc, int) and not isinstance(index_crc, bool) and 0 <= index_crc <= 0xFFFFFFFF
        ):
            raise CorruptHeaderError("header field stats.index_crc32 must be a 32-bit unsigned integer")
        self.index_crc32: int | None = index_crc
        sha = raw.get("original_sha256")
        self.original_sha256: str | None = sha if isinstance(sha, str) else None


def parse_header(data: bytes) -> ParsedHeader:
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CorruptHeaderError(f"header is not valid UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CorruptHeaderError(f"header is not valid JSON: {exc}") from None
    except RecursionError:
        raise CorruptHeaderError("header JSON is nested too deeply") from None
    if not isinstance(raw, dict):
        raise CorruptHeaderError("header JSON is not an object")
    return ParsedHeader(raw)
