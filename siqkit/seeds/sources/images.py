"""Loading and checking the images a seed row points at.

:class:`ImageLoader` turns an image reference from a row (a path relative to the
dataset root, or raw bytes from a Parquet/Hugging Face column) into the original
file bytes, or into an :class:`Problem` saying why it cannot be used. Every
image is fully decoded once (``Image.open(...).load()``) so that a corrupt file is
quarantined here rather than crashing a teacher hours later; the verdict is cached
by resolved path (or by content digest for inline bytes), because many questions
usually share one image.

Bounds, whatever the data holds: a path that is not a regular file (a FIFO, a device,
a socket) is refused from its ``stat``, before it is opened, so it cannot hang the
stage; a file over ``max_bytes`` is refused before it is read, and an image over
``max_pixels`` from its header, before its pixels are decoded (``image too large``).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
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
NOT_REGULAR = "not a regular file"
TOO_LARGE = "image too large"

# File contents kept for rows that share an image: small, so that the seeds stage holds
# about this much image data however many distinct images a source has.
CACHE_BYTES = 32 * 2**20
MAX_IMAGE_MB = 64.0  # default cap on one image file's size
MAX_IMAGE_PIXELS = 64_000_000  # default cap on width x height (8000 x 8000)


class Problem(NamedTuple):
    """Why a value (an image, an answer) cannot be used: a reject reason and a short detail."""

    reason: str
    detail: str = ""


def check_image_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Problem | None:
    """Decode ``data`` fully; return None when it is a complete image, else the problem.

    PIL reads only the header in ``open`` and the pixels in ``load``: a failure in
    ``open`` means "not an image at all", a failure in ``load`` means the header is
    fine but the pixel data is cut short or corrupt. An image of more than
    ``max_pixels`` is refused from its header, before any pixel is decoded.
    """
    try:
        with warnings.catch_warnings():
            # A large-but-allowed image only warns; we neither want the noise nor to
            # change PIL's global bomb limit, which still rejects absurd sizes.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # beyond even PIL's own limit
        return Problem(TOO_LARGE, _short(exc))
    except Exception as exc:  # PIL raises a zoo of types for garbage input
        return Problem(UNREADABLE, _short(exc))
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        return Problem(TOO_LARGE, f"{width}x{height} = {width * height:,} pixels, over max_image_pixels={max_pixels:,}")
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

    def __init__(self, root: Path, cache_bytes: int | None = None,
                 max_bytes: int = int(MAX_IMAGE_MB * 2**20), max_pixels: int = MAX_IMAGE_PIXELS):
        self.root = Path(root).resolve()
        self._cache_bytes = CACHE_BYTES if cache_bytes is None else cache_bytes
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
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
            data = self._read(resolved, ref)
        except FileNotFoundError:
            return self._remember(key, Problem(NOT_FOUND, ref))
        except IsADirectoryError:
            return self._remember(key, Problem(UNREADABLE, f"{ref} is a directory"))
        except OSError as exc:
            return self._remember(key, Problem(UNREADABLE, f"{ref}: {_short(exc)}"))
        if isinstance(data, Problem):
            return self._remember(key, data)
        if verdict is ...:
            problem = check_image_bytes(data, self.max_pixels)
            if problem is not None:
                return self._remember(key, Problem(problem.reason, f"{ref}: {problem.detail}"))
            self._verdicts[key] = None
        self._keep(key, data)
        return data

    def _read(self, resolved: Path, ref: str) -> bytes | Problem:
        """The file's bytes, or why they are not read: not a regular file, or too large.

        The type is checked on ``stat`` before any open (opening a FIFO for reading blocks
        until a writer comes), and again on the open descriptor (non-blocking), so a file
        swapped for a FIFO in between cannot hang the read either.
        """
        st = os.stat(resolved)
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(ref)
            return Problem(NOT_REGULAR, f"{ref} is a {_file_kind(st.st_mode)}")
        if st.st_size > self.max_bytes:
            return Problem(TOO_LARGE, f"{ref}: {st.st_size:,} bytes, over max_image_mb={self.max_bytes / 2**20:g}")
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return Problem(NOT_REGULAR, f"{ref} is a {_file_kind(st.st_mode)}")
            data = f.read(min(st.st_size, self.max_bytes) + 1)  # sized by the file: no cap-sized buffer
            if len(data) > self.max_bytes or (len(data) > st.st_size and f.read(1)):
                data += f.read(self.max_bytes + 1 - len(data))  # it grew after the stat
        if len(data) > self.max_bytes:
            return Problem(TOO_LARGE, f"{ref}: over max_image_mb={self.max_bytes / 2**20:g}")
        return data

    def load_bytes(self, data: bytes) -> bytes | Problem:
        """Validate inline image bytes (a Parquet binary cell or an HF Image struct)."""
        if not data:
            return Problem(UNREADABLE, "empty bytes")
        if len(data) > self.max_bytes:
            return Problem(TOO_LARGE, f"{len(data):,} bytes, over max_image_mb={self.max_bytes / 2**20:g}")
        key = "bytes:" + hashlib.blake2b(data, digest_size=16).hexdigest()
        verdict = self._verdicts.get(key, ...)
        if verdict is ...:
            verdict = self._remember(key, check_image_bytes(data, self.max_pixels))
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


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def image_loader(cfg: object, root: Path) -> ImageLoader:
    """The loader for one source, with the recipe's ``max_image_mb`` and ``max_image_pixels``."""
    mb = getattr(cfg, "max_image_mb", None)
    pixels = getattr(cfg, "max_image_pixels", None)
    return ImageLoader(root, max_bytes=int((MAX_IMAGE_MB if mb is None else mb) * 2**20),
                       max_pixels=MAX_IMAGE_PIXELS if pixels is None else int(pixels))
