"""Whole CT collections in one archive: parallel on dask, with a catalog, resume, verify, restore.

``archive_collection(src, dest)`` stores every scan under ``src`` (NIfTI, HDF5, DICOM series;
local or any fsspec URL) in ``dest``; :func:`verify_archive` checks the stored files against the
catalog; :func:`restore_archive` writes them back as NIfTI; ``dstdformat.open_collection(dest)``
reads them lazily. The layout is described in :mod:`dstdformat.archive.layout`.
"""

from .layout import ArchiveLocation
from .restore import RestoreSummary, restore_archive
from .run import ArchiveSummary, archive_collection
from .verify import VerifyProblem, VerifySummary, verify_archive

__all__ = [
    "ArchiveLocation",
    "ArchiveSummary",
    "RestoreSummary",
    "VerifyProblem",
    "VerifySummary",
    "archive_collection",
    "restore_archive",
    "verify_archive",
]
