"""The JSON header of a ``.dstd`` file: building it, packing it and validating what a file claims.

Format 1 stores the header as UTF-8 JSON. Format 2 stores the same object less what a reader can
derive (the format name and version, the fixed byte order, the sizes and ratios, which follow from
the index and the file size) as raw DEFLATE from a preset dictionary: a few hundred bytes instead
of ~2 KB, which is 6-20 % of a small scan at 256x and of every zarr chunk. Readers of either
version get the same complete object.

Validation is hand-written (no jsonschema at run time) so errors name the exact field; the JSON
Schema in ``spec/header.schema.json`` describes the same rules and the tests keep them in step.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from ..errors import CorruptHeaderError, InvalidInputError
from ..metadata import ScanMetadata
from ..tiling import MAX_TILE_VOXELS, TileGrid
from .format import FORMAT_MAJOR, FORMAT_MINOR, MAX_HEADER_LENGTH
from .header_dictionary import HEADER_DICTIONARY

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
        "stats": payload_stats(raw_nbytes, payload_nbytes),
        "original_sha256": original_sha256,
    }


#: Members of ``stats`` a format 2 header leaves out: readers derive them
#: (:func:`payload_stats`, :func:`file_stats`, :meth:`ParsedHeader.derive_sizes`).
DERIVED_STATS = ("raw_nbytes", "payload_nbytes", "payload_ratio", "file_nbytes", "file_ratio")


def payload_stats(raw_nbytes: int, payload_nbytes: int) -> dict[str, Any]:
    """The ``stats`` members that follow from the voxels' and the sections' sizes."""
    return {
        "raw_nbytes": raw_nbytes,
        "payload_nbytes": payload_nbytes,
        "payload_ratio": raw_nbytes / payload_nbytes if payload_nbytes else None,
    }


def file_stats(raw_nbytes: int, file_nbytes: int) -> dict[str, Any]:
    """The ``stats`` members that follow from the whole file's size."""
    return {"file_nbytes": file_nbytes, "file_ratio": round(raw_nbytes / file_nbytes, 4)}


def encode_header(header: dict[str, Any], major: int = FORMAT_MAJOR) -> bytes:
    """The header bytes a file of format ``major`` stores for the complete ``header``."""
    return pack_header(compact_header(header) if major >= 2 else header, major)


def compact_header(header: dict[str, Any]) -> dict[str, Any]:
    """``header`` less the members a format 2 reader derives."""
    out = {k: v for k, v in header.items() if k not in ("format", "format_version")}
    if isinstance(out.get("array"), dict):
        out["array"] = {k: v for k, v in out["array"].items() if k not in ("byte_order", "order")}
    if isinstance(out.get("stats"), dict):
        out["stats"] = {k: v for k, v in out["stats"].items() if k not in DERIVED_STATS}
    return out


def pack_header(header: dict[str, Any], major: int = FORMAT_MAJOR) -> bytes:
    """``header`` as stored: JSON (format 1), or JSON deflated from the preset dictionary (2)."""
    try:
        text = json.dumps(
            header, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata cannot be stored as JSON: {exc}") from None
    if major < 2:
        return text
    if len(text) > MAX_HEADER_LENGTH:
        raise InvalidInputError(
            f"header is {len(text)} bytes of JSON; the limit is {MAX_HEADER_LENGTH} (attributes too large?)"
        )
    return deflate_header(text)


def deflate_header(text: bytes) -> bytes:
    """JSON text as a format 2 header stores it: raw DEFLATE from the preset dictionary."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICTIONARY)
    return packer.compress(text) + packer.flush()


def inflate_header(data: bytes) -> bytes:
    """The JSON text of a format 2 header: ``data`` inflated from the preset dictionary, at most
    ``MAX_HEADER_LENGTH`` bytes of it, so that a small header cannot inflate without bound."""
    unpacker = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY)
    try:
        text = unpacker.decompress(data, MAX_HEADER_LENGTH)
    except zlib.error as exc:
        raise CorruptHeaderError(f"header does not inflate (a format 2 header is DEFLATE): {exc}") from None
    if unpacker.unconsumed_tail:
        raise CorruptHeaderError(f"header inflates to more than {MAX_HEADER_LENGTH} bytes")
    if not unpacker.eof or unpacker.unused_data:
        raise CorruptHeaderError("header's DEFLATE stream does not end where the header ends")
    return text


def unpack_header(data: bytes, major: int = FORMAT_MAJOR) -> Any:
    """The JSON value a file's header bytes hold, as stored."""
    if major >= 2:
        data = inflate_header(data)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CorruptHeaderError(f"header is not valid UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CorruptHeaderError(f"header is not valid JSON: {exc}") from None
    except RecursionError:
        raise CorruptHeaderError("header JSON is nested too deeply") from None


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
            raise CorruptHeaderError("array must be little-endian and C order")
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

    def derive_sizes(self, payload_nbytes: int, file_nbytes: int) -> None:
        """Fill in the sizes and ratios a format 2 header leaves to the reader, as a format 1
        writer records them."""
        recorded = self.raw.get("stats")
        recorded = recorded if isinstance(recorded, dict) else {}
        stats: dict[str, Any] = {
            **payload_stats(self.raw_nbytes, payload_nbytes),
            **{k: v for k, v in recorded.items() if k not in DERIVED_STATS},
            **file_stats(self.raw_nbytes, file_nbytes),
        }
        self.raw["stats"] = stats
        self.payload_nbytes = payload_nbytes


def parse_header(data: bytes, major: int, minor: int) -> ParsedHeader:
    """The validated header of a file of format ``major.minor``; a format 2 header gains the
    members it leaves out except the sizes (:meth:`ParsedHeader.derive_sizes` adds those)."""
    raw = unpack_header(data, major)
    if not isinstance(raw, dict):
        raise CorruptHeaderError("header JSON is not an object")
    if major >= 2:
        implied = {"format": "dstd", "format_version": [major, minor]}
        raw = {**implied, **{k: v for k, v in raw.items() if k not in implied}}
        array = raw.get("array")
        if isinstance(array, dict):
            raw["array"] = {**array, "byte_order": "little", "order": "C"}
    return ParsedHeader(raw)
