"""Shape coding: ``section`` (the shape section's bytes), ``field`` (the scan-to-template field and
the texture grid), ``fit`` (the encoder's registration), ``decode`` (the warp back).

Shape-coded deepstd files store the texture on a template-aligned grid and warp it back.

DeepSTD's decoupling: the encoder registers the scan to a reference template (affine + SIREN,
``model/registration.py``), stores the scan-to-template map ``phi`` as the shape section, resamples
the scan onto the *texture grid* (the box ``phi`` maps the scan into) and codes that texture with
the ordinary deepstd texture path. Decoding a voxel ``x`` reads the decoded texture at ``phi(x)``
with a local cubic kernel. Voxels far outside the window (padding, metal) stay exact on the scan's
own grid, whatever the warp does.

The encoder does not trust the warp blindly: a scan without spacing, far from the template
(affine NCC below :data:`MIN_AFFINE_NCC`), or whose texture grid would be much larger than the
scan is coded texture-only, with the reason in the header; under the ``"best"`` policy it also codes
the scan texture-only and keeps whichever decodes closer to the original at the same budget.
"""
