"""Near-identical images: a perceptual fingerprint per stored image, and clusters of them.

A fingerprint (:func:`fingerprint`) has two parts:

* ``phash``, the 64-bit DCT hash: grayscale, resize to 32x32, 2-D DCT-II, keep the 8x8
  lowest frequencies, one bit per coefficient for "above the median of the 63 non-DC ones".
  Resizing, re-encoding (PNG to JPEG) and small brightness changes move few bits; a
  different photograph moves about half of them;
* ``thumb``, the image averaged down to 16x16 RGB (768 bytes). The hash is blind to colour
  and coarse on small synthetic pictures (a red square and a brown circle in the middle of a
  plain background hash alike; so do two handwritten digits), so two images are
  near-identical only when their hashes are at most ``max_distance`` bits apart *and* no
  thumbnail value differs by more than ``MAX_THUMB_DIFF`` (of 255). JPEG re-encoding and
  resizing move thumbnails by a few units on photographs and by up to about 40 on sharp
  synthetic shapes; a changed digit or object moves them by 90 or more.

:func:`image_clusters` finds candidates by the pigeonhole principle (two hashes at most
``d`` bits apart agree exactly on one of ``d + 1`` disjoint bit ranges), checks each with a
popcount and the thumbnails, and links the pairs that pass. Fingerprints are cached in the
store's ``media_phash`` table, so a rerun decodes no image twice.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from PIL import Image
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from siqkit.progress import track
from siqkit.store import Store


MAX_THUMB_DIFF = 48
THUMB = 16


def phash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of an image (see the module docstring)."""
    gray = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dctn(gray, type=2, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def fingerprint(image: Image.Image) -> tuple[int, bytes]:
    """(64-bit perceptual hash, 16x16 RGB thumbnail bytes) of an image."""
    thumb = image.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX)
    return phash(image), np.asarray(thumb, dtype=np.uint8).tobytes()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between two arrays of uint64 hashes."""
    x = np.bitwise_xor(a, b)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def stored_fingerprints(store: Store, digests: list[str]) -> dict[str, tuple[int, bytes]]:
    """Fingerprint of each readable stored image, computed once and cached in ``media_phash``."""
    if not digests:
        return {}
    have = {h: (p, t) for h, p, t in store.con.execute(
        "SELECT hash, phash, thumb FROM media_phash WHERE hash IN (SELECT unnest(?))", [digests]).fetchall()}
    todo = [d for d in digests if d not in have]
    rows = []
    for d in track(todo, "curate: image hashes", unit="images") if todo else ():
        try:
            value: tuple = fingerprint(store.media.image(d))
        except (OSError, ValueError):
            value = (None, None)  # unreadable: matches nothing but itself
        rows.append((d, *value))
        have[d] = value
    if rows:
        table = pa.table({"hash": [r[0] for r in rows], "phash": pa.array([r[1] for r in rows], pa.uint64()),
                          "thumb": pa.array([r[2] for r in rows], pa.binary())})
        with store.transaction() as con:
            con.register("_phash_rows", table)
            con.execute("INSERT OR REPLACE INTO media_phash SELECT * FROM _phash_rows")
            con.unregister("_phash_rows")
    return {h: v for h, v in have.items() if v[0] is not None}


def image_clusters(hashes: np.ndarray, max_distance: int, thumbs: np.ndarray | None = None) -> np.ndarray:
    """Cluster label per image: near-identical images (see the module docstring) share one.
    ``thumbs``: (images, 768) uint8, or None to compare hashes only."""
    n = len(hashes)
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs = [np.zeros((0, 2), dtype=np.int64)]
    if max_distance > 0 and n > 1:
        bounds = np.linspace(0, 64, max_distance + 2).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            part = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
            order = np.argsort(part, kind="stable")
            sp = part[order]
            for d in range(1, n):
                same = np.flatnonzero(sp[d:] == sp[:-d])
                if len(same) == 0:
                    break
                a, b = order[same], order[same + d]
                close = hamming(hashes[a], hashes[b]) <= max_distance
                if thumbs is not None:
                    diff = np.abs(thumbs[a].astype(np.int16) - thumbs[b].astype(np.int16)).max(axis=1)
                    close &= diff <= MAX_THUMB_DIFF
                pairs.append(np.stack([a[close], b[close]], axis=1))
    else:
        order = np.argsort(hashes, kind="stable")
        sh = hashes[order]
        same = np.flatnonzero(sh[1:] == sh[:-1])
        a, b = order[same], order[same + 1]
        if thumbs is not None:
            keep = np.abs(thumbs[a].astype(np.int16) - thumbs[b].astype(np.int16)).max(axis=1) <= MAX_THUMB_DIFF
            a, b = a[keep], b[keep]
        pairs.append(np.stack([a, b], axis=1))
    p = np.concatenate(pairs)
    graph = coo_matrix((np.ones(len(p), dtype=np.int8), (p[:, 0], p[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]
