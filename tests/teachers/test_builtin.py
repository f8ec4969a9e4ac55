"""Built-in teachers on real data: easy-VQA test images and composed digit test images.

Every input carries poisoned metadata (a wrong caption, wrong numbers, a wrong answer):
the teachers must answer from pixels alone, so their outputs must not change when the
metadata is removed. Accuracy must be useful but below 1: the errors are real misreads.
"""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from siqkit.annotate.normalize import check_answer
from siqkit.seeds.sources.digits import DigitsSource
from siqkit.teachers.backends.python_fn import PythonTeacher
from siqkit.teachers.base import Sampling, TeacherInput
from siqkit.teachers.builtin import digit_reader, perception
from siqkit.teachers.builtin.digit_reader import DigitTeacher
from siqkit.teachers.builtin.perception import EasyVQATeacher
from siqkit.teachers.parse import parse_cot

easy_vqa = pytest.importorskip("easy_vqa")

POISON = {"caption": "a purple hexagon", "answer": "42", "numbers": [99, 1], "kind": "shape",
          "glyphs": [[0], [1]], "operation": "multiply"}


def inp(key: str, question: str, image: Image.Image, metadata: dict | None = None, **sampling):
    return TeacherInput(
        key=key, seed_id=key, question=question, images=[image],
        messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        sampling=Sampling(**sampling), metadata=dict(metadata or {}),
    )


def accuracy(outputs, golds) -> float:
    verdicts = []
    for out, gold in zip(outputs, golds):
        parsed = parse_cot(out.text, out.finish_reason, out.error)
        assert parsed.status == "ok", (parsed, out.text)
        verdicts.append(check_answer(parsed.answer, gold)[0])
    return sum(verdicts) / len(verdicts)


# -- easy-VQA ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evqa():
    """400 test questions (every 24th), with their images and gold answers."""
    texts, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    rows = list(zip(texts, answers, image_ids))[::24][:400]
    images = {i: Image.open(paths[i]).convert("RGB") for _, _, i in rows}
    return [(q, a, images[i]) for q, a, i in rows]


def test_perception_accuracy_on_real_test_questions(evqa):
    batch = [inp(str(n), q, im, POISON) for n, (q, _, im) in enumerate(evqa)]
    outputs = EasyVQATeacher().generate(batch)
    acc = accuracy(outputs, [a for _, a, _ in evqa])
    assert 0.85 < acc < 1.0, acc


def test_perception_open_questions_make_real_colour_and_shape_errors():
    # Colour and shape questions only: fewer free "no" answers, so errors show more.
    texts, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    rows = [r for r in zip(texts, answers, image_ids) if r[1] not in ("yes", "no")][:300]
    batch = [inp(str(n), q, Image.open(paths[i]).convert("RGB")) for n, (q, _, i) in enumerate(rows)]
    acc = accuracy(EasyVQATeacher().generate(batch), [a for _, a, _ in rows])
    assert 0.8 < acc < 1.0, acc


def test_perception_never_reads_metadata(evqa):
    rows = evqa[:120]
    with_meta = EasyVQATeacher().generate([inp(str(n), q, im, POISON) for n, (q, _, im) in enumerate(rows)])
    without = EasyVQATeacher().generate([inp(str(n), q, im) for n, (q, _, im) in enumerate(rows)])
    assert [o.text for o in with_meta] == [o.text for o in without]


def drawn(shape: str, fill: str, size: int = 64, box=(16, 12, 48, 44)) -> Image.Image:
    im = Image.new("RGB", (size, size), (244, 240, 250))
    d = ImageDraw.Draw(im)
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "rectangle":
        d.rectangle(box, fill=fill)
    else:
        x0, y0, x1, y1 = box
        d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return im


@pytest.mark.parametrize("question,shape,fill,answer", [
    ("what color is the shape?", "circle", "blue", "blue"),
    ("what is the color of the rectangle?", "rectangle", "#008080", "teal"),
    ("what shape is in the image?", "triangle", "red", "triangle"),
    ("what is the green shape?", "rectangle", "#00ff00", "rectangle"),
    ("is there a red shape?", "circle", "red", "yes"),
    ("is there a red shape?", "circle", "yellow", "no"),
    ("is there not a red shape in the image?", "circle", "red", "no"),
    ("is no blue shape present?", "circle", "red", "yes"),
    ("does the image not contain a circle?", "triangle", "gray", "yes"),
    ("does the image contain a circle?", "circle", "black", "yes"),
    ("is a rectangle present?", "circle", "black", "no"),
    ("is there a grey circle?", "circle", "gray", "yes"),
])
def test_perception_question_forms(question, shape, fill, answer):
    out = perception.generate([inp("k", question, drawn(shape, fill))])[0]
    parsed = parse_cot(out.text)
    assert parsed.status == "ok" and parsed.answer == answer, out.text
    assert out.text.startswith("<think>\n") and "\n</think>\n\n" in out.text
    assert out.completion_tokens == len(out.text.split())


def test_perception_brief_detail_keeps_the_answers_and_drops_the_measurements(evqa):
    batch = [inp(str(n), q, im) for n, (q, _, im) in enumerate(evqa[:200])]
    full, brief = EasyVQATeacher().generate(batch), EasyVQATeacher(detail="brief").generate(batch)
    assert [parse_cot(o.text).answer for o in brief] == [parse_cot(o.text).answer for o in full]
    for o in brief:
        reasoning = parse_cot(o.text).reasoning
        assert not re.search(r"\d", reasoning), reasoning  # no RGB values, pixel counts or ratios
        assert re.search(r"^I see a \w+ (circle|rectangle|triangle)\.$", reasoning, re.M), reasoning
    assert sum(len(o.text.split()) for o in brief) < sum(len(o.text.split()) for o in full) / 2


@pytest.mark.parametrize("question,fill,lines", [
    ("is there a red shape?", "yellow",
     ["The question asks about a red shape.", "I see a yellow circle.",
      "Its colour is yellow, not red, so there is no red shape."]),
    ("does the image not contain a circle?", "blue",
     ["The question asks about a circle.", "I see a blue circle.",
      "It is a circle, so there is a circle.",
      "The question is negated (it asks whether there is no circle), so the answer flips to no."]),
    ("what color is the shape?", "blue",
     ["The question asks for its colour.", "I see a blue circle.", "So its colour is blue."]),
    ("what shape is in the image?", "red",
     ["The question asks for its shape.", "I see a red circle.", "So it is a circle."]),
    ("describe the picture", "red",
     ["The question does not ask for a colour, a shape or a yes/no check.", "I see a red circle.",
      "So I describe the shape."]),
])
def test_perception_brief_traces(question, fill, lines):
    out = EasyVQATeacher(detail="brief").generate([inp("k", question, drawn("circle", fill))])[0]
    assert parse_cot(out.text).reasoning.splitlines() == lines


def test_builtin_teachers_reject_an_unknown_detail():
    with pytest.raises(ValueError, match="detail must be one of full, brief, short"):
        EasyVQATeacher(detail="terse")
    with pytest.raises(ValueError, match="detail must be one of full, brief, short"):
        DigitTeacher(detail=["short", "long"])
    with pytest.raises(ValueError, match="empty list"):
        DigitTeacher(detail=[])


@pytest.mark.parametrize("question, fill, line, answer", [
    ("is there a red shape?", "blue", "I see a blue circle, so there is no red shape.", "no"),
    ("is there a blue circle?", "blue", "I see a blue circle, so there is a blue circle.", "yes"),
    ("is there not a blue circle?", "blue",
     "I see a blue circle, so there is a blue circle; the question is negated.", "no"),
    ("what color is the shape?", "blue", "I see a blue circle.", "blue"),
])
def test_perception_short_traces(question, fill, line, answer):
    out = EasyVQATeacher(detail="short").generate([inp("k", question, drawn("circle", fill))])[0]
    parsed = parse_cot(out.text)
    assert (parsed.reasoning, parsed.answer) == (line, answer)


def test_a_detail_list_is_cycled_over_samples():
    image = drawn("circle", "blue")
    batch = [TeacherInput(key=f"k{i}", seed_id="s", question="is there a red shape?", images=[image],
                          messages=[], sample_index=i) for i in range(3)]
    lines = [len(parse_cot(o.text).reasoning.splitlines())
             for o in EasyVQATeacher(detail=["short", "brief"]).generate(batch)]
    assert lines == [1, 3, 1]


def test_perception_unknown_question_describes_the_shape():
    out = perception.generate([inp("k", "describe the picture", drawn("rectangle", "red"))])[0]
    assert parse_cot(out.text).answer == "a red rectangle"


def test_perception_errors_are_outputs_not_exceptions():
    blank = Image.new("RGB", (64, 64), "white")
    no_image = TeacherInput(key="a", seed_id="a", question="what shape?", images=[], messages=[])
    outs = EasyVQATeacher().generate([inp("b", "what shape is present?", blank), no_image])
    assert [o.finish_reason for o in outs] == ["error", "error"]
    assert "no shape" in outs[0].error and "one image" in outs[1].error


def test_sampling_varies_wording_but_not_answers(evqa):
    rows = evqa[:60]
    greedy = EasyVQATeacher().generate([inp(str(n), q, im) for n, (q, _, im) in enumerate(rows)])
    again = EasyVQATeacher().generate([inp(str(n), q, im) for n, (q, _, im) in enumerate(rows)])
    sampled = EasyVQATeacher().generate(
        [inp(f"{n}/s1", q, im, temperature=0.7) for n, (q, _, im) in enumerate(rows)])
    assert [o.text for o in greedy] == [o.text for o in again]
    assert [parse_cot(o.text).answer for o in greedy] == [parse_cot(o.text).answer for o in sampled]
    assert any(g.text != s.text for g, s in zip(greedy, sampled))


def test_python_backend_runs_the_module_functions(evqa):
    q, gold, im = evqa[0]
    teacher = PythonTeacher(SimpleNamespace(name="p", callable="siqkit.teachers.builtin.perception:generate"))
    out = teacher.generate([inp("k", q, im)])[0]
    assert out.finish_reason == "stop" and out.key == "k"
    teacher = PythonTeacher(SimpleNamespace(name="d", callable="siqkit.teachers.builtin.digit_reader:generate"))
    assert teacher.generate([inp("k", "what is the sum?", im)])[0].finish_reason == "error"


# -- digits ------------------------------------------------------------------------------------

def digit_seeds(split: str, n: int, seed: int = 0):
    cfg = SimpleNamespace(name="digits", type="digits", num_images={split: n}, max_digits=2,
                          operations=None, test_fraction=0.25, splits=None)
    return list(DigitsSource(cfg, seed).read())


def digit_batch(seeds, metadata=POISON, **sampling):
    return [inp(s.origin, s.question, Image.open(io.BytesIO(s.images[0])), metadata, **sampling)
            for s in seeds]


@pytest.fixture(scope="module")
def digit_test():
    return digit_seeds("test", 300)


def test_digit_reader_accuracy_on_composed_test_images(digit_test):
    outputs = DigitTeacher().generate(digit_batch(digit_test))
    acc = accuracy(outputs, [s.answer for s in digit_test])
    assert 0.85 < acc < 1.0, acc
    text = outputs[0].text
    # Its own style: numbered steps and an "Answer:" line, no think tags.
    assert "<think>" not in text and text.startswith("1. ") and "\n\nAnswer: " in text
    assert outputs[0].completion_tokens == len(text.split())


def test_digit_reader_brief_detail(digit_test):
    seeds = digit_test[:60]
    full = DigitTeacher().generate(digit_batch(seeds))
    brief = PythonTeacher(SimpleNamespace(
        name="d", callable="siqkit.teachers.builtin.digit_reader:DigitTeacher",
        options={"detail": "brief"})).generate(digit_batch(seeds))
    assert [parse_cot(o.text).answer for o in brief] == [parse_cot(o.text).answer for o in full]
    for f, b in zip(full, brief):
        a, c = re.findall(r"So the (?:first|second) number is (\d+)\.", f.text)
        assert b.text.startswith(f"1. The numbers are {a} and {c}.\n2. ")
        assert b.text.endswith(f"\n\nAnswer: {parse_cot(f.text).answer}") and b.text.count("\n") == 3


def test_digit_reader_works_two_step_questions_in_two_steps():
    cfg = SimpleNamespace(name="digits", type="digits", num_images={"test": 200}, max_digits=1,
                          operations=["add_add", "add_multiply", "multiply_add"], test_fraction=0.25, splits=None)
    seeds = list(DigitsSource(cfg, 0).read())
    brief = DigitTeacher(detail="brief").generate(digit_batch(seeds))
    assert 0.85 < accuracy(brief, [s.answer for s in seeds]) < 1.0
    read_right = 0
    for s, out in zip(seeds, brief):
        a, b, c = s.metadata["numbers"]
        if not out.text.startswith(f"1. The numbers are {a}, {b} and {c}.\n"):
            continue  # a misread glyph
        read_right += 1
        first, then = {"add_add": ("+", "+"), "add_multiply": ("+", "×"),
                       "multiply_add": ("×", "+")}[s.metadata["operation"]]
        mid = a + b if first == "+" else a * b
        assert out.text == (f"1. The numbers are {a}, {b} and {c}.\n2. {a} {first} {b} = {mid}.\n"
                            f"3. {mid} {then} {c} = {s.answer}.\n\nAnswer: {s.answer}")
    assert read_right > 0.85 * len(seeds)
    short = DigitTeacher(detail="short").generate(digit_batch(seeds[:20]))
    assert all(o.text.count("\n") == 2 and o.text.count("=") == 2 for o in short)
    full = DigitTeacher(detail="full").generate(digit_batch(seeds[:20]))
    assert all("Third number: cell 5" in o.text for o in full)


def test_digit_reader_trains_only_on_the_train_glyph_pool():
    from sklearn.datasets import load_digits

    from siqkit.seeds.sources.digits import split_glyphs

    data = load_digits().data
    pools = split_glyphs(len(data), 0.25, seed=0)
    svc = DigitTeacher(seed=0, test_fraction=0.25).model.calibrated_classifiers_[0].estimator
    assert svc.shape_fit_[0] == len(pools["train"])
    train_rows = {row.tobytes() for row in data[pools["train"]]}
    test_only = {row.tobytes() for row in data[pools["test"]]} - train_rows
    support = {row.tobytes() for row in svc.support_vectors_}
    assert support <= train_rows and not support & test_only


def test_digit_reader_never_reads_metadata(digit_test):
    seeds = digit_test[:100]
    poisoned = DigitTeacher().generate(digit_batch(seeds))
    clean = DigitTeacher().generate(digit_batch(seeds, metadata={}))
    assert [o.text for o in poisoned] == [o.text for o in clean]


def test_digit_reader_sampling_and_module_function(digit_test):
    seeds = digit_test[:40]
    greedy = digit_reader.generate(digit_batch(seeds))
    sampled = digit_reader.generate(digit_batch(seeds, temperature=1.0))
    assert [parse_cot(o.text).answer for o in greedy] == [parse_cot(o.text).answer for o in sampled]
    assert any(g.text != s.text for g, s in zip(greedy, sampled))


def test_digit_reader_errors_are_outputs(digit_test):
    good = Image.open(io.BytesIO(digit_test[0].images[0]))
    outs = DigitTeacher().generate([
        inp("a", "what is the sum of the two numbers?", Image.new("RGB", (50, 50), "white")),
        inp("b", "what is the quotient of the two numbers?", good),
        inp("c", digit_test[0].question, good),
    ])
    assert [o.finish_reason for o in outs] == ["error", "error", "stop"]
    assert "layout" in outs[0].error and "names no sum" in outs[1].error


def test_digit_reader_reads_inverted_ink(digit_test):
    s = digit_test[1]
    image = Image.open(io.BytesIO(s.images[0])).convert("RGB")
    inverted = Image.fromarray(255 - np.asarray(image))
    normal, flipped = DigitTeacher().generate(
        [inp("a", s.question, image), inp("a", s.question, inverted)])
    assert parse_cot(normal.text).answer == parse_cot(flipped.text).answer
