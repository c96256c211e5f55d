"""The learned texture codec's networks and entropy models (torch).

Nothing here knows about files, URLs or zarr: tensors in, tensors and integer symbols out.
"""
