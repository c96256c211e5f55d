"""Trained weights and templates by id: the ones shipped in ``shipped/`` and the ones users point
to (``DSTD_MODEL_PATH``, registered folders), checked by SHA-256 and read as safetensors."""
