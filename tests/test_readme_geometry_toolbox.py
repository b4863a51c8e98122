"""The README's "Geometry toolbox" code block runs as written (hamjax.lorentz, optim, nn)."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python code block under {heading!r} in README.md"
    return match.group(1)


@pytest.fixture
def _float32_defaults():
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)  # as a reader's fresh session
    yield
    jax.config.update("jax_enable_x64", prev)


def test_geometry_toolbox_block_runs(_float32_defaults):
    code = _block("## Geometry toolbox")
    for name in ("lorentz", "optim", "nn as hnn", "riemannian_adam", "PoincareFC"):
        assert name in code, name
    namespace: dict = {}
    exec(compile(code, "README.md#geometry-toolbox", "exec"), namespace)  # its asserts check
    assert float(namespace["loss"]) < 2.302585  # it trained: below log(10) at the start
