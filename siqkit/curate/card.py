"""The dataset card (``README.md``) of an export and the LLaMA-Factory ``dataset_info.json`` entry.

The card opens with a Hugging Face YAML header: ``configs`` (so ``load_dataset(DIR)`` reads
the Parquet file, images included), ``license``, ``task_categories``, ``language``,
``size_categories``, ``tags`` and ``pretty_name``. Then how to load each file, the sources
the questions and images came from with their licenses, the teachers that wrote the traces,
and the counts and settings of the curation.

The license is decided from the seed sources: each built-in source's license is known
(:data:`KNOWN_SOURCES`); a source siqkit does not know (your own files) makes it
``unknown``, unless the recipe sets ``curate.export.license``. The language is
``curate.export.language`` (default ``[en]``: the built-in data and prompts are English).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

KNOWN_SOURCES = {
    "easy_vqa": {"name": "easy-VQA", "license": "mit",
                 "credit": "easy-VQA by Victor Zhou (the `easy-vqa` package, https://github.com/vzhou842/easy-VQA), "
                           "MIT license: its images and questions"},
    "digits": {"name": "scikit-learn digits", "license": "bsd-3-clause",
               "credit": "the handwritten digits of the UCI ML repository (Optical Recognition of Handwritten "
                         "Digits, E. Alpaydin and C. Kaynak) as shipped in scikit-learn (BSD-3-Clause); siqkit "
                         "composed the glyphs into two-number images and wrote the arithmetic questions"},
}
"""Seed source types whose origin and license siqkit knows, for the card's credits."""

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"))


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` rows."""
    return next((label for bound, label in SIZE_CATEGORIES if n < bound), "n>10M")


def card_license(sources: list[dict], override: str | list[str] | None) -> str | list[str]:
    """``override`` if given; else the sources' licenses (one id, a list, or ``unknown``)."""
    if override:
        return override
    found = sorted({s["license"] for s in sources if s.get("license")})
    if not found or any(not s.get("license") for s in sources):
        return "unknown"
    return found[0] if len(found) == 1 else found


def llamafactory_entry(name: str, file: Path) -> dict:
    """The ``dataset_info.json`` entry for LLaMA-Factory: sharegpt formatting with OpenAI-style
    ``messages`` (``role``/``content`` tags) and an ``images`` column.

    Checked once by hand with LLaMA-Factory 0.9.5's own loader (its dataset parser, sharegpt
    converter and Qwen2-VL plugin, which counts ``<image>`` against ``images``); the tests check
    the documented format instead, as LLaMA-Factory pins older transformers and trl.
    """
    return {name: {"file_name": str(file), "formatting": "sharegpt",
                   "columns": {"messages": "messages", "images": "images"},
                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant", "system_tag": "system"}}}


def _list_type() -> str:
    import datasets

    return "List" if hasattr(datasets, "List") else "Sequence"  # List since datasets 4


def dataset_card(out_dir: Path, counts: dict, info: dict, formats) -> str:
    """README.md of an export folder (``out_dir`` absolute): header, loading snippets, credits, counts."""
    name = out_dir.name
    splits = list(counts.get("split", {})) or ["train"]
    split = splits[0] if len(splits) == 1 else "curated"
    main = "data.parquet" if "parquet" in formats else "data.jsonl"
    sources = counts.get("sources", [])
    images = counts.get("images", 0) > 0
    header = {
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": main}]}],
        "license": card_license(sources, info.get("license")),
        "language": list(info.get("language") or ["en"]),
        "task_categories": (["visual-question-answering", "image-text-to-text"] if images
                            else ["question-answering", "text-generation"]),
        "size_categories": [size_category(counts["samples"])],
        "tags": ["reasoning", "chain-of-thought", "distillation", "siqkit"],
        "pretty_name": f"siqkit {name}",
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {name}", "",
             f"{counts['samples']:,} reasoning traces for distillation, curated by siqkit "
             f"(`{info.get('source', 'siqkit curate')}`).", "",
             "Each row holds a `messages` conversation (user: images then question; assistant: "
             "`<think>` reasoning, then the answer), its images, the teacher, the seed split, difficulty "
             "bucket, task labels, the answer, the gold answer and why the teacher stopped (`finish_reason`).", "",
             "## Loading", ""]
    if "parquet" in formats:
        lines += ["`data.parquet` embeds the images (a `datasets` Image feature): it loads from any directory "
                  "and can be moved or pushed to the Hub alone.", "",
                  "```python", "from datasets import load_dataset", "",
                  f'ds = load_dataset("{out_dir}", split="{split}")  # or the repo id once pushed',
                  'ds[0]["images"]  # PIL images', "```", ""]
    if "jsonl" in formats:
        lt = _list_type()
        lines += [f"`data.jsonl` holds the same rows with absolute image paths (`{out_dir}/images/…`, valid on "
                  "this machine; siqkit's readers fall back to `images/` beside the file if the folder moves).",
                  "", "```python", f"from datasets import Image, {lt}, load_dataset", "",
                  f'ds = load_dataset("json", data_files="{out_dir / "data.jsonl"}", split="train")',
                  f'ds = ds.cast_column("images", {lt}(Image()))', "```", ""]
    if "llamafactory" in formats:
        entry = llamafactory_entry(f"siqkit_{name}".replace("-", "_"), out_dir / "llamafactory.jsonl")
        lines += ["`llamafactory.jsonl` is the LLaMA-Factory variant: string `content` with one `<image>` "
                  "placeholder per image, absolute `images` paths. Add this entry (also in "
                  "`dataset_info.json` here) to LLaMA-Factory's `data/dataset_info.json`:", "",
                  "```json", json.dumps(entry, indent=2), "```", ""]
    lines += ["## Sources", ""]
    if sources:
        lines += ["| seed source | type | samples | license | credit |", "|---|---|---:|---|---|"]
        lines += [f"| {s['name']} | {s['type'] or '-'} | {s['samples']:,} | {s.get('license') or 'unknown'} "
                  f"| {s.get('credit') or 'not known to siqkit: check its own license'} |" for s in sources]
        lines.append("")
    teachers = counts.get("teacher", {})
    if teachers:
        lines += [f"Traces written by the teachers {', '.join(f'`{t}`' for t in teachers)}; a model teacher's "
                  "license may also bind what its outputs are used for.", ""]
    for title, field in (("Splits", "split"), ("Teachers", "teacher"), ("Difficulty", "difficulty"),
                         ("Task labels", "labels")):
        values = counts.get(field, {})
        if values:
            lines += [f"## {title}", "", "| value | samples |", "|---|---:|"]
            lines += [f"| {k} | {v:,} |" for k, v in values.items()]
            lines.append("")
    for title, key in (("Filters applied", "filters"), ("Dropped, by layer and reason", "dropped"),
                       ("Deduplication", "dedup"), ("Selection", "selection"), ("Subset", "subset")):
        if info.get(key):
            lines += [f"## {title}", "", "```yaml",
                      yaml.safe_dump(json.loads(json.dumps(info[key], default=str)), sort_keys=False).rstrip(),
                      "```", ""]
    return "\n".join(lines)
