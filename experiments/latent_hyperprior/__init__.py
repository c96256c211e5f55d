"""Experimental latent-space texture codec (not part of the package): a hyperprior model
(``texture_model``), its entropy models, a fixed-point hyper-synthesis that is bit-identical on
every device, deterministic range coding of the latents (``coder``) and its training (``train``).

It lost to the wavelet and AV1 base layers (README.md here, docs/experiments.md) and no file
format section uses it; it is kept for the codec work that may build on it.
"""
