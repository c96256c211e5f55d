"""Experimental latent-space texture codec: a hyperprior model (``texture_model``), its entropy
models, a fixed-point hyper-synthesis that is bit-identical on every device, and deterministic
range coding of the latents (``coder``).

It lost to the wavelet and AV1 base layers (docs/experiments.md) and no file format section uses
it; it is kept, trained by ``dstd train`` (without ``--refiner``), for the codec work that may
build on it. The shipped codec imports nothing from here.
"""
