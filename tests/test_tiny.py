"""``siqkit run --tiny``: real-model recipes smoke-tested on tiny twins, with checkpoint paths unset."""

from __future__ import annotations

import json

import duckdb
import yaml

RECIPE = {
    "run": {"name": "realistic"},
    "seeds": {"sources": [
        {"name": "easy_vqa", "type": "easy_vqa"},
        {"name": "text", "type": "jsonl", "path": "text.jsonl"},
    ]},
    "teachers": [
        {"name": "thinker", "backend": "transformers", "arch": "qwen2_vl", "path": "${SIQ_TEST_THINKER_PATH}",
         "route": {"sources": ["easy_vqa"], "splits": ["train"]}, "batch_size": 8},
        {"name": "gguf", "backend": "llama_cpp", "arch": "qwen3", "path": "${SIQ_TEST_MODELS}/t.gguf",
         "route": {"question_regex": "plus"}},
        {"name": "gguf_vl", "backend": "llama_cpp", "arch": "qwen2_5_vl", "path": "${SIQ_TEST_MODELS}/vl.gguf",
         "mmproj": "${SIQ_TEST_MODELS}/mmproj.gguf", "route": {"sources": ["easy_vqa"], "splits": ["test"]}},
        {"name": "server", "backend": "openai", "arch": "llama", "model": "big",
         "endpoints": [{"url": "${SIQ_TEST_SERVER_URL}"}]},
    ],
}


def write(tmp_path, recipe=RECIPE):
    (tmp_path / "text.jsonl").write_text("".join(
        json.dumps({"question": q, "answer": a}) + "\n"
        for q, a in [("What is 2 plus 2?", "4"), ("Name a colour.", "red"), ("What is 3 plus 4?", "7")]))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return "r.yaml"


def test_without_tiny_an_unset_checkpoint_is_a_clear_error(cli, tmp_path):
    res = cli("run", write(tmp_path))
    assert res.returncode == 2
    assert "teachers[0].path: environment variable SIQ_TEST_THINKER_PATH is not set" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_tiny_needs_an_arch_when_there_is_no_checkpoint(cli, tmp_path):
    recipe = json.loads(json.dumps(RECIPE))
    del recipe["teachers"][0]["arch"]
    res = cli("check", write(tmp_path, recipe), "--tiny")
    assert res.returncode == 2 and "teachers[0].arch: --tiny needs the architecture of 'thinker'" in res.stderr


def test_tiny_run_replaces_every_model_with_a_twin_and_caps_the_data(cli, tmp_path):
    res = cli("run", write(tmp_path), "--tiny", "--set", "tiny.max_seeds=6", "--set", "tiny.max_new_tokens=12")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "realistic-tiny"
    con = duckdb.connect(str(run / "store.duckdb"), read_only=True)
    try:
        seeds = dict(con.execute("SELECT source || '/' || split, count(*) FROM seeds WHERE selected GROUP BY 1").fetchall())
        assert seeds == {"easy_vqa/train": 6, "easy_vqa/test": 6, "text/train": 3}
        gens = con.execute("SELECT teacher, count(*), any_value(teacher_identity), max(completion_tokens) "
                           "FROM generations GROUP BY teacher ORDER BY teacher").fetchall()
        by = {g[0]: g for g in gens}
        assert by["thinker"][1] == 6 and by["gguf_vl"][1] == 6 and by["gguf"][1] == 2 and by["server"][1] == 1
        assert json.loads(by["thinker"][2])["model"] == str(run / "tiny" / "thinker")
        assert json.loads(by["gguf"][2])["model"].endswith("qwen3-f16.gguf")
        assert json.loads(by["gguf_vl"][2])["mmproj"].endswith("mmproj-f16.gguf")  # images through the mmproj
        assert json.loads(by["server"][2])["backend"] == "transformers"
        assert all(g[3] is not None and g[3] <= 12 for g in gens)
        errors = con.execute("SELECT count(*) FROM generations WHERE finish_reason = 'error'").fetchone()[0]
        assert errors == 0
        assert con.execute("SELECT count(*) FROM annotations").fetchone()[0] == 15
    finally:
        con.close()
    assert (run / "tiny" / "thinker" / "config.json").exists()


def test_tiny_caps_the_judge_and_a_built_students_vision_pretraining():
    from siqkit.recipe import load_recipe
    from tests.conftest import REPO

    path = REPO / "recipes" / "quickstart.yaml"
    full = load_recipe(path, ["annotate.judge=perception"])
    assert (full.annotate.judge_max_new_tokens, full.student.build.vision_pretrain_steps) == (256, 2000)
    tiny = load_recipe(path, ["annotate.judge=perception", "tiny.max_new_tokens=20"], tiny=True)
    assert tiny.annotate.judge_max_new_tokens == 20
    assert tiny.student.build.vision_pretrain_steps == tiny.tiny.max_train_steps == 4
