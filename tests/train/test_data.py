"""Traces folder reading, per-stage examples, assistant-only labels and batch plans."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from siqkit.models import load_processor
from siqkit.train.config import StageConfig
from siqkit.train.data import (
    CAPTION_PROMPT,
    IGNORE,
    Encoder,
    TrainDataError,
    build_examples,
    load_traces,
    plan_batches,
)
from tests.train.traces import write_traces


def test_load_traces_errors_name_file_and_line(tmp_path):
    with pytest.raises(TrainDataError, match="training data not found"):
        load_traces(tmp_path)
    folder = write_traces(tmp_path / "d", 3)
    lines = (folder / "data.jsonl").read_text().splitlines()
    (folder / "data.jsonl").write_text("\n".join([lines[0], "{oops", lines[2]]) + "\n")
    with pytest.raises(TrainDataError, match=r"data.jsonl:2: invalid JSON"):
        load_traces(folder)
    row = json.loads(lines[0])
    row["images"] = ["images/missing.png"]
    (folder / "data.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(TrainDataError, match=r":1: images: file not found"):
        load_traces(folder)


def test_examples_per_data_kind(traces):
    rows = load_traces(traces)
    caption, drops = build_examples(rows, StageConfig(name="a", data="caption"), text_only=False, image_text="")
    # 12 rows over 8 distinct images: one caption example per image set.
    assert len(caption) == 8 and drops["same images already captioned"] == 4
    first = caption[0].messages
    assert first[0]["content"][-1]["text"] == CAPTION_PROMPT
    assert first[1]["content"][0]["text"].startswith("<think>\n\n</think>\n\nA ")

    short, _ = build_examples(rows, StageConfig(name="i", data="answer"), text_only=False, image_text="")
    assert short[0].messages[1]["content"][0]["text"] == f"<think>\n\n</think>\n\n{rows[0].answer}"

    hard, drops = build_examples(rows, StageConfig(name="r", difficulty=["hard"]), text_only=False, image_text="")
    assert len(hard) == 4 and drops["difficulty not selected"] == 8
    assert hard[0].messages == rows[2].messages


def test_text_only_student_reads_captions_instead_of_images(traces):
    rows = load_traces(traces)
    examples, _ = build_examples(rows, StageConfig(name="r"), text_only=True, image_text="[Image: {caption}]")
    user = examples[0].messages[0]["content"]
    assert isinstance(user, str) and user.startswith(f"[Image: {rows[0].caption}]\n") and examples[0].images == []
    rows[1].caption = None
    examples, drops = build_examples(rows, StageConfig(name="r"), text_only=True, image_text="{caption}")
    assert len(examples) == 11 and drops["image without caption or OCR text (text-only student)"] == 1
    caption, drops = build_examples(rows, StageConfig(name="a", data="caption"), text_only=True, image_text="")
    assert caption == [] and drops["caption data needs a vision student"] == 12


@pytest.mark.parametrize("arch", ["qwen2", "qwen2_vl", "smolvlm"])
def test_loss_only_on_assistant_tokens(twin, traces, arch):
    path = twin(arch)
    vision = arch != "qwen2"
    proc = load_processor(path) if vision else AutoTokenizer.from_pretrained(path)
    tok = proc.tokenizer if vision else proc
    rows = load_traces(traces)
    examples, _ = build_examples(rows[:3], StageConfig(name="r"), text_only=not vision, image_text="{caption}")
    enc = Encoder(proc, vision=vision, max_seq_len=512)
    encoded = [enc.encode(e) for e in examples]
    batch = enc.collate(examples, encoded)
    for row, ex in enumerate(examples):
        labels = batch["labels"][row]
        target = labels[labels != IGNORE].tolist()
        content = ex.messages[-1]["content"]
        expected = (content if isinstance(content, str) else content[0]["text"]) + tok.eos_token
        assert tok.decode(target) == expected
        assert len(target) == encoded[row].target
    # Cutting at max_seq_len keeps the prompt whole and cuts the answer's tail.
    short = Encoder(proc, vision=vision, max_seq_len=encoded[0].prompt + 3)
    cut = short.collate(examples[:1], [short.encode(examples[0])])
    assert cut["input_ids"].shape[1] == encoded[0].prompt + 3 and int((cut["labels"] != IGNORE).sum()) == 3
    assert Encoder(proc, vision=vision, max_seq_len=encoded[0].prompt - 1).encode(examples[0]) is None


def test_batch_plans_are_deterministic_grouped_and_ordered():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47, 9, 46, 10, 45]
    plan = plan_batches(lengths, micro_batch=2, seed=1, epoch=0)
    assert plan == plan_batches(lengths, micro_batch=2, seed=1, epoch=0)
    assert plan != plan_batches(lengths, micro_batch=2, seed=1, epoch=1)
    assert sorted(i for b in plan for i in b) == list(range(12))
    padded = sum(max(lengths[i] for i in b) * len(b) for b in plan)
    shuffled = plan_batches(lengths, micro_batch=2, seed=1, epoch=0, batching="random")
    assert padded < sum(max(lengths[i] for i in b) * len(b) for b in shuffled)

    groups = [i % 2 for i in range(12)]
    assert all(len({groups[i] for i in b}) == 1 for b in plan_batches(lengths, micro_batch=4, seed=0, epoch=0,
                                                                        groups=groups))
    levels = ["hard", "easy", "medium"] * 4
    ordered = plan_batches(lengths, micro_batch=2, seed=0, epoch=0, order="easy_to_hard", batching="random",
                           difficulty=levels)
    ranks = [{"easy": 0, "medium": 1, "hard": 2}[levels[i]] for b in ordered for i in b]
    assert ranks == sorted(ranks)
