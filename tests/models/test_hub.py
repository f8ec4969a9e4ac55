"""Checkpoint paths written as Hub repo ids, resolved from a Hugging Face cache built here."""

from __future__ import annotations

import hashlib
import os
import shutil

import yaml

from siqkit.hub import is_repo_id
from siqkit.recipe import load_recipe

REPO = "tiny-org/tiny-qwen2-vl"


def cache_with(model, cache):
    """``model`` stored in huggingface_hub's cache layout: blobs by hash, a snapshot of links, refs/main."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    for f in sorted(model.rglob("*")):
        if f.is_file():
            blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, blob)
            link = snap / f.relative_to(model)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


def recipe(tmp_path, **run) -> str:
    path = tmp_path / "recipes" / "r.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"run": {"name": "hub", **run}, "seeds": {"sources": [{"name": "d", "type": "digits"}]},
                                    "student": {"path": REPO}, "export": {"model": REPO}}))
    return str(path)


def test_a_repo_id_resolves_from_the_local_cache(tiny_model, tmp_path, monkeypatch):
    from siqkit.models.twins import load_tiny

    snap = cache_with(tiny_model("qwen2_vl"), tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    rec = load_recipe(recipe(tmp_path))
    assert rec.student.path == snap == rec.export.model
    assert load_tiny(rec.student.path).config.model_type == "qwen2_vl"  # the cached weights load


def test_a_repo_id_not_in_the_cache_is_one_line_and_downloads_stay_off(cli, tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-hub")}
    res = cli("check", recipe(tmp_path), env=env)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: student.path: {REPO}: not in the Hugging Face cache")
    assert "run.allow_download: true" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # allowed, it tries the Hub: here offline (HF_HUB_OFFLINE=1), so it fails in one line
    res = cli("check", recipe(tmp_path, allow_download=True), env={**env, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and f"student.path: {REPO}: download failed" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_what_counts_as_a_repo_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("Qwen/Qwen3-VL-2B-Instruct") and is_repo_id("HuggingFaceTB/SmolVLM-256M-Instruct")
    for local in ("./Qwen/Qwen3", "/models/qwen", "~/models/qwen", "a/b/c", "../x/y", "qwen", None):
        assert not is_repo_id(local), local
    (tmp_path / "models" / "student").mkdir(parents=True)
    assert not is_repo_id("models/student")  # a folder of that name here is a local path
