"""Torch networks only: the refinement network, the scan-to-template deformation (affine + SIREN),
its dense warp and registration, and template arithmetic.

Nothing here knows about files, URLs or zarr: tensors and arrays in, tensors and arrays out. The
weights and templates that name these networks live in :mod:`dstdformat.zoo`; the loops that
train them in :mod:`dstdformat.training`.
"""
