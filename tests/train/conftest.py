"""Fixtures for training tests: tiny twins (built once per session) and traces folders."""

from __future__ import annotations

import pytest
import torch

from siqkit.models.twins import cached_tiny
from tests.train.traces import write_traces


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The tiny models gain nothing from threads, and the machine is shared.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def twin(tmp_path_factory):
    """``twin("qwen2_vl")`` -> folder of that tiny twin, built on first use in this session."""
    root = tmp_path_factory.mktemp("train_twins")

    def _get(arch: str, **kwargs):
        return cached_tiny(arch, root, **kwargs)

    return _get


@pytest.fixture(scope="session")
def traces(tmp_path_factory):
    """A 12-row traces folder with images, captions and all three difficulties."""
    return write_traces(tmp_path_factory.mktemp("traces"), 12)
