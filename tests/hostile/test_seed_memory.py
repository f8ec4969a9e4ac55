"""The seeds stage holds no image bytes beyond the row in hand (and its small cache of
shared files): its peak Python memory is flat between 30 and 300 distinct images."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from siqkit.recipe import load_recipe
from siqkit.seeds.sources import images as images_mod
from siqkit.seeds.stage import run_seeds
from siqkit.store import Store


def ingest_peak(root: Path, n: int) -> int:
    folder = root / f"n{n}"
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(n)
    rows = []
    for i in range(n):  # noise: ~197 KB of PNG each, all distinct
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        rows.append(json.dumps({"question": f"q{i}", "image": f"img/{i}.png"}))
    (folder / "q.jsonl").write_text("\n".join(rows))
    (folder / "r.yaml").write_text(f"run: {{dir: {folder / 'run'}}}\n"
                                   "seeds: {sources: [{name: s, type: images, path: q.jsonl}]}\n")
    recipe = load_recipe(folder / "r.yaml")
    store = Store.open(recipe.run_dir, create=True)
    try:
        tracemalloc.start()
        counts = run_seeds(store, recipe)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        store.close()
    assert counts["sources"]["s"]["stored"] == n
    return peak


def test_seed_ingest_memory_is_flat_in_the_number_of_images(tmp_path, monkeypatch):
    monkeypatch.setattr(images_mod, "CACHE_BYTES", 1 << 20)  # the shared-file cache, made small here
    ingest_peak(tmp_path, 5)  # first use: imports and caches of the libraries, not measured
    small, large = ingest_peak(tmp_path, 30), ingest_peak(tmp_path, 300)
    # Keeping each image's bytes would add ~53 MB between the two; flat means within 20%.
    assert large < 1.2 * small + (2 << 20), (small, large)
