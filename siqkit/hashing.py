"""Short stable digests of JSON-able values: the keys of work and of settings across stages."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(obj: Any, n: int = 24) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``obj`` as JSON (sorted keys, so dict order is moot)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]
