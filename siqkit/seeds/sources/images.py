"""Loading and checking the images a seed row points at.

:class:`ImageLoader` turns an image reference from a row (a path relative to the
dataset root, or raw bytes from a Parquet/Hugging Face column) into the original
file bytes, or into an :class:`Problem` saying why it cannot be used. Every
image is fully decoded once (``Image.open(...).load()``) so that a corrupt file is
quarantined here rather than crashing a teacher hours later; the verdict is cached
by resolved path (or by content digest for inline bytes), because many questions
usually share one image.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

from PIL import Image

# Reject reasons produced here (the full list is in ``siqkit.seeds.sources``).
UNREADABLE = "unreadable image"
TRUNCATED = "truncated image"
NOT_FOUND = "image not found"
OUTSIDE_ROOT = "image path outside dataset root"


class Problem(NamedTuple):
    """Why a value (an image, an answer) cannot be used: a reject reason and a short detail."""

    reason: str
    detail: str = ""


def check_image_bytes(data: bytes) -> Problem | None:
    """Decode ``data`` fully; return None when it is a complete image, else the problem.

    PIL reads only the header in ``open`` and the pixels in ``load``: a failure in
    ``open`` means "not an image at all", a failure in ``load`` means the header is
    fine but the pixel data is cut short or corrupt.
    """
    try:
        with warnings.catch_warnings():
            # A large-but-allowed image only warns; we neither want the noise nor to
            # change PIL's global bomb limit, which still rejects absurd sizes.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises a zoo of types for garbage input
        return Problem(UNREADABLE, _short(exc))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Exception as exc:
        return Problem(TRUNCATED, _short(exc))
    finally:
        image.close()
    return None


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # PIL sometimes embeds the BytesIO repr, which means nothing to a user.
    if "<_io.BytesIO" in text:
        text = text.split("<_io.BytesIO")[0].rstrip(" :")
    return text[:200]


class ImageLoader:
    """Resolves, confines, reads and validates images for one source.

    ``root`` is the dataset root: every path reference must resolve (symlinks
    followed) to a file inside it. ``cache_bytes`` bounds the memory spent keeping
    file contents around; the decode verdict is always kept, so an evicted image is
    re-read from disk but never decoded twice.
    """

    def __init__(self, root: Path, cache_bytes: int = 256 * 1024 * 1024):
        self.root = Path(root).resolve()
        self._cache_bytes = cache_bytes
        self._refs: dict[str, Path | Problem] = {}  # row's path string -> resolved file
        self._verdicts: dict[str, Problem | None] = {}  # resolved file -> decode verdict
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._data_size = 0

    def load_path(self, ref: str) -> bytes | Problem:
        """The bytes of the image file ``ref`` (relative to root, or absolute inside it)."""
        where = self._refs.get(ref)
        if where is None:
            where = self._refs[ref] = self._resolve(ref)
        if isinstance(where, Problem):
            return where
        return self._load(where, ref)

    def _resolve(self, ref: str) -> Path | Problem:
        try:
            resolved = (self.root / ref).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
            return Problem(NOT_FOUND, f"{ref}: {_short(exc)}")
        # Confinement is checked before existence so that a row cannot probe which
        # files exist elsewhere on the machine.
        if not resolved.is_relative_to(self.root):
            return Problem(OUTSIDE_ROOT, ref)
        return resolved

    def _load(self, resolved: Path, ref: str) -> bytes | Problem:
        key = str(resolved)
        verdict = self._verdicts.get(key, ...)
        if verdict is not ... and verdict is not None:
            return verdict
        data = self._data.get(key)
        if data is not None:
            self._data.move_to_end(key)
            return data
        try:
            data = resolved.read_bytes()
        except FileNotFoundError:
            return self._remember(key, Problem(NOT_FOUND, ref))
        except IsADirectoryError:
            return self._remember(key, Problem(UNREADABLE, f"{ref} is a directory"))
        except OSError as exc:
            return self._remember(key, Problem(UNREADABLE, f"{ref}: {_short(exc)}"))
        if verdict is ...:
            problem = check_image_bytes(data)
            if problem is not None:
                return self._remember(key, Problem(problem.reason, f"{ref}: {problem.detail}"))
            self._verdicts[key] = None
        self._keep(key, data)
        return data

    def load_bytes(self, data: bytes) -> bytes | Problem:
        """Validate inline image bytes (a Parquet binary cell or an HF Image struct)."""
        if not data:
            return Problem(UNREADABLE, "empty bytes")
        key = "bytes:" + hashlib.blake2b(data, digest_size=16).hexdigest()
        verdict = self._verdicts.get(key, ...)
        if verdict is ...:
            verdict = self._remember(key, check_image_bytes(data))
        return data if verdict is None else verdict

    def _remember(self, key: str, verdict: Problem | None):
        self._verdicts[key] = verdict
        return verdict

    def _keep(self, key: str, data: bytes) -> None:
        if len(data) > self._cache_bytes:
            return
        self._data[key] = data
        self._data_size += len(data)
        while self._data_size > self._cache_bytes:
            _, old = self._data.popitem(last=False)
            self._data_size -= len(old)
