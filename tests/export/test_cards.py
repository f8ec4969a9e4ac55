"""Hub-ready cards: the YAML header of the GGUF, merged-model and adapter cards, and the GGUF
card's llama-cpp-python snippet run as written, with the mmproj."""

from __future__ import annotations

import io
import re
import shutil

import yaml
from huggingface_hub import ModelCardData
from PIL import Image

from siqkit.export import export_model, merge_lora
from siqkit.export.cards import CARD_MARK, base_model_id, write_folder_card
from siqkit.models.twins import make_tiny

from tests.export.test_merge import _adapter

REPO_ID = "Qwen/Qwen2-VL-2B-Instruct"


def header(card: str) -> dict:
    assert card.startswith("---\n"), card[:80]
    meta = yaml.safe_load(card.split("---\n")[1])
    ModelCardData(**meta)  # the Hub's own card data class accepts it
    return meta


def in_hf_cache(model, root):
    """``model`` copied into huggingface_hub's cache layout, with the vendor's card (license)."""
    snap = root / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / "0123abcd"
    shutil.copytree(model, snap)
    (snap / "README.md").write_text("---\nlicense: apache-2.0\n---\n# the vendor's card\n")
    return snap


def test_base_model_is_a_repo_id_only_when_known(tmp_path):
    assert base_model_id(tmp_path / "hub" / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc") == "Qwen/Qwen3-0.6B"
    assert base_model_id("HuggingFaceTB/SmolVLM-256M-Instruct") == "HuggingFaceTB/SmolVLM-256M-Instruct"
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert base_model_id(tmp_path / "models" / "mine") is None
    assert base_model_id("runs/quickstart/train/stages/reason/merged") is None
    assert base_model_id(None) is None


def test_gguf_card_header_and_its_python_snippet_runs(vl_files, tmp_path, monkeypatch):
    hf, _, _ = vl_files("qwen2_vl")
    snap = in_hf_cache(hf, tmp_path / "hub")
    out = tmp_path / "release" / "student.q8_0.gguf"
    lineage = {"base_model": str(snap), "recipe": "recipes/quickstart.yaml",
               "train": {"reason": {"final_loss": 0.39479681161733776, "steps": 516}, "seconds": 712.25}}
    export_model(snap, out, "q8_0", mmproj=out.with_name("student.mmproj-f16.gguf"), verify=False, lineage=lineage)
    card = (out.parent / "README.md").read_text()
    meta = header(card)
    assert meta["base_model"] == REPO_ID and meta["base_model_relation"] == "quantized"
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "gguf"
    assert meta["pipeline_tag"] == "image-text-to-text" and "gguf" in meta["tags"]
    assert CARD_MARK in card and "# Qwen2-VL-2B-Instruct (GGUF)" in card  # named after the repo, not the snapshot
    lineage_rows = [x for x in card.splitlines() if x.startswith("| train |")]
    assert lineage_rows and "{" not in lineage_rows[0] and "reason.final_loss: 0.395" in lineage_rows[0]
    assert "0.39479681161733776" not in card
    assert "MTMDChatHandler" in card and "Do not use `Qwen25VLChatHandler`" in card
    assert "ollama create qwen2-vl-2b-instruct -f Modelfile" in card and "ollama run qwen2-vl-2b-instruct" in card
    # the card's llama-cpp-python snippet, as a user would run it in that folder
    snippet = next(s for s in re.findall(r"```python\n(.+?)```", card, re.S) if "MTMDChatHandler" in s)
    monkeypatch.chdir(out.parent)
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), (200, 30, 30)).save(buf, format="PNG")
    (out.parent / "photo.png").write_bytes(buf.getvalue())
    scope: dict = {}
    exec(snippet.replace("max_tokens=256", "max_tokens=8"), scope)  # noqa: S102
    assert scope["reply"]["usage"]["prompt_tokens"] > 4 + 4  # the image's tokens are in the prompt
    assert isinstance(scope["reply"]["choices"][0]["message"]["content"], str)


def test_adapter_and_merged_cards_replace_peft_template(tmp_path):
    base = in_hf_cache(make_tiny("qwen3", tmp_path / "base", seed=1), tmp_path / "hub")
    adapter = tmp_path / "adapter"
    _adapter(base, adapter)
    assert "# Model Card for Model ID" in (adapter / "README.md").read_text()  # peft's blank template
    write_folder_card(adapter, "adapter", base=base, title="reason adapter", facts={"stage": "reason", "steps": 516})
    card = (adapter / "README.md").read_text()
    meta = header(card)
    assert (meta["base_model"], meta["base_model_relation"], meta["library_name"]) == (REPO_ID, "adapter", "peft")
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "text-generation"
    assert {"lora", "gguf"} & set(meta["tags"]) == {"lora"}
    assert "Model Card for Model ID" not in card and "PeftModel.from_pretrained" in card and "| steps | 516 |" in card

    merged = merge_lora(base, adapter, tmp_path / "merged")
    card = (merged / "README.md").read_text()
    meta = header(card)
    assert (meta["base_model"], meta["base_model_relation"], meta["library_name"]) == (REPO_ID, "finetune",
                                                                                       "transformers")
    assert meta["license"] == "apache-2.0" and "the vendor's card" not in card

    # a card someone else wrote stays; a local base without a card: no base_model, license unknown
    (merged / "README.md").write_text("my notes\n")
    assert write_folder_card(merged, "merged", base=base, title="x") is None
    assert (merged / "README.md").read_text() == "my notes\n"
    local = make_tiny("qwen3", tmp_path / "local", seed=2)
    write_folder_card(local, "merged", base=None, title="built from scratch")
    meta = header((local / "README.md").read_text())
    assert "base_model" not in meta and meta["license"] == "unknown"
    assert "set `license`" in (local / "README.md").read_text()

