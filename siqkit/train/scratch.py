"""Build a student from scratch (``student.build``): a real architecture class, random weights.

:func:`build_student` trains a byte-level BPE tokenizer on the training dataset's own text
(captions, user turns and assistant targets of ``data.jsonl``), builds the model with
:func:`siqkit.models.make_tiny` at the recipe's sizes, and writes both like any Hugging
Face checkpoint. The folder gets a ``build.json`` with the settings and a digest of the
corpus; a later run with the same settings and data reuses the folder, and any change
rebuilds it (the old one is replaced, since nothing trained lives there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from siqkit.train.config import BuildConfig
from siqkit.train.data import load_traces

log = logging.getLogger(__name__)


def tokenizer_corpus(data_dir: str | Path) -> list[str]:
    """Every text of the training data: captions, then each message's text parts, in file order."""
    texts: list[str] = []
    for row in load_traces(data_dir):
        if row.caption:
            texts.append(row.caption)
        for message in row.messages:
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
                continue
            texts.extend(part["text"] for part in content or [] if part.get("type") == "text" and part.get("text"))
    return texts


def build_student(cfg: BuildConfig, data_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Write (or reuse) the student ``cfg`` describes in ``out_dir``; return the folder."""
    from siqkit.models.tiny import make_tiny

    out = Path(out_dir)
    corpus = tokenizer_corpus(data_dir)
    settings = {**cfg.model_dump(mode="json"), "seed": cfg.seed if cfg.seed is not None else seed,
                "corpus_sha256": hashlib.sha256("\n".join(corpus).encode()).hexdigest(), "corpus_texts": len(corpus)}
    marker = out / "build.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings and (out / "config.json").is_file():
        log.info("student: reusing the student built in %s", out)
        return out
    if out.exists():
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    log.info("student: building a %s from scratch (hidden %d, %d layers), tokenizer of %d entries on %d texts",
             cfg.arch, cfg.hidden_size, cfg.layers, cfg.vocab_size, len(corpus))
    options = {}
    if cfg.arch in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        options["image_tokens"] = (cfg.image_tokens, cfg.image_tokens)
    make_tiny(cfg.arch, tmp, hidden=cfg.hidden_size, layers=cfg.layers, heads=cfg.heads, kv_heads=cfg.kv_heads,
              intermediate=cfg.intermediate_size, vocab_size=cfg.vocab_size, seed=settings["seed"],
              corpus=corpus, vision_width=cfg.vision_width, vision_depth=cfg.vision_depth,
              vision_heads=cfg.vision_heads, **options)
    (tmp / "build.json").write_text(json.dumps(settings, indent=1) + "\n")
    tmp.rename(out)
    return out
