"""Byte access for the container: local files and anything fsspec speaks, as range reads.

This is the only package that talks to fsspec. Everything above it asks "read these byte ranges".
"""

from .sources import ByteSource, FsspecSource, IOStats, LocalFileSource, coalesce, open_source
from .writing import atomic_output

__all__ = [
    "ByteSource",
    "FsspecSource",
    "IOStats",
    "LocalFileSource",
    "atomic_output",
    "coalesce",
    "open_source",
]
