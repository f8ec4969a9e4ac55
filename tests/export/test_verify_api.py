"""verify_gguf summaries, the one-call export_model, and the command functions behind the CLI."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

import siqkit.export.api as api
from siqkit.export import GGUFExportError, export_model, verify_gguf, write_gguf
from siqkit.export.commands import export_command, verify_command
from siqkit.export.verify import VerifyError, summary_path
from siqkit.models.twins import make_tiny


def test_export_model_writes_everything(vl_files, export_root):
    hf, _, _ = vl_files("qwen2_vl")
    out = export_root / "release" / "student.q4_k_m.gguf"
    lineage = {"recipe": "quickstart", "data subset": "train/hard", "eval accuracy": 0.41}
    result = export_model(hf, out, "q4_k_m", mmproj=out.with_name("student.mmproj.gguf"), n_greedy=8,
                          lineage=lineage)
    folder = out.parent
    assert {p.name for p in folder.iterdir()} >= {
        "student.q4_k_m.gguf", "student.f16.gguf", "student.mmproj.gguf", "Modelfile", "README.md",
        "student.q4_k_m.gguf.export.json", "student.q4_k_m.gguf.verify.json", "student.f16.gguf.verify.json"}
    f16, q4 = result["files"]
    assert (f16["quant"], q4["quant"]) == ("f16", "q4_k_m")
    assert f16["verify"]["passed"] and f16["verify"]["image"]["next_top1"] == 1.0
    assert "image" in q4["verify"] and q4["tensor_types"].get("F32")  # a random twin's q4_k_m may miss its bar:
    assert result["passed"] == q4["verify"]["passed"]  # reported, not raised
    assert json.loads(out.with_name(out.name + ".export.json").read_text())["gguf"] == str(out)

    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./student.q4_k_m.gguf" in modelfile and "FROM ./student.mmproj.gguf" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "<|im_start|>assistant" in modelfile
    card = (folder / "README.md").read_text()
    assert "train/hard" in card and "quickstart" in card and "`student.f16.gguf` | f16" in card
    assert "llama-mtmd-cli" in card

    # a README that siqkit did not write is left alone
    (folder / "README.md").write_text("my notes\n")
    again = export_model(hf, out.with_name("student.f16.gguf"), "f16", verify=False)
    assert (folder / "README.md").read_text() == "my notes\n"
    assert again["card"].endswith("student.README.md")


def test_f16_mismatch_fails_loudly(tmp_path, monkeypatch):
    """An f16 that does not reproduce the model (here: another twin's weights) stops the export."""
    hf = make_tiny("qwen3", tmp_path / "hf", hidden=128, intermediate=256, seed=1)
    other = make_tiny("qwen3", tmp_path / "other", hidden=128, intermediate=256, seed=2)
    real_write = api.write_gguf
    monkeypatch.setattr(api, "write_gguf", lambda src, *a, **k: real_write(other, *a, **k))
    with pytest.raises(VerifyError, match="does not reproduce"):
        export_model(hf, tmp_path / "m.f16.gguf", "f16", n_greedy=8, card=False, modelfile=False)
    summary = json.loads(summary_path(tmp_path / "m.f16.gguf").read_text())
    assert not summary["passed"] and summary["text"]["top1"] < 0.5


def test_verify_summary_and_a_changed_model(tmp_path):
    hf = make_tiny("llama", tmp_path / "hf", hidden=128, intermediate=256, seed=1)
    path = write_gguf(hf, tmp_path / "m.gguf", "q8_0")
    s = verify_gguf(path, hf, n_greedy=8)
    assert s["quant"] == "q8_0" and s["passed"] and s["image"] is None
    assert json.loads(summary_path(path).read_text())["text"] == s["text"]
    weights = load_file(hf / "model.safetensors")
    weights["model.layers.0.mlp.down_proj.weight"] *= 5
    save_file(weights, hf / "model.safetensors", metadata={"format": "pt"})
    s = verify_gguf(path, hf, n_greedy=8, save=False)
    assert not s["passed"] and s["failures"]


def test_clear_errors_for_unsupported_models(tmp_path):
    llava = make_tiny("llava", tmp_path / "llava")
    with pytest.raises(GGUFExportError, match="supported: llama, qwen2, qwen3, qwen2_vl, qwen2_5_vl, qwen3_vl"):
        export_model(llava, tmp_path / "x.gguf", "f16")
    smol = make_tiny("smolvlm", tmp_path / "smol")
    with pytest.raises(GGUFExportError, match="cannot write an mmproj for model_type 'smolvlm'"):
        export_model(smol, tmp_path / "x.gguf", "f16", mmproj=tmp_path / "mm.gguf")
    with pytest.raises(ValueError, match="choose one of"):
        export_model(smol, tmp_path / "x.gguf", "q2_k")


def test_command_functions(tmp_path, capsys):
    hf = make_tiny("qwen2", tmp_path / "hf", hidden=128, intermediate=256, seed=1)
    result = export_command(hf, tmp_path / "out" / "m.q8_0.gguf", "q8_0")
    shown = capsys.readouterr().out
    assert "m.q8_0.gguf" in shown and "passed" in shown and result["passed"]
    summary = verify_command(tmp_path / "out" / "m.q8_0.gguf", hf, as_json=True, n_greedy=8)
    assert json.loads(capsys.readouterr().out)["passed"] == summary["passed"] is True
