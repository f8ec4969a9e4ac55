"""The HTML report, opened in headless Chromium: no console errors, every plot and image loaded;
the side-by-side of teachers and students, the counts and the charts readable."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from siqkit.report.build import build_report

from tests.conftest import REPO
from tests.report.conftest import SHOWN, TEACHERS, answer_of

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a root user on a machine without a display or outside network access.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_report_renders_without_errors_and_every_plot_loads(quickstart, tmp_path, browser):
    path = build_report(quickstart["run_dir"], tmp_path / "report.html", examples=8)
    text = path.read_text()
    assert "http://" not in text and "https://" not in text, "the report must be self-contained"
    for section in ("id=stages", "id=seeds", "id=teachers", "id=annotations", "id=examples"):
        assert section in text
    assert "id=curation" not in text  # the quickstart fixture stops before curate
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    state = page.evaluate("""() => Array.from(document.images).map(i => ({
        cls: i.className, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}))""")
    plots = [s for s in state if s["cls"] == "plot"]
    assert len(plots) >= 5 and all(s["ok"] and s["w"] > 300 for s in plots), plots
    assert sum(s["cls"] == "example" and s["ok"] for s in state) == 8
    assert errors == []
    assert page.locator("text=wrong").count() >= 4  # the teachers' real errors are shown
    shots = REPO / "build" / "test-artifacts"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    assert (shots / "report.png").stat().st_size > 50_000


def test_report_command(cli, quickstart, tmp_path):
    res = cli("report", str(quickstart["run_dir"]), "--out", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")


def test_side_by_side_shows_each_teacher_trace_and_each_student_answer(evaluated_run, tmp_path, browser):
    run_dir, seeds = evaluated_run
    page_text = build_report(run_dir, tmp_path / "report.html", examples=8).read_text()
    section = page_text.split("<section id=examples>")[1].split("</section>")[0]
    blocks = section.split("<div class=ex>")[1:]
    shown = [int(re.search(r"Held-out question (\d)\?", b).group(1)) for b in blocks]
    assert shown == [5, 4, 6, 1, 0, 2, 7, 3]  # per source (by name): the CoT student's wrong answers first
    for i, block in zip(shown, blocks):
        assert block.count('<img class="example"') == 1 and f"gold: gold-{i}" in block
        teacher = TEACHERS["easy_vqa" if i < 4 else "digits"]
        assert f"teacher {teacher}" in block and f"teacher {teacher} reasons about seed {i}" in block
        assert f"teacher-answer-{i}" in block
        for label in SHOWN:
            assert answer_of(label, i) in block, (label, i)
        for label in ("before", "after-align"):  # not one of the four compared models
            assert answer_of(label, i) not in block
        assert ("<span class=bad>wrong</span>" in block.split("student after-reason<")[1].split("</tr>")[0]) == (i in (1, 5))
    assert "after-reason looked at seed 1" in section  # the CoT student's reasoning, folded
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((tmp_path / "report.html").as_uri(), wait_until="load")
    assert page.evaluate("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert errors == []
    assert page.locator("#examples .ex").count() == 8


def test_stage_counts_are_formatted_and_all_kept(evaluated_run, tmp_path):
    run_dir, _ = evaluated_run
    page_text = build_report(run_dir, tmp_path / "report.html").read_text()
    stages = page_text.split("<section id=stages>")[1].split("</section>")[0]
    assert "0.39479681161733776" not in stages and "(+" not in stages and "…" not in stages
    assert "reason.final_loss: 0.395" in stages and "1,235" in stages
    assert "all 64 counts" in stages and "reason-answer-only.metric_13: 1.86" in stages  # unfolded: full keys
    assert "<td>1.23</td>" in stages  # seconds


def test_grouped_bars_keep_their_labels_apart():
    from siqkit.report.plots import bars_figure

    labels = ["visual-perception", "color", "shape", "counting", "arithmetic", "addition", "subtraction",
              "multiplication", "yes-no", "spatial", "comparison", "ocr"]
    fig = bars_figure({lb: {"before": 100 + k, "after": 50 + k} for k, lb in enumerate(labels)},
                      "task labels before and after curation", "traces")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() + ax.get_yticklabels()
             if t.get_text() in labels]
    assert len(boxes) == len(labels)
    for k, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[k + 1:]), "group labels overlap"
    width, height = fig.canvas.get_width_height()
    assert all(b.x0 >= 0 and b.y0 >= 0 and b.x1 <= width and b.y1 <= height for b in boxes), "labels cut off"
    few = bars_figure({"easy_vqa": {"train": 3, "test": 1}, "digits": {"train": 2}}, "seeds", "seeds")
    assert [t.get_text() for t in few.axes[0].get_xticklabels()] == ["easy_vqa", "digits"]  # a few stay upright
