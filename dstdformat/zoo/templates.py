"""Templates by id: content-addressed files (``template-<sha256>.safetensors``) in the model
folders, written atomically and checked against their id when read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import CodecError
from ..model.template import Template
from ..storage.writing import atomic_path
from .registry import DEFAULT_TEMPLATE, MODEL_PATH_ENV, file_sha256, search_folders


def save_template(template: Template, folder: Path) -> Path:
    """Write ``template-<sha256>.safetensors`` into ``folder`` (content-addressed)."""
    data = template.to_bytes()
    path = Path(folder) / f"template-{hashlib.sha256(data).hexdigest()}.safetensors"
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return path


def load_template(path: Path, sha256: str | None = None) -> Template:
    """The template in ``path``; with ``sha256``, refused unless the file has that digest."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise CodecError(f"template {path} has SHA-256 {digest}, not the {sha256} asked for")
    return Template.from_bytes(data, str(path))


def template_id_of(path: str | Path) -> str:
    """The id of a template file (its content address), without parsing it."""
    return f"template-{file_sha256(path)}"


def find_template(ref: str) -> Template:
    """A template by id (``template-<sha256>`` or ``default``: the shipped one) in the model
    folders (the package's and ``DSTD_MODEL_PATH``), or by path to its ``.safetensors`` file.
    Its SHA-256 is checked against the id."""
    if ref == "default":
        ref = DEFAULT_TEMPLATE
    if not isinstance(ref, str):
        raise CodecError(f"a template is named by a string, got {ref!r}")
    as_path = Path(ref)
    if as_path.suffix == ".safetensors":
        try:
            exists = as_path.is_file()
        except OSError:
            exists = False
        if not exists:
            raise CodecError(f"template file {ref[:200]} does not exist")
        return load_template(as_path)
    if not re.fullmatch(r"template-[0-9a-f]{64}", ref):
        raise CodecError(
            f"{ref[:100]!r} is not a template id (template-<sha256>), 'default' or a .safetensors path"
        )
    for folder in search_folders():
        candidate = folder / f"{ref}.safetensors"
        if candidate.is_file():
            return load_template(candidate, ref.removeprefix("template-"))
    raise CodecError(
        f"unknown template {ref!r}: not in the package's model folder nor in "
        f"{MODEL_PATH_ENV} (`dstd train --collection --out DIR` writes one into DIR)"
    )
