"""The HTML report, opened in headless Chromium: no console errors, every plot and image loaded."""

from __future__ import annotations

import os
import shutil

import pytest

from siqkit.report.build import build_report

from tests.conftest import REPO

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
