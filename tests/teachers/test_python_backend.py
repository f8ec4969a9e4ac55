"""The python-callable teacher and the registry."""

import textwrap
from types import SimpleNamespace

import pytest

from siqkit.errors import SiqkitError
from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.base import TeacherOutput
from siqkit.teachers.registry import load_teacher

MODULE = '''
from siqkit.teachers.base import TeacherOutput

CALLS = []

def upper(batch):
    CALLS.append(len(batch))
    return [inp.question.upper() for inp in batch]

def outputs(batch):
    return [TeacherOutput(key=inp.key, text="t", finish_reason="length", completion_tokens=3) for inp in batch]

def picky(batch):
    if any("bad" in inp.question for inp in batch):
        raise RuntimeError("cannot handle " + ", ".join(i.question for i in batch if "bad" in i.question))
    return ["ok " + inp.question for inp in batch]

def short(batch):
    return ["only one"]

def weird(batch):
    return [42 for _ in batch]

def reversed_outputs(batch):
    return [TeacherOutput(key=inp.key, text="x", finish_reason="stop") for inp in reversed(batch)]

NOT_CALLABLE = 3

def with_prefix(batch, prefix="?"):
    return [prefix + inp.question for inp in batch]

class Stateful:
    closed = []

    def __init__(self, suffix="!"):
        self.suffix = suffix

    def generate(self, batch):
        return [inp.question + self.suffix for inp in batch]

    def close(self):
        Stateful.closed.append(self.suffix)

class NoGenerate:
    pass

class Holder:
    @staticmethod
    def method(batch):
        return ["held"] * len(batch)
'''


@pytest.fixture
def mod(tmp_path, monkeypatch):
    (tmp_path / "fake_teachers_mod.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fake_teachers_mod"


def cfg(spec):
    return SimpleNamespace(name="py", backend="python", callable=spec)


def test_strings_become_stop_outputs_in_order(mod, mk):
    t = load_teacher(cfg(f"{mod}:upper"))
    out = t.generate([mk("a", "one"), mk("b", "two")])
    assert [(o.key, o.text, o.finish_reason) for o in out] == [("a", "ONE", "stop"), ("b", "TWO", "stop")]
    assert t.name == "py"
    t.close()


def test_called_once_per_batch(mod, mk):
    import fake_teachers_mod

    t = load_teacher(cfg(f"{mod}:upper"))
    fake_teachers_mod.CALLS.clear()
    t.generate([mk(str(i), "q") for i in range(5)])
    assert fake_teachers_mod.CALLS == [5]


def test_teacher_outputs_pass_through(mod, mk):
    out = load_teacher(cfg(f"{mod}:outputs")).generate([mk("k", "q")])
    assert out == [TeacherOutput(key="k", text="t", finish_reason="length", completion_tokens=3)]


def test_dotted_attribute(mod, mk):
    assert load_teacher(cfg(f"{mod}:Holder.method")).generate([mk("k", "q")])[0].text == "held"


def test_function_options_are_keyword_arguments(mod, mk):
    t = load_teacher(SimpleNamespace(name="p", backend="python", callable=f"{mod}:with_prefix", options={"prefix": ">"}))
    assert t.generate([mk("k", "q")])[0].text == ">q"


def test_class_is_built_once_with_options_and_closed(mod, mk):
    import fake_teachers_mod

    t = load_teacher(SimpleNamespace(name="p", backend="python", callable=f"{mod}:Stateful", options={"suffix": "?!"}))
    assert [o.text for o in t.generate([mk("a", "x"), mk("b", "y")])] == ["x?!", "y?!"]
    t.close()
    assert fake_teachers_mod.Stateful.closed == ["?!"]


def test_class_without_generate_is_a_load_error(mod):
    with pytest.raises(TeacherLoadError, match="no generate"):
        load_teacher(cfg(f"{mod}:NoGenerate"))


def test_class_constructor_failure_is_a_load_error(mod):
    with pytest.raises(TeacherLoadError, match="TypeError"):
        load_teacher(SimpleNamespace(name="p", backend="python", callable=f"{mod}:Stateful", options={"bad": 1}))


def test_one_bad_input_does_not_fail_the_batch(mod, mk):
    out = load_teacher(cfg(f"{mod}:picky")).generate([mk("1", "fine"), mk("2", "bad one"), mk("3", "also fine")])
    assert [o.finish_reason for o in out] == ["stop", "error", "stop"]
    assert out[0].text == "ok fine" and out[2].text == "ok also fine"
    assert "RuntimeError" in out[1].error and "bad one" in out[1].error


def test_wrong_length_is_an_error_per_input(mod, mk):
    out = load_teacher(cfg(f"{mod}:short")).generate([mk("1", "a"), mk("2", "b")])
    # Batch of two gets one result: retried one by one, each single call then succeeds.
    assert [o.text for o in out] == ["only one", "only one"]


def test_wrong_type_is_an_error_output(mod, mk):
    (o,) = load_teacher(cfg(f"{mod}:weird")).generate([mk("1", "a")])
    assert o.finish_reason == "error" and "int" in o.error


def test_foreign_keys_are_errors(mod, mk):
    out = load_teacher(cfg(f"{mod}:reversed_outputs")).generate([mk("1", "a"), mk("2", "b")])
    assert [o.finish_reason for o in out] == ["error", "error"]
    assert [o.key for o in out] == ["1", "2"]


def test_empty_batch(mod):
    assert load_teacher(cfg(f"{mod}:upper")).generate([]) == []


@pytest.mark.parametrize(
    "spec, words",
    [
        ("no_such_module_xyz:fn", ["cannot import module 'no_such_module_xyz'", "ModuleNotFoundError"]),
        ("fake_teachers_mod:missing", ["has no attribute 'missing'"]),
        ("fake_teachers_mod:NOT_CALLABLE", ["is not callable (type int)"]),
        ("fake_teachers_mod.upper", ["must look like 'package.module:function'"]),
    ],
)
def test_import_errors_are_clear(mod, spec, words):
    with pytest.raises(TeacherLoadError) as err:
        load_teacher(cfg(spec))
    assert isinstance(err.value, SiqkitError)
    for w in words:
        assert w in str(err.value)


def test_module_raising_on_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_teacher_mod.py").write_text("raise ValueError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TeacherLoadError, match="ValueError: boom at import"):
        load_teacher(cfg("broken_teacher_mod:fn"))


def test_missing_callable():
    with pytest.raises(TeacherLoadError, match="needs 'callable"):
        load_teacher(SimpleNamespace(name="x", backend="python"))


def test_unknown_backend():
    with pytest.raises(TeacherLoadError, match="unknown teacher backend 'sglang'.*llama_cpp, openai, python, transformers, vllm"):
        load_teacher(SimpleNamespace(name="x", backend="sglang"))
