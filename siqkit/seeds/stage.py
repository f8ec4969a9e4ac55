"""The ``seeds`` stage: read every source into the run store, then choose the pool.

1. **Ingest**, one source at a time, each in its own transaction: valid rows become
   seeds (images stored content-addressed, id = hash of question and image hashes);
   malformed rows are quarantined with file, line, field and reason; a seed whose
   content was already seen is dropped as ``duplicate seed``. A source whose
   fingerprint (config + file sizes and times) matches its last finished ingest is
   skipped, so a rerun after a crash redoes only the source that was in flight.
2. **Select** the pool, always recomputed (it is one SQL statement): per source and
   split, at most ``max`` seeds; per split, at most ``seeds.max_total`` seeds shared
   between sources in proportion to their ``weight`` (a source that has fewer than its
   share gives the rest to the others). Which seeds are kept is decided by ranking on
   a hash of the recipe seed and the seed id (:func:`siqkit.store.seeded_hash`), so it is
   deterministic and does not depend on row order.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from siqkit.errors import QuarantineError
from siqkit.progress import track
from siqkit.records import Drop, Media, Quarantine, Reject, Seed, SourceRun, seed_id
from siqkit.seeds.sources import build_source
from siqkit.store import Store, seeded_hash

if TYPE_CHECKING:
    from siqkit.recipe import Recipe, SourceConfig

log = logging.getLogger("siqkit.seeds")

CHUNK = 20_000  # rows per insert, so memory stays bounded on large sources


@dataclass
class _SourceCounts:
    read: int = 0
    stored: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def run_seeds(store: Store, recipe: Recipe, strict: bool = False) -> dict:
    """Run the stage; return its counts (also stored in ``stage_runs``)."""
    names = [s.name for s in recipe.seeds.sources]
    with store.transaction() as con:  # sources removed from the recipe leave the pool
        _delete_sources(con, "NOT list_contains(?, source)", names)

    counts: dict = {"sources": {}}
    for cfg in recipe.seeds.sources:
        source = build_source(cfg, recipe.seed)
        fp = source.fingerprint()
        done = store.read(SourceRun, "source = ?", [cfg.name])
        if done and done[0].fingerprint == fp:
            log.info("seeds: source '%s' unchanged since its last ingest; skipping", cfg.name)
            counts["sources"][cfg.name] = {**done[0].counts, "skipped": True}
            continue
        c = _ingest(store, cfg, source, fp, strict)
        counts["sources"][cfg.name] = c.__dict__
    counts["pool"] = select_pool(store, recipe)
    return counts


def _ingest(store: Store, cfg: SourceConfig, source, fp: str, strict: bool) -> _SourceCounts:
    """Ingest one source in one transaction; ``fp`` is its fingerprint, taken before reading."""
    c = _SourceCounts()
    total = source.describe().get("rows")
    other_ids = {
        r[0] for r in store.con.execute("SELECT id FROM seeds WHERE source != ?", [cfg.name]).fetchall()
    }
    seen: dict[str, str] = {}  # id -> origin, within this source
    # image digest -> stored hash: a short digest, not the bytes, so no image outlives its row
    media_seen: dict[bytes, str] = {}
    rows: list[Seed] = []
    media_rows: list[Media] = []
    quarantine: list[Quarantine] = []
    drops: list[Drop] = []

    def flush() -> None:
        store.write(rows)
        store.write(media_rows, "INSERT OR IGNORE")
        store.write(quarantine)
        store.write(drops)
        for buf in (rows, media_rows, quarantine, drops):
            buf.clear()

    with store.transaction() as con:
        _delete_sources(con, "source = ?", cfg.name)
        for item in track(source.read(), f"seeds: {cfg.name}", total=total, unit="rows"):
            c.read += 1
            if isinstance(item, Reject):
                if strict:
                    raise QuarantineError(f"{item} (source '{cfg.name}', --strict)")
                c.quarantined += 1
                c.reasons[item.reason] = c.reasons.get(item.reason, 0) + 1
                quarantine.append(Quarantine("seeds", cfg.name, item.file, item.line, item.field, item.reason,
                                             item.detail))
                continue
            hashes = []
            for data in item.images:
                seen_key = hashlib.blake2b(data, digest_size=16).digest()
                digest = media_seen.get(seen_key)
                if digest is None:
                    digest, fmt, w, h = store.media.put(data)
                    media_seen[seen_key] = digest
                    media_rows.append(Media(digest, fmt, w, h, len(data)))
                hashes.append(digest)
            sid = seed_id(item.question, hashes)
            if sid in seen or sid in other_ids:
                c.duplicates += 1
                first = seen.get(sid, "another source")
                drops.append(Drop("seeds", sid, cfg.name, "duplicate seed", f"{item.origin} repeats {first}"))
                continue
            seen[sid] = item.origin
            rows.append(Seed(sid, cfg.name, item.split, item.question, item.answer, hashes, item.metadata, item.origin))
            c.stored += 1
            if len(rows) >= CHUNK:
                flush()
            if len(media_seen) > 1_000_000:  # ~100 MB of digests; forgetting costs only re-hashing
                media_seen.clear()
        flush()
        store.write([SourceRun(cfg.name, fp, datetime.now(), c.__dict__)])
    log.info("seeds: %s: %d stored, %d quarantined, %d duplicates",
             cfg.name, c.stored, c.quarantined, c.duplicates)
    return c


def _delete_sources(con, where: str, arg) -> None:
    """Forget everything the seeds stage stored for the sources matching ``where``."""
    for table in ("seeds", "source_runs"):
        con.execute(f"DELETE FROM {table} WHERE {where}", [arg])
    for table in ("quarantine", "drops"):
        con.execute(f"DELETE FROM {table} WHERE stage = 'seeds' AND {where}", [arg])


def select_pool(store: Store, recipe: Recipe) -> dict:
    """Mark the selected seeds (see module docstring); return kept counts per source and split."""
    available = store.con.execute(
        "SELECT source, split, count(*) FROM seeds GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    cfgs = {s.name: s for s in recipe.seeds.sources}
    quotas: list[tuple[str, str, int]] = []
    for split in sorted({s for _, s, _ in available}):
        avail = {src: min(n, cfgs[src].max or n) for src, sp, n in available if sp == split}
        total = recipe.seeds.max_total
        limit = total.get(split) if isinstance(total, dict) else total
        share = avail if limit is None else share_by_weight(avail, {s: cfgs[s].weight for s in avail}, limit)
        quotas += [(src, split, n) for src, n in share.items()]
    table = pa.table({"source": [q[0] for q in quotas], "split": [q[1] for q in quotas],
                      "quota": [q[2] for q in quotas]})
    with store.transaction() as con:
        con.register("_quotas", table)
        con.execute(
            f"""
            UPDATE seeds SET selected = (r.rank <= q.quota)
            FROM (SELECT id, row_number() OVER (PARTITION BY source, split ORDER BY {seeded_hash("id")}) AS rank
                  FROM seeds) r, _quotas q
            WHERE seeds.id = r.id AND q.source = seeds.source AND q.split = seeds.split
            """,
            [recipe.seed],
        )
        con.unregister("_quotas")
    kept: dict[str, dict[str, int]] = {}
    for src, split, n in store.con.execute(
        "SELECT source, split, count(*) FROM seeds WHERE selected GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        kept.setdefault(src, {})[split] = n
    return kept


def share_by_weight(available: dict[str, int], weights: dict[str, float], total: int) -> dict[str, int]:
    """Split ``total`` between sources by weight, never giving a source more than it has.

    Water-filling: a source whose share exceeds its supply gets its supply, and the rest is
    shared again among the others; integer shares use largest remainders (ties by name).
    """
    share = {s: 0 for s in available}
    active = {s for s, n in available.items() if n > 0}
    left = min(total, sum(available.values()))
    while active and left > 0:
        wsum = sum(weights[s] for s in active)
        ideal = {s: left * weights[s] / wsum for s in active}
        full = {s for s in active if ideal[s] >= available[s] - share[s]}
        if full:
            for s in full:
                left -= available[s] - share[s]
                share[s] = available[s]
            active -= full
            continue
        floors = {s: int(ideal[s]) for s in active}
        rest = left - sum(floors.values())
        by_remainder = sorted(active, key=lambda s: (-(ideal[s] - floors[s]), s))
        for s in active:
            share[s] += floors[s]
        for s in by_remainder[:rest]:
            share[s] += 1
        break
    return share
