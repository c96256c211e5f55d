"""Format v1 container: header, sections, index, checksums. numpy only -- never imports torch.

Names are resolved lazily: importing one piece (say, the format constants) does not load the
reader, the writer and the codecs they use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMAT_MAJOR": ".format",
    "FORMAT_MINOR": ".format",
    "MAGIC": ".format",
    "SectionKind": "..tiling",
    "DstdReader": ".reader",
    "TileGrid": "..tiling",
    "Volume": ".volume",
    "open_volume": ".volume",
    "WriteResult": ".writer",
    "write_volume": ".writer",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


__all__ = sorted(_EXPORTS)
