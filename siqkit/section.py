"""The base of every recipe section model (in siqkit.recipe, siqkit.train, siqkit.curate).

Unknown keys are refused (``extra="forbid"``). :func:`format_validation_error` turns a
pydantic ``ValidationError`` into one line that names the key path of the first problem,
e.g. ``stages[1].method: unknown method 'dora'; expected one of auto, qlora, lora, full``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


_TYPE_NAMES = {
    "int": "an integer", "float": "a number", "string": "a string", "bool": "true or false",
    "list": "a list", "dict": "a mapping", "model": "a mapping", "path": "a path",
}


def format_validation_error(err: ValidationError, root: type[BaseModel] | None = None,
                            hidden: tuple[str, ...] = ()) -> str:
    """One line: the first problem with its key path, and how many more there are.

    ``root`` is the model that was validated: an unknown key's message then suggests the keys
    allowed where it stands (except ``hidden`` ones at the top level); without it, none.
    """
    errors = err.errors()
    # a value error raised by a validator may name a sub-key ("[2].name: ..." or "path: ...")
    first = errors[0]
    path = _key_path(first["loc"])
    msg = _describe(first, root, hidden)
    m = re.match(r"((?:\[\d+\]|\.?[A-Za-z_]\w*)+): (.*)", msg) if first["type"] == "value_error" else None
    if m:
        sub = m.group(1)
        if path == "(top level)":
            path = sub.lstrip(".")
        else:
            path += sub if sub.startswith(("[", ".")) else "." + sub
        msg = m.group(2)
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {msg}{tail}"


def allowed_keys(root: type[BaseModel] | None, loc: tuple, hidden: tuple[str, ...] = ()) -> list[str]:
    """The keys the section at key path ``loc`` of a ``root`` model accepts ([] where unknown)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
        if model is None:
            return []
    return [k for k in getattr(model, "model_fields", {}) if model is not root or k not in hidden]


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "union[", "int", "dict[", "list[")) and "." not in str(part):
            continue  # pydantic's union-branch markers are not keys
        else:
            out = f"{out}.{part}" if out else str(part)
    return out or "(top level)"


def _describe(e: dict, root: type[BaseModel] | None, hidden: tuple[str, ...]) -> str:
    kind, loc, value = e["type"], e["loc"], e.get("input")
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, loc[:-1], hidden)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        msg = f"unknown key '{loc[-1]}'"
        if hint:
            msg += f"; did you mean '{hint[0]}'?"
        elif allowed:
            msg += f"; expected one of {', '.join(allowed)}"
        return msg
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        expected = [x.strip(" '") for x in re.split(r",| or ", e["ctx"]["expected"]) if x.strip()]
        field = str(loc[-1]) if not isinstance(loc[-1], int) else "value"
        return f"unknown {field} {value!r}; expected one of {', '.join(expected)}"
    if kind.endswith(("_type", "_parsing")) and kind != "value_error":
        want = kind.rsplit("_", 1)[0].replace("_type", "")
        want = _TYPE_NAMES.get(want.split("_")[0], want)
        return f"expected {want}, got {type(value).__name__} {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return e["msg"].lower()
    msg = e["msg"]
    return msg.removeprefix("Value error, ")


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
