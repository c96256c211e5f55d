"""The package's shape: rooms import downward (import-linter, in pyproject.toml) and no internal
module imports the user-facing facade (``dstdformat.open``/``save``), which import-linter cannot
express for a root package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dstdformat"


def _facade_imports(path: Path) -> list[str]:
    """Imports in ``path`` that resolve to the package root itself (not to one of its rooms)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = parts[:-1]  # a module's package; an __init__'s, the package itself
    rooms = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name == "dstdformat"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ((node.module,) if node.module else ()))
            else:
                target = node.module or ""
            if target == "dstdformat":
                found += [
                    f"from {'.' * node.level or 'dstdformat'} import {a.name}"
                    for a in node.names
                    if a.name not in rooms
                ]
    return found


def test_no_internal_module_imports_the_facade():
    offenders = {
        str(p.relative_to(PACKAGE.parent)): found
        for p in PACKAGE.rglob("*.py")
        if p != PACKAGE / "__init__.py" and (found := _facade_imports(p))
    }
    assert offenders == {}


def test_the_check_sees_a_facade_import(tmp_path, monkeypatch):
    module = PACKAGE / "tiling.py"
    text = module.read_text() + "\nfrom . import save\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text)
    assert _facade_imports(module) == ["from . import save"]


def test_import_layers_hold():
    """The same contracts CI checks with ``lint-imports``, so a local test run sees them too."""
    pytest.importorskip("importlinter.api")  # importing it also registers the config readers
    from importlinter.application.use_cases import lint_imports

    assert lint_imports(config_filename=str(PACKAGE.parent / "pyproject.toml")) is True
