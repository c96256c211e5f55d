"""docs/training.md's examples run as written, in order, on the bundled CT."""

from __future__ import annotations

import re

import pytest
from helpers import REPO

pytest.importorskip("monai")
pytest.importorskip("torchio")


def test_the_training_page_examples_run(tmp_path, monkeypatch):
    page = (REPO / "docs" / "training.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/training.md", "exec"), namespace)  # noqa: S102 - our own page
    assert (tmp_path / "scans" / "ct.dstd").exists()
