"""The reference template: choosing it from a training collection, and its content address.

DeepSTD describes every scan by its deformation to one reference. The reference is the scan of the
collection that the others reach with the least deformation; as a proxy that needs no non-rigid
fit per pair, we take the scan with the highest mean NCC to all others after affine alignment
(the medoid under affine similarity). It is stored pooled to ``TEMPLATE_RESOLUTION_MM`` (registration runs
at a few millimetres anyway) as int16 HU, addressed by the SHA-256 of its safetensors file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .deformation import downsample
from .registration import RegistrationConfig, register

#: Spacing the stored template is pooled to: registration works at 3 mm, finer is dead weight
#: (the 1.4 x 1.4 x 2.5 mm lung reference is 4.7 MB at 2 mm, 1.2 MB at 3 mm).
TEMPLATE_RESOLUTION_MM = 3.0


@dataclass(frozen=True)
class Template:
    """A reference volume in HU with its voxel spacing (mm, axes k, j, i)."""

    array: np.ndarray  # int16 HU
    spacing: tuple[float, float, float]
    source: str = ""

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        # One metadata key only: safetensors writes a metadata map in no fixed order, and the
        # bytes must be the same every time for the SHA-256 to address the template.
        return save(
            {
                "hu": np.ascontiguousarray(self.array, dtype=np.int16),
                "spacing": np.asarray(self.spacing, dtype=np.float64),
            },
            metadata={"source": self.source},
        )

    @cached_property
    def sha256(self) -> str:
        """Of :meth:`to_bytes` (serialised once per template: the arrays never change)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Template:
        """The template in ``data`` (what :meth:`to_bytes` wrote); ``where`` names it in errors."""
        from safetensors.numpy import load

        from ..errors import CodecError

        try:
            header_length = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + header_length]).get("__metadata__") or {}
            tensors = load(data)
            array = tensors["hu"]
            spacing = tuple(float(s) for s in tensors["spacing"])
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad template file
            raise CodecError(f"{where} is not a template file: {exc}") from None
        if array.ndim != 3 or array.dtype != np.int16 or len(spacing) != 3:
            raise CodecError(f"{where} is not a template file (hu must be 3D int16)")
        return cls(array, spacing, meta.get("source", ""))  # type: ignore[arg-type]

    @property
    def id(self) -> str:
        """``template-<sha256>``: how files and codec settings name a template."""
        return f"template-{self.sha256}"

    @classmethod
    def from_scan(
        cls,
        hu: np.ndarray,
        spacing: Sequence[float],
        source: str = "",
        resolution_mm: float = TEMPLATE_RESOLUTION_MM,
    ) -> Template:
        pooled, pooled_spacing = downsample(
            torch.as_tensor(np.asarray(hu, dtype=np.float32)), spacing, resolution_mm, max_size=256
        )
        array = np.clip(np.rint(pooled.numpy()), -32768, 32767).astype(np.int16)
        return cls(array, pooled_spacing, source)


@dataclass
class ReferenceChoice:
    index: int  #: of the chosen scan in the collection
    mean_ncc: list[float]  #: per scan: mean NCC to the others after affine alignment


def select_reference(
    volumes: Sequence[tuple[np.ndarray, Sequence[float]]],
    affine_steps: int = 100,
    resolution_mm: float = 4.0,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceChoice:
    """The medoid under affine NCC: every ordered pair is aligned (affine only) once."""
    n = len(volumes)
    if n == 0:
        raise ValueError("no volumes to choose a reference from")
    scores = np.zeros((n, n))
    config = RegistrationConfig(affine_steps=affine_steps, steps=0, resolution_mm=resolution_mm)
    done = 0
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            fit = register(volumes[a][0], volumes[a][1], volumes[b][0], volumes[b][1], config)
            scores[a, b] = fit.ncc_affine
            done += 1
            if progress:
                progress(done, n * (n - 1))
    # Candidate b as reference: how well every other scan a aligns onto it.
    mean = [float(scores[:, b].sum() / max(n - 1, 1)) for b in range(n)]
    return ReferenceChoice(int(np.argmax(mean)), mean)
