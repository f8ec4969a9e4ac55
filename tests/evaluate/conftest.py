"""Tiny twins for evaluation tests, built once per session."""

from __future__ import annotations

import pytest

from siqkit.models.twins import cached_tiny


@pytest.fixture(scope="session")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_twins")
    return lambda arch, **kw: cached_tiny(arch, root, **kw)
