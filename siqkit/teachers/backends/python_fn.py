"""A teacher that is a plain Python function (``backend: python``).

The target is named ``"package.module:attr"`` (a dotted path after the colon also works,
e.g. ``"pkg.mod:Class.method"``). It is either

- a **function** called with a **batch**, a ``list[TeacherInput]``, plus ``options`` as
  keyword arguments; or
- a **class** (any object factory) built once as ``Class(**options)``, whose
  ``generate(batch)`` is then called; its ``close()``, if any, runs on :meth:`close`.

Either way the call returns a list of the same length whose items are a ``str`` (the raw
output, taken as ``finish_reason="stop"``) or a
:class:`~siqkit.teachers.base.TeacherOutput` for the input at that position. If the call
raises or returns the wrong number of results, the batch is retried one input at a time,
so only the failing inputs become error outputs.

Config attributes read (default in brackets):

- ``name`` [``"python"``]: the teacher's name;
- ``callable`` (required): ``"module:function"`` or ``"module:Class"``;
- ``options`` [``{}``]: keyword arguments for the class, or for every call of the function.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import replace
from collections.abc import Callable
from typing import Any

from siqkit.teachers.backends import TeacherLoadError, describe, error_output, opt
from siqkit.teachers.base import TeacherInput, TeacherOutput


def import_callable(spec: str) -> Callable:
    """Import ``"module:attr.path"``; raises :class:`TeacherLoadError` saying what failed."""
    if not isinstance(spec, str) or ":" not in spec:
        raise TeacherLoadError(f"teacher callable must look like 'package.module:function', got {spec!r}")
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is reported the same way
        raise TeacherLoadError(f"cannot import module '{module_name}' for teacher callable '{spec}': {describe(exc)}") from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise TeacherLoadError(f"teacher callable '{spec}': '{module_name}' has no attribute '{attr_path}'") from exc
    if not callable(obj):
        raise TeacherLoadError(f"teacher callable '{spec}' is not callable (type {type(obj).__name__})")
    return obj


class PythonTeacher:
    """Runs a batch through a Python function; see the module docstring for its contract."""

    def __init__(self, cfg: Any, fn: Callable | None = None):
        spec = opt(cfg, "callable", None)
        if fn is None and spec is None:
            raise TeacherLoadError("backend 'python' needs 'callable: module:function'")
        self.name = opt(cfg, "name", "python")
        options = dict(opt(cfg, "options", {}))
        target = fn if fn is not None else import_callable(spec)
        self._instance = None
        if inspect.isclass(target):
            try:
                self._instance = target(**options)
            except Exception as exc:  # noqa: BLE001 - a constructor failure is a load failure
                raise TeacherLoadError(f"teacher '{self.name}': {spec} raised {describe(exc)} when built") from exc
            if not callable(getattr(self._instance, "generate", None)):
                raise TeacherLoadError(f"teacher '{self.name}': {spec} has no generate(batch) method")
            self.fn = self._instance.generate
        else:
            self.fn = functools.partial(target, **options) if options else target

    def generate(self, batch: list[TeacherInput]) -> list[TeacherOutput]:
        if not batch:
            return []
        try:
            return self._convert(batch, self.fn(list(batch)))
        except Exception:  # noqa: BLE001 - fall back to one at a time to isolate the bad input
            if len(batch) == 1:
                return [self._one(batch[0])]
            return [self._one(inp) for inp in batch]

    def _one(self, inp: TeacherInput) -> TeacherOutput:
        try:
            return self._convert([inp], self.fn([inp]))[0]
        except Exception as exc:  # noqa: BLE001 - a bad sample must not stop the batch
            return error_output(inp, f"teacher function raised {describe(exc)}")

    def _convert(self, batch: list[TeacherInput], results: Any) -> list[TeacherOutput]:
        if not isinstance(results, (list, tuple)):
            raise TypeError(f"teacher function returned {type(results).__name__}, expected a list")
        if len(results) != len(batch):
            raise ValueError(f"teacher function returned {len(results)} results for {len(batch)} inputs")
        out = []
        for inp, res in zip(batch, results):
            if isinstance(res, str):
                out.append(TeacherOutput(key=inp.key, text=res, finish_reason="stop"))
            elif isinstance(res, TeacherOutput) and res.key in (inp.key, "", None):
                out.append(replace(res, key=inp.key))
            elif isinstance(res, TeacherOutput):
                # Results must come back in input order; a foreign key means they did not.
                out.append(error_output(inp, f"teacher function returned key {res.key!r} for input {inp.key!r}"))
            else:
                out.append(error_output(inp, f"teacher function returned a {type(res).__name__}, expected str or TeacherOutput"))
        return out

    def close(self) -> None:
        closer = getattr(self._instance, "close", None)
        if callable(closer):
            closer()
