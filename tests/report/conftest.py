"""A run store that has been through every stage, built by hand in seconds: seeds of two sources,
two teachers' traces on the held-out seeds, a curriculum's evaluations and an exported GGUF's,
written with the train and evaluate packages' own table writers."""

from __future__ import annotations

import pytest

from siqkit.evaluate.tables import write_evals
from siqkit.train.tables import write_results

from tests.curate.conftest import build_store, png, sample

TEACHERS = {"easy_vqa": "perception", "digits": "digit_reader"}
LABELS = ["before", "after-align", "after-instruct", "after-reason-answer-only", "after-reason"]
SHOWN = ["after-instruct", "after-reason-answer-only", "after-reason", "gguf-q4_k_m"]
"""The evaluations the side-by-side shows: before CoT, answer-only twin, CoT-distilled, GGUF."""


def answer_of(label: str, i: int) -> str:
    return f"{label}-says-{i}"


def _eval(label: str, seeds: list[str], wrong: set[int]) -> dict:
    rows = [{"seed_id": s, "output": f"<think>\nlooked at {s}\n</think>\n\n{answer_of(label, i)}",
             "reasoning": f"{label} looked at seed {i}" if "reason" in label and "answer-only" not in label else None,
             "answer": None if (label == "before" and i == 0) else answer_of(label, i),
             "parse_status": "no_answer" if (label == "before" and i == 0) else "ok",
             "correct": i not in wrong, "correct_detail": None, "reasoning_tokens": 5}
            for i, s in enumerate(seeds)]
    correct = sum(r["correct"] for r in rows)
    return {"label": label, "model": f"/models/{label}", "seeds": len(rows), "judged": len(rows), "correct": correct,
            "accuracy": correct / len(rows), "format_ok": 1.0, "mean_reasoning_tokens": 5.0,
            "parse_status": {"ok": len(rows)}, "rows": rows}


@pytest.fixture
def evaluated_run(tmp_path):
    """``(run_dir, seed ids)``: 8 held-out seeds (4 easy_vqa, 4 digits), each answered by its
    source's teacher, every student evaluation and the GGUF's; the CoT student is wrong on
    seeds 1 and 5."""
    samples = []
    for i in range(8):
        source = "easy_vqa" if i < 4 else "digits"
        samples.append(sample(i, split="test", source=source, teacher=TEACHERS[source], gold=f"gold-{i}",
                              question=f"Held-out question {i}?", answer=f"teacher-answer-{i}",
                              reasoning=f"teacher {TEACHERS[source]} reasons about seed {i}", correct=i % 3 != 0,
                              images=[png(["circle", "square"][i % 2], "blue", size=50 + i)]))
    store = build_store(tmp_path / "run", samples)
    seeds = [s["seed_id"] for s in samples]
    run = store.begin_stage("seeds", {"seeds": {"sources": [{"name": "easy_vqa", "type": "easy_vqa"},
                                                            {"name": "digits", "type": "digits"}]}})
    store.end_stage(run, {"stored": {"easy_vqa": 4, "digits": 4}, "seconds": 1.2345})
    train = store.begin_stage("train", {})
    stages = [{"stage": name, "position": k, "status": "done", "data": data, "steps": 10, "first_loss": 3.0,
               "final_loss": 0.39479681161733776, "history": [{"step": j, "loss": 3.0 / j} for j in range(1, 11)]}
              for k, (name, data) in enumerate([("align", "caption"), ("instruct", "answer"), ("reason", "cot"),
                                                 ("reason-answer-only", "answer")])]
    write_results(store, {"stages": stages, "evals": [_eval(label, seeds, {1, 5} if label == "after-reason" else {2})
                                                      for label in LABELS]}, train)
    store.end_stage(train, {s["stage"]: {"final_loss": s["final_loss"], "steps": 10, "tokens_per_s": 1234.5678,
                                         **{f"metric_{m}": m / 7 for m in range(14)}} for s in stages})
    export = store.begin_stage("export", {})
    write_evals(store, [_eval("gguf-q4_k_m", seeds, {3})], export)
    store.end_stage(export, {"files": 2, "seconds": 5.5})
    store.close()
    return tmp_path / "run", seeds
