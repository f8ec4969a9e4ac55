"""Loading a recipe: YAML, ``--set`` overrides, ``${ENV}`` substitution, validation, paths.

Any problem becomes a :class:`~siqkit.errors.RecipeError` whose message is one line naming
the key path, e.g. ``teachers[1].backend: unknown backend 'vlm'; expected one of …``.

YAML is read with a safe loader that also refuses duplicate keys (the later one would
silently win), aliases that expand to more than :data:`MAX_NODES` values (a few hundred
bytes of nested aliases can expand to billions: the size is counted on the composed
graph, before anything is expanded), and nesting deeper than :data:`MAX_DEPTH`.

Path rules: relative paths in a recipe are resolved against the recipe file's folder,
except ``run.dir``, which is relative to the current directory (the default is
``runs/<run.name>``), so that runs land where the user works, not beside the recipe.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from siqkit import section
from siqkit.errors import RecipeError
from siqkit.recipe.schema import INTERNAL_KEYS, Recipe
from siqkit.recipe.shrink import prepare_tiny

MAX_NODES = 100_000  # values in a recipe once its aliases are expanded
MAX_DEPTH = 50  # nesting levels; a real recipe uses fewer than 10


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key '{key}' (first given on line {seen[key] + 1})",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _graph_size(node: yaml.Node) -> None:
    """Count the values of the composed graph as if its aliases were expanded, without
    expanding them (shared nodes are counted once and multiplied); refuse a bomb or a cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_DEPTH} levels", n.start_mark)
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _TooBig("an alias refers to a value that contains it", n.start_mark)
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c, depth + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        active.discard(key)
        if total > MAX_NODES:
            raise _TooBig(f"more than {MAX_NODES:,} values once its aliases are expanded (an alias bomb?)",
                          n.start_mark)
        sizes[key] = total
        return total

    size(node, 0)


class _TooBig(Exception):
    def __init__(self, problem: str, mark):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _UnsafeYAML(RecipeError):
    """YAML that parses but is refused: an alias bomb or cycle, deep nesting, a duplicate key."""


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text safely and boundedly; raise RecipeError naming ``where`` and the line."""
    loader = _RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _graph_size(node)
        return loader.construct_document(node)
    except (yaml.YAMLError, _TooBig) as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        unsafe = isinstance(e, (_TooBig, yaml.constructor.ConstructorError)) and problem.startswith(
            ("duplicate key", "nested", "more than", "an alias"))
        raise (_UnsafeYAML if unsafe else RecipeError)(f"{where}{at}: invalid YAML: {problem}") from None
    except RecursionError:
        raise _UnsafeYAML(f"{where}: invalid YAML: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def load_recipe(path: str | Path, overrides: list[str] | None = None, tiny: bool = False) -> Recipe:
    """Read, override, substitute, validate and resolve a recipe; raise RecipeError on any problem.

    With ``tiny``, checkpoint paths may be unset and the recipe is rewritten for a tiny run
    (:mod:`siqkit.recipe.shrink`); nothing is built or written here.
    """
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: a folder, not a recipe file; give the .yaml file itself")
    if not path.is_file():
        what = "not a regular file" if path.exists() else "recipe file not found"
        raise RecipeError(f"{path}: {what}")
    if path.stat().st_size > 1 << 20:
        raise RecipeError(f"{path}: {path.stat().st_size:,} bytes; a recipe is at most 1 MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    for item in overrides or []:
        apply_override(data, item)
    data = substitute_env(data, tiny=tiny)
    for key in INTERNAL_KEYS:
        if key in data:
            raise RecipeError(f"{key}: unknown key '{key}'; expected one of {', '.join(_allowed_keys(()))}")
    try:
        recipe = Recipe.model_validate(data, context={"tiny": tiny})
    except ValidationError as e:
        raise RecipeError(format_validation_error(e)) from None
    recipe.path = path
    if recipe.run.name is None:
        recipe.run.name = path.stem
    _resolve_paths(recipe, path.parent)
    recipe.is_tiny = tiny
    _check_files(recipe)
    if tiny:
        prepare_tiny(recipe)
    return recipe


def apply_override(data: dict, item: str) -> None:
    """Apply one ``key.path[index]=value`` override; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item}: expected KEY=VALUE, e.g. student.path=/models/x")
    try:
        value = parse_yaml(raw, f"--set {key.strip()}") if raw.strip() else ""
    except _UnsafeYAML:
        raise  # a bomb, a cycle, deep nesting or a duplicate key stays refused
    except RecipeError:
        value = raw  # other unparsable text is taken as a plain string
    parts = _split_key(key.strip(), item)
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        node = _descend(node, part, default=[] if isinstance(nxt, int) else {}, item=item)
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise RecipeError(f"--set {item}: index [{last}] is out of range")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise RecipeError(f"--set {item}: '{last}' is not inside a mapping")
        node[last] = value


def _split_key(key: str, item: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in key.split("."):
        m = re.fullmatch(r"([A-Za-z_][\w-]*)?((?:\[-?\d+\])*)", token)
        if not m or (not m.group(1) and not m.group(2)):
            raise RecipeError(f"--set {item}: cannot parse key '{key}'")
        if m.group(1):
            parts.append(m.group(1))
        parts.extend(int(x) for x in re.findall(r"\[(-?\d+)\]", m.group(2)))
    return parts


def _descend(node: Any, part: str | int, default: Any, item: str) -> Any:
    if isinstance(part, int):
        if not isinstance(node, list) or not -len(node) <= part < len(node):
            raise RecipeError(f"--set {item}: index [{part}] is out of range")
        return node[part]
    if not isinstance(node, dict):
        raise RecipeError(f"--set {item}: '{part}' is not inside a mapping")
    if node.get(part) is None:
        node[part] = default
    return node[part]


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(node: Any, where: str = "", tiny: bool = False) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the recipe.

    With ``tiny``, a string under a model's settings (``teachers``, ``student``,
    ``export.model``) that names an unset variable becomes null instead of an error: a tiny
    run builds its models and needs no checkpoint paths. Elsewhere (data paths, the run
    folder) an unset variable is an error under ``tiny`` too: a smoke test reads real data.
    """
    if isinstance(node, dict):
        return {k: substitute_env(v, _join(where, k), tiny) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, f"{where}[{i}]", tiny) for i, v in enumerate(node)]
    if isinstance(node, str):
        if tiny and _model_setting(where) and any(
                m.group(2) is None and m.group(1) not in os.environ for m in _ENV.finditer(node)):
            return None

        def repl(m: re.Match) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is not None:
                    return m.group(2)
                raise RecipeError(
                    f"{where}: environment variable {m.group(1)} is not set "
                    f"(export it, or pass --set {where}=VALUE)"
                )
            return value

        return _ENV.sub(repl, node)
    return node


def _model_setting(where: str) -> bool:
    """A key path inside a model's settings, which --tiny replaces with a twin."""
    return where.startswith(("teachers[", "student.")) or where == "export.model"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


# ------------------------------------------------------------------------ error text


def format_validation_error(err: ValidationError) -> str:
    """One line: the first problem with its key path in the recipe, and how many more there are."""
    return section.format_validation_error(err, Recipe, hidden=INTERNAL_KEYS)


def _allowed_keys(loc: tuple) -> list[str]:
    return section.allowed_keys(Recipe, loc, hidden=INTERNAL_KEYS)


# ------------------------------------------------------------------------ resolution


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    for src in recipe.seeds.sources:
        src.path, src.root = fix(src.path), fix(src.root)
    for t in recipe.teachers:
        t.path, t.mmproj = fix(t.path), fix(t.mmproj)
    if recipe.student is not None:
        recipe.student.path = fix(recipe.student.path)
    recipe.export.model = fix(recipe.export.model)
    if recipe.run.dir is not None:
        recipe.run.dir = recipe.run.dir.expanduser()
    # The run folder, or the first of its parents that exists, must be a folder.
    for folder in (recipe.run_dir, *recipe.run_dir.absolute().parents):
        if folder.exists():
            if not folder.is_dir():
                raise RecipeError(f"run.dir: {folder} exists and is not a folder; choose another run.dir")
            break


def _check_files(recipe: Recipe) -> None:
    for i, src in enumerate(recipe.seeds.sources):
        where = f"seeds.sources[{i}]"
        if src.path is not None and not src.path.exists():
            raise RecipeError(f"{where}.path: file not found: {src.path}")
        if src.type == "hf_disk" and src.path is not None and not src.path.is_dir():
            raise RecipeError(f"{where}.path: expected a folder written by save_to_disk: {src.path}")
        if src.type in ("jsonl", "csv", "parquet", "images") and src.path is not None and not src.path.is_file():
            what = "a folder" if src.path.is_dir() else "a FIFO, device or socket"
            raise RecipeError(f"{where}.path: expected a regular file, got {what}: {src.path}")
        if src.root is not None and not src.root.is_dir():
            raise RecipeError(f"{where}.root: folder not found: {src.root}")
    for i, t in enumerate(recipe.teachers):
        for key in ("path", "mmproj"):
            p = getattr(t, key)
            if p is not None and not p.exists() and not recipe.is_tiny:
                raise RecipeError(f"teachers[{i}].{key}: file not found: {p}")
    st = recipe.student
    if st is not None and st.path is not None and not recipe.is_tiny and not (st.path / "config.json").is_file():
        raise RecipeError(f"student.path: no Hugging Face checkpoint (config.json) in {st.path}")
