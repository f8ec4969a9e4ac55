"""Twins and GGUF files shared by the export tests, built once per session.

Random tiny twins have nearly flat next-token distributions: their top two logits are often
within rounding noise of each other, so any quantization flips arg-maxes and a greedy path
meets a near-tie every few tokens; that says nothing about the exporter. The parity twins
are made confident the way a real model is, by training: :func:`train_twin` runs 150 AdamW
steps (warm-up, then cosine decay) on a 16-line passage of the built-in corpus
(:func:`parity_text`) until the twin knows it by heart. On that passage nearly every position
then has a clear top-1 and greedy decoding recites the passage. Measured over three seeds:
at most 0.7% of the positions of the parity prompts and their continuations lead by less than
0.03 logit standard deviations (about q8_0's median logit error), and the smallest top-1 lead
on any 40-token greedy path is 0.1 std (f16 moves these logits by at most 0.015 std). Twins
trained 25 steps on random 64-token windows of the whole corpus have 3-25% such near-ties and
greedy leads down to 0.001 std.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from siqkit.models.twins import load_tiny, make_tiny
from siqkit.models.tokenizer import default_corpus

pytest.importorskip("llama_cpp")

VL_ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
"""Vision-language twins with an mmproj in llama.cpp."""

PARITY_ARCHS = ("llama", "qwen2", "qwen3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "smolvlm")
"""Every architecture the GGUF writer supports (for vision-language models: the text side)."""

LANGUAGE_MODEL_OF = {"qwen2_vl": "qwen2", "qwen2_5_vl": "qwen2", "qwen3_vl": "qwen3", "smolvlm": "llama"}
"""Vision-language twins built on a trained text twin, as the real ones are built on an LLM
(Qwen2, Qwen3, SmolLM2: a Llama). Their language models hold the text twin's tensors under
other names; without images M-RoPE is plain RoPE, so on text their Hugging Face logits are the
text twin's exactly (checked in test_parity.py)."""

WIDE_FAMILIES = ("qwen3",)
"""Families whose parity twins are wide (hidden 256: whole 256-value k-quant blocks per row, for
the k-quant checks in test_quantize.py); the others are hidden 128."""

PARITY_OPTIONS = {"qwen3": {"rope_theta": 5e6}, "llama": {"rope_theta": 1e5}, "smolvlm": {"tokenizer_style": "llama"}}
"""So that a vision-language twin can take its text twin's language model: the qwen3 and llama
twins have Qwen3-VL's and SmolVLM's rope bases, the smolvlm twin the llama twin's tokenizer."""

PARITY_LINES = 16
PARITY_PROMPT_LINES = 4
PARITY_GREEDY = 40
"""Greedy tokens compared per prompt (the acceptance asks for at least 32)."""


def parity_text() -> list[str]:
    """The passage the parity twins are trained on and checked on (16 corpus lines, ~440 tokens)."""
    return default_corpus(PARITY_LINES, seed=3)


def parity_prompts() -> list[str]:
    """Three 4-line prompts (lines 0-11); their greedy continuations recite the following line or two."""
    lines, n = parity_text(), PARITY_PROMPT_LINES
    return [" ".join(lines[k : k + n]) for k in range(0, len(lines) - n, n)]


def train_twin(hf_dir: Path, steps: int = 150, lr: float = 3e-3, warmup: int = 10, seq: int = 128,
               batch: int = 4) -> Path:
    """AdamW next-token training on :func:`parity_text` (warm-up, cosine decay); saves in place.

    The 128-token windows are about as long as a parity prompt (~110 tokens), so the twin
    learns the passage in contexts as long as those it is checked in (trained on 64-token
    windows, the twins stayed unsure in longer contexts).
    """
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = load_tiny(hf_dir)
    ids = torch.tensor(tok(" ".join(parity_text()))["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=gen)
        x = torch.stack([ids[i : i + seq] for i in starts])
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    model.eval().save_pretrained(hf_dir)
    return hf_dir


def with_language_model(vl_dir: Path, text_dir: Path) -> Path:
    """Give the vision-language twin ``vl_dir`` the language model of the text twin ``text_dir``.

    Tensors go over by name (under the VL model's text-model prefix), embedding and output
    rows by token, so that tokens only the VL twin has (image markers) keep their own rows.
    """
    from transformers import AutoTokenizer

    assert rope_theta(vl_dir) == rope_theta(text_dir), "the language models differ in their rope base"
    vocab, text_vocab = (AutoTokenizer.from_pretrained(d).get_vocab() for d in (vl_dir, text_dir))
    assert set(text_vocab) <= set(vocab), "the vision-language twin lacks tokens of the text twin"
    rows = torch.tensor([vocab[t] for t in text_vocab]), torch.tensor(list(text_vocab.values()))
    text, vl = load_file(text_dir / "model.safetensors"), load_file(vl_dir / "model.safetensors")
    for name, tensor in text.items():
        target = next(t for t in (name, name.replace("model.", "model.language_model.", 1),
                                  name.replace("model.", "model.text_model.", 1)) if t in vl)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            vl[target][rows[0]] = tensor[rows[1]]
        else:
            assert vl[target].shape == tensor.shape, name
            vl[target] = tensor
    save_file(vl, vl_dir / "model.safetensors", metadata={"format": "pt"})
    return vl_dir


def rope_theta(hf_dir: Path) -> float:
    cfg = json.loads((hf_dir / "config.json").read_text())
    return (cfg.get("text_config") or cfg)["rope_parameters"]["rope_theta"]


def figures(text: dict) -> str:
    """One line of a summary's text figures, for assertion messages."""
    return (f"top-1 {text['top1']:.4f} over {text['positions']} positions "
            f"({text['top1_decisive']:.4f} over the {text['decisive_positions']} decisive ones); greedy: "
            f"first {text['greedy_prefix_min']} of {text['greedy_tokens']} tokens agree on every prompt, "
            f"smallest lead on the paths {text['greedy_lead_min']:.3f} std")


def vl_twin(arch: str, out: Path, **kwargs) -> Path:
    """A vision-language twin (the twins already use llama.cpp's 112-pixel Qwen2.5-VL windows)."""
    return make_tiny(arch, out, **kwargs)


@pytest.fixture(scope="session")
def export_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def trained(export_root):
    """``trained(arch)`` -> the parity twin of ``arch``, which knows :func:`parity_text` by heart."""
    cache: dict[str, Path] = {}

    def _get(arch: str) -> Path:
        if arch not in cache:
            family = LANGUAGE_MODEL_OF.get(arch, arch)
            dims = {"hidden": 256 if family in WIDE_FAMILIES else 128, "intermediate": 256, "seed": 1}
            out = export_root / f"trained-{arch}"
            options = {**dims, **PARITY_OPTIONS.get(arch, {})}
            if arch in LANGUAGE_MODEL_OF:
                cache[arch] = with_language_model(vl_twin(arch, out, **options), _get(family))
            else:
                cache[arch] = train_twin(make_tiny(arch, out, **options))
        return cache[arch]

    return _get


@pytest.fixture(scope="session")
def parity(trained, export_root):
    """``parity(arch, quant)`` -> the ``verify_gguf`` summary of a parity twin's GGUF in ``quant``.

    ``parity.path(arch, quant)`` is the file (k-quants made from the f16 by llama.cpp's
    quantizer); every quant of a twin is checked against one Hugging Face run of
    :func:`parity_prompts` (raw text, 40 greedy tokens each).
    """
    from siqkit.export import quantize_gguf, verify_gguf, write_gguf
    from siqkit.export.verify import HFReference

    files: dict[tuple[str, str], Path] = {}
    refs: dict[str, HFReference] = {}
    summaries: dict[tuple[str, str], dict] = {}

    def path(arch: str, quant: str) -> Path:
        if (arch, quant) not in files:
            out = export_root / f"parity-{arch}.{quant}.gguf"
            if quant in ("f32", "f16", "q8_0"):
                files[arch, quant] = write_gguf(trained(arch), out, quant)
            else:
                files[arch, quant] = quantize_gguf(path(arch, "f16"), out, quant)
        return files[arch, quant]

    def _get(arch: str, quant: str) -> dict:
        if (arch, quant) not in summaries:
            if arch not in refs:
                refs[arch] = HFReference(trained(arch), n_greedy=PARITY_GREEDY)
            summaries[arch, quant] = verify_gguf(path(arch, quant), trained(arch), prompts=parity_prompts(),
                                                 chat=False, reference=refs[arch], save=False)
        return summaries[arch, quant]

    _get.path = path
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
