"""Codecs for other storage stacks: numcodecs (zarr v2 format) and zarr v3."""
