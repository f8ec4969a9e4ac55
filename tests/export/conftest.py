"""Twins and GGUF files shared by the export tests, built once per session.

Random tiny twins have nearly flat next-token distributions: their top two logits are often
within rounding noise of each other, so any 4-bit quantization flips many arg-maxes and says
nothing about the exporter. ``trained_twin`` fixes that the way real models do: a few dozen
optimizer steps on the built-in corpus give the twin real preferences (clear top-1 margins),
in about a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from siqkit.models.tiny import load_tiny, make_tiny
from siqkit.models.tokenizer import default_corpus

pytest.importorskip("llama_cpp")

VL_ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
"""Vision-language twins with an mmproj in llama.cpp."""


def train_briefly(hf_dir: Path, steps: int = 25, lr: float = 1e-2, seq: int = 64, batch: int = 8) -> Path:
    """A few AdamW steps of next-token training on the built-in corpus; saves the weights in place."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = load_tiny(hf_dir)
    ids = torch.tensor(tok(" ".join(default_corpus(400, seed=3)))["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=gen)
        x = torch.stack([ids[i : i + seq] for i in starts])
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval().save_pretrained(hf_dir)
    return hf_dir


def vl_twin(arch: str, out: Path, **kwargs) -> Path:
    """A vision-language twin (the twins already use llama.cpp's 112-pixel Qwen2.5-VL windows)."""
    return make_tiny(arch, out, **kwargs)


@pytest.fixture(scope="session")
def export_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def trained(export_root):
    """``trained(arch)`` -> a wide (hidden 256: one k-quant block per row) twin, briefly trained."""
    cache: dict[str, Path] = {}

    def _get(arch: str) -> Path:
        if arch not in cache:
            hf = make_tiny(arch, export_root / f"trained-{arch}", hidden=256, intermediate=512, seed=1)
            cache[arch] = train_briefly(hf)
        return cache[arch]

    return _get


@pytest.fixture(scope="session")
def vl_files(export_root):
    """``vl_files(arch)`` -> (HF folder, f16 GGUF, mmproj GGUF) of a vision-language twin."""
    from siqkit.export import write_gguf, write_mmproj

    cache: dict[str, tuple[Path, Path, Path]] = {}

    def _get(arch: str):
        if arch not in cache:
            hf = vl_twin(arch, export_root / f"vl-{arch}", hidden=128, intermediate=256, seed=1)
            cache[arch] = (hf, write_gguf(hf, export_root / f"vl-{arch}.f16.gguf", "f16"),
                           write_mmproj(hf, export_root / f"vl-{arch}.mmproj.gguf"))
        return cache[arch]

    return _get
