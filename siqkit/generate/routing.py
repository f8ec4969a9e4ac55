"""Which teacher answers which seed.

Each teacher's ``route`` is a filter (sources, splits, task labels, a question regex,
with or without images; all given conditions must hold). With ``generate.routing: first`` a seed goes to the
first teacher, in recipe order, whose route matches — so a catch-all teacher listed last
takes "the rest". With ``routing: all`` it goes to every matching teacher.
"""

from __future__ import annotations

import re
from typing import Any

from siqkit.annotate.labels import task_labels


class Router:
    def __init__(self, teachers: list[Any], mode: str):
        self.teachers = teachers
        self.mode = mode
        self._regex = {t.name: re.compile(t.route.question_regex, re.IGNORECASE)
                       for t in teachers if t.route.question_regex}

    def matches(self, teacher: Any, source: str, split: str, question: str, has_image: bool) -> bool:
        r = teacher.route
        if r.sources is not None and source not in r.sources:
            return False
        if r.splits is not None and split not in r.splits:
            return False
        if r.images is not None and r.images != has_image:
            return False
        rx = self._regex.get(teacher.name)
        if rx is not None and not rx.search(question):
            return False
        if r.labels is not None:
            labels = task_labels(question, source, has_image=has_image)
            if not set(r.labels) & set(labels):
                return False
        return True

    def assign(self, source: str, split: str, question: str, has_image: bool) -> list[str]:
        """Names of the teachers this seed goes to."""
        out = []
        for t in self.teachers:
            if self.matches(t, source, split, question, has_image):
                out.append(t.name)
                if self.mode == "first":
                    break
        return out
