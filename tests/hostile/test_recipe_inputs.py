"""Hostile recipes: every one is refused by ``siqkit check`` with one line and exit 2, fast,
before any heavy library loads."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_cli

GOOD = "seeds: {sources: [{name: s, type: easy_vqa}]}\n"
OPENAI = "teachers: [{name: t, backend: openai, endpoints: [{url: 'http://127.0.0.1:9'}], %s}]\n"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(width))}]")
    return "\n".join(lines) + f"\n{GOOD}"


BAD = {
    "alias bomb": (alias_bomb(), ":6: invalid YAML: more than 100,000 values once its aliases are expanded"),
    "alias cycle": ("x: &a [1, *a]\n" + GOOD, "invalid YAML: an alias refers to a value that contains it"),
    "duplicate key": (GOOD + "seed: 1\nseed: 2\n", ":3: invalid YAML: duplicate key 'seed' (first given on line 2)"),
    "deep nesting": ("x: " + "[" * 20000 + "]" * 20000 + "\n" + GOOD, "invalid YAML: nested deeper than 50 levels"),
    "negative generate.max_seeds": (GOOD + "generate: {max_seeds: {train: -3}}\n",
                                    "generate.max_seeds.train: must be at least 1 (got -3)"),
    "negative eval.max_seeds": (GOOD + "eval: {max_seeds: -1}\n", "eval.max_seeds: input should be greater than"),
    "zero tiny.max_seeds": (GOOD + "tiny: {max_seeds: 0}\n", "tiny.max_seeds: input should be greater than"),
    "negative backoff_s": (GOOD + OPENAI % "backoff_s: -1", "teachers[0].backoff_s: input should be greater than"),
    "negative max_retries": (GOOD + OPENAI % "max_retries: -2", "teachers[0].max_retries: input should be greater than"),
    "zero timeout_s": (GOOD + OPENAI % "timeout_s: 0", "teachers[0].timeout_s: input should be greater than 0"),
    "nan timeout_s": (GOOD + OPENAI % "timeout_s: .nan", "teachers[0].timeout_s: Input should be a finite number"),
    "zero concurrency": (GOOD.replace("}]}", "}]}") + "teachers: [{name: t, backend: openai, "
                         "endpoints: [{url: 'http://x', concurrency: 0}]}]\n",
                         "teachers[0].endpoints[0].concurrency: input should be greater than or equal to 1"),
    "infinite weight": ("seeds: {sources: [{name: s, type: easy_vqa, weight: .inf}]}\n",
                        "seeds.sources[0].weight: Input should be a finite number"),
    "huge format spec": (GOOD + OPENAI % "prompt: {template: '{question:>999999999}'}",
                         "teachers[0].prompt.template: placeholder {question:>999999999}: a format spec may not"),
    "template that cannot render": (GOOD + OPENAI % "prompt: {template: '{question:d}'}",
                                    "teachers[0].prompt.template: the template does not render on a sample seed"),
    "endpoint without a scheme": (GOOD + "teachers: [{name: t, backend: openai, endpoints: [{url: 'localhost:8000'}]}]\n",
                                  "teachers[0].endpoints[0].url: must start with http:// or https://"),
    "max_reply_mb zero": (GOOD + OPENAI % "max_reply_mb: 0", "teachers[0].max_reply_mb: input should be greater than 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_is_one_line_and_exit_2(tmp_path, case):
    text, expected = BAD[case]
    (tmp_path / "r.yaml").write_text(text)
    start = time.monotonic()
    res = run_cli("check", "r.yaml", cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - start
    assert res.returncode == 2, res.stdout + res.stderr
    out = (res.stdout + res.stderr).strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: ") and expected in out, out
    assert "Traceback" not in out
    assert elapsed < 5, elapsed  # < 2 s on an idle machine; the slack absorbs a busy one


STUDENT = GOOD + "student: {build: {}}\n"  # a student built from scratch: no checkpoint to find

# --set KEY=VALUE on STUDENT -> the one-line error after "KEY: " (or, for a list, the whole error)
OUT_OF_RANGE = {
    "curate.dedup.threshold=1.5": "must be in (0, 1] (got 1.5)",
    "curate.dedup.num_perm=0": "must be between 2 and 1024 (got 0)",
    "curate.dedup.ngram=0": "must be between 1 and 64 (got 0)",
    "curate.rules.min_reasoning_tokens=-1": "must be 0 or more (got -1)",
    "curate.rules.max_line_repeats=0": "must be at least 1 (got 0); null turns the rule off",
    "curate.rules.max_repeated_ngram_fraction=2": "must be in (0, 1] (got 2.0)",
    "curate.rules.min_script_fraction=-1": "must be in [0, 1] (got -1.0)",
    "curate.selection.difficulty.mix.easy=-30": "input should be greater than or equal to 0",
    "curate.selection.difficulty.tolerance=.nan": "Input should be a finite number",
    "curate.selection.labels.max_per_label=0": "must be at least 1 (got 0); remove it for no cap",
    "seed=-1": "input should be greater than or equal to 0",
    "train.batch_size=0": "must be at least 1 (got 0)",
    "train.learning_rate=.nan": "Input should be a finite number",
    "train.stages=[{name: a}, {name: b, epochs: 0}]": "train.stages[1].epochs: must be greater than 0 (got 0.0)",
    "train.stages=[{name: a, max_steps: -5}]": "train.stages[0].max_steps: must be at least 1 (got -5)",
    "train.stages=[{name: a, learning_rate: .inf}]": "train.stages[0].learning_rate: Input should be a finite number",
    "train.lora.r=0": "must be at least 1 (got 0)",
    "train.lora.dropout=1": "input should be less than 1",
    "train.save_every=0": "must be at least 1 (got 0)",
    "train.max_seq_len=0": "must be at least 1 (got 0)",
    "train.vram=0GB": "must be more than 0 bytes (got '0GB')",
    "train.max_image_pixels=0": "must be at least 1 (got 0)",
    "train.micro_batch=32": "must not exceed batch_size (16) (got 32)",
    "student.build.hidden_size=0": "must be at least 1 (got 0)",
    "student.build.layers=0": "must be at least 1 (got 0)",
    "student.build.vocab_size=10": "must exceed the 256 byte tokens (got 10)",
    "student.build.vision_width=12": ("vision_width / vision_heads, the vision head size, must be a multiple of 4 "
                                      "for qwen2_vl (got 12 / 2 = 6)"),
}


@pytest.mark.parametrize("override", sorted(OUT_OF_RANGE))
def test_an_out_of_range_number_is_one_line_naming_its_key(tmp_path, override):
    """In-process: the error ``siqkit check`` prints after ``error:`` (the CLI path is the one
    :func:`test_bad_recipe_is_one_line_and_exit_2` runs, and one case below)."""
    from siqkit.errors import RecipeError
    from siqkit.recipe import load_recipe

    (tmp_path / "r.yaml").write_text(STUDENT)
    key, value = override.split("=", 1)
    expected = OUT_OF_RANGE[override] if value.startswith("[") else f"{key}: {OUT_OF_RANGE[override]}"
    with pytest.raises(RecipeError) as e:
        load_recipe(tmp_path / "r.yaml", [override])
    assert str(e.value) == expected and e.value.exit_code == 2


def test_an_out_of_range_number_through_check(tmp_path):
    (tmp_path / "r.yaml").write_text(STUDENT)
    res = run_cli("check", "r.yaml", "--set", "train.micro_batch=32", cwd=tmp_path, timeout=60)
    assert res.returncode == 2
    assert (res.stdout + res.stderr).strip() == \
        f"error: train.micro_batch: {OUT_OF_RANGE['train.micro_batch=32']}"


# edge values that mean something are accepted (in-process; the CLI run below checks a few)
IN_RANGE = [
    "curate.dedup.threshold=1", "curate.dedup.num_perm=2", "curate.dedup.ngram=64", "curate.dedup.image_distance=0",
    "curate.rules.min_reasoning_tokens=0", "curate.rules.max_line_repeats=1", "curate.rules.max_answer_tokens=1",
    "curate.rules.min_script_fraction=0", "curate.rules.max_repeated_ngram_fraction=1",
    "curate.selection.difficulty.mix={easy: 0, hard: 1}", "curate.selection.difficulty.tolerance=0",
    "train.batch_size=1", "train.weight_decay=0", "train.max_grad_norm=0", "train.lora.dropout=0",
    "train.eval_table_rows=0", "train.micro_batch=16", "train.grad_accum=16", "train.vram=512MB",
    "train.stages=[{name: a, epochs: 0.5, learning_rate: 1.0e-9, max_steps: 1}]",
    "student.build.vision_pretrain_steps=0", "student.build.vocab_size=257", "student.build.seed=0",
]


@pytest.mark.parametrize("override", IN_RANGE)
def test_an_edge_value_in_range_is_accepted(tmp_path, override):
    from siqkit.recipe import load_recipe

    (tmp_path / "r.yaml").write_text(STUDENT)
    load_recipe(tmp_path / "r.yaml", [override])


def test_edge_values_pass_check(tmp_path):
    (tmp_path / "r.yaml").write_text(STUDENT)
    sets = ["curate.dedup.threshold=1", "curate.rules.max_line_repeats=1", "train.micro_batch=4",
            "train.grad_accum=4", "train.lora.dropout=0", "student.build.hidden_size=64"]
    res = run_cli("check", "r.yaml", *(x for s in sets for x in ("--set", s)), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_run_dir_that_is_a_file_and_a_folder_as_recipe(tmp_path):
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "r.yaml").write_text(GOOD + "run: {dir: taken/sub}\n")
    res = run_cli("check", "r.yaml", cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and res.stderr.strip().endswith("is not a folder; choose another run.dir")
    assert res.stderr.strip() == f"error: run.dir: {tmp_path / 'taken'} exists and is not a folder; choose another run.dir"
    res = run_cli("check", ".", cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == "error: .: a folder, not a recipe file; give the .yaml file itself"


def test_an_alias_bomb_in_a_set_override_is_refused_too(tmp_path):
    (tmp_path / "r.yaml").write_text(GOOD)
    levels = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    bomb = "[" + ", ".join(levels) + "]"  # 10**7 values once expanded, in 300 bytes
    res = run_cli("check", "r.yaml", "--set", f"seeds.sources[0].fields={bomb}", cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "(an alias bomb?)" in res.stderr, res.stderr
    deep = "x=" + "[" * 100 + "]" * 100
    res = run_cli("check", "r.yaml", "--set", deep, cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "nested deeper than 50 levels" in res.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_bad_recipe_loads_no_heavy_library(tmp_path, command):
    (tmp_path / "r.yaml").write_text(GOOD + "eval: {max_seeds: -1}\n")
    code = (f"import sys; from siqkit.cli import main; sys.argv = ['siqkit', '{command}', 'r.yaml']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 2, e.code\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'llama_cpp') if m in sys.modules)\n"
            "print('heavy:', heavy)")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("heavy: []"), res.stdout


def test_anchors_aliases_and_merge_keys_still_work(tmp_path):
    from siqkit.recipe import load_recipe

    (tmp_path / "r.yaml").write_text(
        "seeds:\n  sources:\n    - &src {name: a, type: easy_vqa, max: 5}\n    - {<<: *src, name: b}\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert [(s.name, s.max) for s in recipe.seeds.sources] == [("a", 5), ("b", 5)]
