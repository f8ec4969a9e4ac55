"""LoRA merge into a full-precision base, shard by shard; the merged model equals peft's forward."""

from __future__ import annotations

import json

import pytest
import torch

from siqkit.export import MergeError, export_model, merge_lora
from siqkit.models.twins import load_tiny, make_tiny

peft = pytest.importorskip("peft")

IDS = torch.tensor([[5, 20, 33, 40, 100, 7, 300, 12]])


def _adapter(base, out, *, targets=("q_proj", "v_proj", "down_proj", "embed_tokens"), **extra):
    """A LoRA with random, non-zero A and B (a fresh LoRA has B = 0 and changes nothing)."""
    model = peft.get_peft_model(load_tiny(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(targets),
                                                                 lora_dropout=0.0, **extra))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(out)
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.mark.parametrize("arch,extra", [("qwen3", {}), ("qwen2_vl", {"use_rslora": True}), ("smolvlm", {})],
                         ids=["qwen3", "qwen2_vl-rslora", "smolvlm"])
def test_merged_model_equals_peft_forward(tmp_path, arch, extra):
    # qwen2_vl twins store weights as model.layers.* while peft names modules model.language_model.layers.*
    base = make_tiny(arch, tmp_path / "base", seed=1)
    ref = _adapter(base, tmp_path / "adapter", **extra)
    merged = merge_lora(base, tmp_path / "adapter", tmp_path / "merged")
    with torch.no_grad():
        got = load_tiny(merged).eval()(input_ids=IDS).logits
        plain = load_tiny(base).eval()(input_ids=IDS).logits
    assert (plain - ref).abs().max() > 0.1  # the adapter matters ...
    assert (got - ref).abs().max() < 1e-4  # ... and the merge reproduces it
    assert (merged / "tokenizer.json").is_file() and (merged / "config.json").is_file()
    info = json.loads((merged / "siqkit_merge.json").read_text())
    # q, v and down in each of 2 text layers, the embeddings, and SigLIP's q and v in 2 vision layers
    assert info["lora_modules"] == 2 * 3 + 1 + (4 if arch == "smolvlm" else 0)


def test_sharded_base_merges_shard_by_shard(tmp_path):
    base = make_tiny("qwen2", tmp_path / "base", seed=1)
    model = load_tiny(base)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "sharded" / name).write_bytes((base / name).read_bytes())
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 1
    ref = _adapter(tmp_path / "sharded", tmp_path / "adapter", targets=("q_proj", "o_proj"))
    merged = merge_lora(tmp_path / "sharded", tmp_path / "adapter", tmp_path / "merged", dtype="bfloat16")
    assert sorted(p.name for p in merged.glob("*.safetensors")) == shards
    with torch.no_grad():
        got = load_tiny(merged, dtype=torch.float32).eval()(input_ids=IDS).logits
    assert (got - ref).abs().max() < 0.05 * ref.std()  # bf16 storage


def test_refuses_4bit_base_and_unsupported_adapters(tmp_path):
    base = make_tiny("qwen3", tmp_path / "base", seed=1)
    _adapter(base, tmp_path / "adapter")
    four_bit = tmp_path / "four_bit"
    four_bit.mkdir()
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (four_bit / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MergeError, match="4-bit quantized checkpoint.*full-precision"):
        merge_lora(four_bit, tmp_path / "adapter", tmp_path / "out")

    acfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({**acfg, "use_dora": True}))
    with pytest.raises(MergeError, match="DoRA"):
        merge_lora(base, tmp_path / "adapter", tmp_path / "out")
    with pytest.raises(MergeError, match="not a PEFT adapter"):
        merge_lora(base, tmp_path, tmp_path / "out")

    other = make_tiny("qwen3", tmp_path / "other", seed=1, layers=1)  # the adapter's layer 1 has no home
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(acfg))
    with pytest.raises(MergeError, match="no matching base weight"):
        merge_lora(other, tmp_path / "adapter", tmp_path / "out")


def test_merged_student_exports(tmp_path):
    """The merge output is an ordinary checkpoint folder: export and verify take it as it is."""
    base = make_tiny("qwen3", tmp_path / "base", hidden=128, intermediate=256, seed=1)
    _adapter(base, tmp_path / "adapter")
    merged = merge_lora(base, tmp_path / "adapter", tmp_path / "merged")
    result = export_model(merged, tmp_path / "gguf" / "student.f16.gguf", "f16", n_greedy=8,
                          lineage={"recipe": "quickstart", "adapter": str(tmp_path / "adapter")})
    assert result["passed"] and result["files"][0]["verify"]["text"]["top1_decisive"] == 1.0
