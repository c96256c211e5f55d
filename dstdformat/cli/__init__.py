"""The ``dstd`` command line."""
