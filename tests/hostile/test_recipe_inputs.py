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
