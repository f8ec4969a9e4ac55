"""Routing rules and work keys, without running a stage."""

from __future__ import annotations

from siqkit.generate.prompts import DEFAULT_SYSTEM, render_messages, sampling_dict, work_key
from siqkit.generate.routing import Router
from siqkit.recipe import TeacherConfig
from siqkit.teachers.identity import teacher_identity


def teacher(name, **route):
    return TeacherConfig(name=name, backend="python", callable="m:f", route=route)


def test_first_match_wins_and_a_catch_all_takes_the_rest():
    ocr = teacher("ocr", question_regex=r"\b(read|text|written)\b")
    chart = teacher("chart", labels=["chart"])
    digits = teacher("digits", sources=["digits"], splits=["train"])
    thinker = teacher("thinker")
    r = Router([ocr, chart, digits, thinker], "first")
    assert r.assign("docs", "train", "What text is written on the sign?", True) == ["ocr"]
    assert r.assign("chartqa", "train", "Which bar in the chart is tallest?", True) == ["chart"]
    assert r.assign("digits", "train", "What is the sum of the two numbers?", True) == ["digits"]
    assert r.assign("digits", "test", "What is the sum of the two numbers?", True) == ["thinker"]
    assert r.assign("easy_vqa", "train", "What color is the shape?", True) == ["thinker"]
    assert Router([ocr, chart, digits, thinker], "all").assign(
        "digits", "train", "Read the numbers and add them", True) == ["ocr", "digits", "thinker"]
    assert Router([ocr], "first").assign("x", "train", "What colour?", True) == []


def test_route_by_images_sends_text_only_seeds_to_a_text_teacher():
    reasoner = teacher("reasoner", images=False)
    thinker = teacher("thinker", images=True)
    r = Router([reasoner, thinker], "first")
    assert r.assign("scienceqa", "train", "Which is a mammal?", False) == ["reasoner"]
    assert r.assign("scienceqa", "train", "Which animal is shown?", True) == ["thinker"]


def test_max_pixels_is_part_of_the_identity_only_when_set():
    plain = TeacherConfig(name="a", backend="python", callable="m:f")
    capped = TeacherConfig(name="a", backend="python", callable="m:f", max_pixels=1024 * 1024)
    assert "max_pixels" not in teacher_identity(plain)  # keys of runs made before it existed stay
    assert teacher_identity(capped)["max_pixels"] == 1024 * 1024


def test_work_key_changes_with_each_part_and_only_then():
    t = TeacherConfig(name="a", backend="python", callable="m:f")
    msgs = render_messages(t, "What is 2 + 2?", "src", "train", 1)
    assert msgs[0] == {"role": "system", "content": DEFAULT_SYSTEM}
    assert msgs[1]["content"] == [{"type": "image"}, {"type": "text", "text": "What is 2 + 2?"}]
    ident, samp = teacher_identity(t), sampling_dict(t, 0)
    base = work_key("seed1", ident, msgs, samp, 0)
    assert base == work_key("seed1", dict(ident), list(msgs), dict(samp), 0)
    assert base != work_key("seed2", ident, msgs, samp, 0)
    assert base != work_key("seed1", ident, msgs, samp, 1)
    assert base != work_key("seed1", ident, msgs, sampling_dict(t, 1), 0)
    other = TeacherConfig(name="a", backend="python", callable="m:g")
    assert base != work_key("seed1", teacher_identity(other), msgs, samp, 0)
    templ = TeacherConfig(name="a", backend="python", callable="m:f",
                          prompt={"system": "", "template": "[{source}] {question}"})
    msgs2 = render_messages(templ, "What is 2 + 2?", "src", "train", 0)
    assert msgs2 == [{"role": "user", "content": [{"type": "text", "text": "[src] What is 2 + 2?"}]}]
    assert base != work_key("seed1", ident, msgs2, samp, 0)
