"""What makes a teacher's outputs its own, as recorded with each generation and in work keys."""

from __future__ import annotations

from typing import Any


def teacher_identity(teacher: Any) -> dict:
    """What makes a teacher's outputs its own: backend, model and the settings that change them."""
    identity = {
        "name": teacher.name, "backend": teacher.backend,
        "model": str(teacher.path or teacher.callable or teacher.model or ""),
        "mmproj": str(teacher.mmproj or ""), "quantization": teacher.quantization,
        "options": teacher.options,
    }
    if getattr(teacher, "max_pixels", None) is not None:  # only when set: older keys stay valid
        identity["max_pixels"] = teacher.max_pixels
    return identity
