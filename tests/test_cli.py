"""The command line as a user meets it: help texts, the plan table, inspect, and the README's commands."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO


def test_help_for_every_command(cli):
    for args in ([], ["run"], ["check"], ["inspect"]):
        res = cli(*args, "--help")
        assert res.returncode == 0, res.stderr
        assert "Usage" in res.stdout
    assert "--only" in cli("run", "--help").stdout and "--strict" in cli("run", "--help").stdout
    assert cli("--version").stdout.startswith("siqkit ")


def test_check_prints_the_plan(cli):
    res = cli("check", str(REPO / "recipes" / "quickstart.yaml"))
    assert res.returncode == 0, res.stderr
    assert "recipe OK" in res.stdout
    for word in ("stages", "seeds", "will run", "answer-only twin", "held-out seeds", "easy_vqa", "48,248", "digits",
                 "3,500", "built from scratch", "100 held-out seeds of test per task"):
        assert word in res.stdout, word
    res = cli("check", str(REPO / "recipes" / "quickstart.yaml"), "--json", "--set", "seeds.sources[1].max=10")
    assert '"max": 10' in res.stdout


def test_inspect_of_a_folder_without_a_store(cli, tmp_path):
    res = cli("inspect", str(tmp_path))
    assert res.returncode == 1
    assert "no run store here" in res.stderr


def test_readme_first_screen_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:30])
    commands = re.findall(r"```bash\n(.+?)\n```", first_screen)
    assert len(commands) == 2
    main, tests = commands
    assert main.endswith("siqkit run recipes/quickstart.yaml")
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command"


def test_plan_memory_on_a_tiny_twin(cli, tmp_path):
    from siqkit.models.twins import make_tiny

    model = make_tiny("qwen2_vl", tmp_path / "twin")
    res = cli("plan-memory", "--model", str(model), "--vram", "8GB", "--seq", "512")
    assert res.returncode == 0, res.stderr
    assert "fits" in res.stdout and "micro-batch x accumulation" in res.stdout
    res = cli("plan-memory", "--model", str(model), "--vram", "1MB", "--seq", "512")
    assert res.returncode == 1 and "DOES NOT FIT" in res.stdout
    res = cli("plan-memory", "--model", str(model), "--vram", "lots")
    assert res.returncode == 1 and res.stderr.startswith("error: ")


@pytest.mark.parametrize("args, message", [
    (["bogus"], "error: No such command 'bogus'."),
    (["inspect"], "error: Missing argument 'run_dir'."),
    (["run", "r.yaml", "--nope"], "error: No such option: --nope"),
    (["plan-memory", "--model", "m", "--seq", "lots"], "error: Invalid value for '--seq': Input should be a valid integer"),
])
def test_usage_errors_are_one_line_and_the_usage(cli, args, message):
    res = cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith(message) and lines[1].startswith("Usage: siqkit") and len(lines) == 2
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["run", "-h"], ["inspect", "-h"]])
def test_short_and_long_help_everywhere(cli, args):
    res = cli(*args)
    assert res.returncode == 0 and "Usage: siqkit" in res.stdout


def _seeds_only_recipe(tmp_path) -> str:
    import json

    import yaml

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(6)))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"run": {"name": "t", "dir": str(tmp_path / "run")},
                                    "seeds": {"sources": [{"name": "q", "type": "jsonl", "path": str(data)}]}}))
    return str(path)


def test_a_full_run_writes_its_report_and_says_where(cli, tmp_path):
    rec = _seeds_only_recipe(tmp_path)
    report = tmp_path / "run" / "report.html"
    res = cli("run", rec, "--only", "seeds")
    assert res.returncode == 0, res.stderr
    assert not report.exists() and "report:" not in res.stderr  # one stage: no report
    res = cli("run", rec, "--no-report")
    assert res.returncode == 0, res.stderr
    assert not report.exists()
    res = cli("run", rec)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"report: {report}"
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "id=seeds" in page and "What is" not in page
