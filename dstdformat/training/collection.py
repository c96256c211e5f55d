"""DeepSTD's three training steps over a collection, resumable step by step and scan by scan.

1. Reference: the affine medoid of the collection (:func:`template.select_reference`), stored as
   ``template-<sha256>.safetensors`` with ``reference.json``.
2. Alignment: every scan registered to the template (affine + cycle-consistent SIREN); its shape
   code (``aligned/<name>.shape``), fit figures (``aligned/<name>.json``) and its texture in the
   template frame (``aligned/<name>.dstd``, lossless). A scan far from the template (NCC after the
   affine below ``min_affine_ncc``) is recorded as texture-only and not aligned.
3. Texture: the refinement network trained on the aligned textures (``texture/``, the same
   resumable run as ``dstd train``).

Each step's outputs are written atomically, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..model.registration import RegistrationConfig, register
from ..model.template import Template, select_reference
from ..progress import bar, track
from ..zoo.templates import load_template, save_template


@dataclass
class CollectionTrainConfig:
    sources: list[str]
    out: str
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    #: Affine steps per pair when choosing the reference (every ordered pair is aligned once).
    reference_affine_steps: int = 100
    #: Scans whose NCC to the template after the affine stays below this are not aligned.
    min_affine_ncc: float = 0.5
    #: Settings of step 3 (RefinerTrainConfig fields other than sources/out).
    texture: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _hu(path: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    from ..io import read_scan

    scan = read_scan(path)
    hu = scan.array.astype(np.float32) * scan.metadata.slope + scan.metadata.intercept
    return hu, tuple(float(s) for s in scan.metadata.spacing)  # type: ignore[return-value]


def _write_json(path: Path, value: dict) -> None:
    from ..storage.writing import atomic_path

    with atomic_path(path) as temp:
        temp.write_text(json.dumps(value, indent=2) + "\n")


def choose_reference(config: CollectionTrainConfig, paths: Sequence[str], progress: bool) -> Template:
    """Step 1 (skipped when ``reference.json`` exists)."""
    out = Path(config.out)
    record = out / "reference.json"
    if record.exists():
        info = json.loads(record.read_text())
        return load_template(out / f"template-{info['sha256']}.safetensors", info["sha256"])
    volumes = [_hu(p) for p in track(paths, enabled=progress, desc="1/3 reading scans", unit="scan")]
    pairs = len(volumes) * (len(volumes) - 1)
    with bar(enabled=progress, desc="1/3 choosing the reference", total=pairs, unit="pair") as pbar:
        choice = select_reference(
            volumes, config.reference_affine_steps, progress=lambda done, total: pbar.update(1)
        )
    hu, spacing = volumes[choice.index]
    template = Template.from_scan(hu, spacing, source=Path(paths[choice.index]).name)
    save_template(template, out)
    _write_json(
        record,
        {
            "source": template.source,
            "sha256": template.sha256,
            "mean_affine_ncc": dict(zip((Path(p).name for p in paths), choice.mean_ncc)),
        },
    )
    return template


def align_scan(path: str, template: Template, config: CollectionTrainConfig) -> dict:
    """Step 2 for one scan: its record (also written to ``aligned/<name>.json``)."""
    from ..codecs.deepstd.shape.section import encode_shape, quantize_in_place
    from ..io.dstd_files import save
    from ..model.deformation import VolumeFrame
    from ..model.warp import CoarseField, inverse_field, resample, texture_frame

    out = Path(config.out) / "aligned"
    name = Path(path).name.removesuffix(".gz").removesuffix(".nii")
    hu, spacing = _hu(path)
    # Affine first: a scan far from the template is not worth the SIREN's 2,500 steps.
    affine_only = replace(config.registration, steps=0)
    first = register(hu, spacing, template.array, template.spacing, affine_only)
    record: dict = {"source": str(path), "ncc_start": first.ncc_start, "ncc_affine": first.ncc_affine}
    if first.ncc_affine < config.min_affine_ncc:
        record["texture_only"] = (
            f"far from the template: NCC {first.ncc_affine:.3f} after the "
            f"affine, below {config.min_affine_ncc}"
        )
        _write_json(out / f"{name}.json", record)
        return record
    fit = register(hu, spacing, template.array, template.spacing, config.registration, affine_from=first)
    deformation = fit.deformation
    quantize_in_place(deformation.forward_net)  # the texture is built with the decoder's map
    shape_code = encode_shape(deformation.affine.as_array(), deformation.forward_net)
    frame = VolumeFrame(hu.shape, spacing)  # type: ignore[arg-type]
    phi = CoarseField(deformation.to_template, frame)
    linear = deformation.affine.as_array()[:, :3]
    texture_at = texture_frame(phi, frame, linear)
    psi = inverse_field(phi, texture_at, deformation.to_scan, linear)
    texture = resample(torch.from_numpy(hu), frame, psi, texture_at, order=3)
    array = np.clip(np.rint(texture.numpy()), -32768, 32767).astype(np.int16)
    save(
        array,
        out / f"{name}.dstd",
        spacing=texture_at.spacing,
        attributes={"template_sha256": template.sha256, "frame_origin": texture_at.start.tolist()},
    )
    from ..storage.writing import atomic_path

    with atomic_path(out / f"{name}.shape") as temp:
        temp.write_bytes(shape_code)
    record.update(fit.summary())
    record.update(
        {
            "shape_bytes": len(shape_code),
            "texture_shape": list(texture_at.shape),
            "texture_origin": list(texture_at.start.tolist()),
        }
    )
    _write_json(out / f"{name}.json", record)  # last: its presence marks the scan done
    return record


def train_collection(
    config: CollectionTrainConfig, *, progress: bool = False, export: str | None = None
) -> dict:
    """Run (or resume) the three steps; returns a summary. ``export``: a model id to write the
    trained network under, into ``out`` beside the template (``DSTD_MODEL_PATH=out`` then finds
    both: ``model=<id>, shape=template-<sha256>``)."""
    from .data import training_paths
    from .refiner import RefinerTrainConfig, train_refiner

    out = Path(config.out)
    (out / "aligned").mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in training_paths(config.sources)]
    if len(paths) < 2:
        raise ValueError(f"a collection needs at least 2 scans, found {len(paths)} in {config.sources}")
    _write_json(out / "collection.json", config.to_json() | {"scans": paths})
    template = choose_reference(config, paths, progress)

    aligned, texture_only, resumed = [], [], 0
    for path in track(paths, enabled=progress, desc="2/3 aligning scans", unit="scan"):
        name = Path(path).name.removesuffix(".gz").removesuffix(".nii")
        done = out / "aligned" / f"{name}.json"
        if done.exists():
            record = json.loads(done.read_text())
            resumed += 1
        else:
            record = align_scan(path, template, config)
        if "texture_only" in record:
            texture_only.append(name)
        else:
            aligned.append(str(out / "aligned" / f"{name}.dstd"))

    history: dict = {}
    if aligned:
        from ..container.volume import open_volume as open_dstd

        texture = RefinerTrainConfig(sources=aligned, out=str(out / "texture"), **config.texture)
        volumes = [open_dstd(p).read().astype(np.float32) for p in aligned]
        history = train_refiner(texture, progress=progress, volumes=volumes)
        if export:
            from .refiner import export_model

            export_model(
                out / "texture",
                export,
                out,
                extra={
                    "template": template.id,
                    "collection": {
                        "reference": template.source,
                        "aligned": len(aligned),
                        "texture_only": texture_only,
                    },
                },
            )
    return {
        "reference": template.source,
        "template_sha256": template.sha256,
        "aligned": len(aligned),
        "texture_only": texture_only,
        "resumed_scans": resumed,
        "texture_training": history,
    }
