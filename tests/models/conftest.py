"""Tiny twins built once per test session and shared by every test that asks for one."""

from __future__ import annotations

import pytest

from siqkit.models.twins import cached_tiny


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model("qwen2_vl")`` -> folder of that twin, built on first use in this session."""
    root = tmp_path_factory.mktemp("tiny_twins")

    def _get(arch: str, **kwargs):
        return cached_tiny(arch, root, **kwargs)

    return _get
