"""``siqkit inspect``: what a run folder holds, per stage, per source and split, and why rows were lost."""

from __future__ import annotations

from pathlib import Path

from siqkit.annotate.stage import teacher_summary
from siqkit.curate.stage import curation_summary
from siqkit.evaluate.table import eval_table
from siqkit.store import SCHEMA_VERSION, Store


def summarize(run_dir: str | Path) -> dict:
    """Per-stage status and counts, seeds by source and split, quarantine and drop reasons, teachers,
    curation, and the evaluation table (:mod:`siqkit.evaluate.table`)."""
    store = Store.open(run_dir, read_only=True)
    try:
        q = store.con.execute
        by_source: dict[str, dict] = {}
        for src, split, total, selected in q(
            "SELECT source, split, count(*), count(*) FILTER (WHERE selected) FROM seeds GROUP BY ALL ORDER BY ALL"
        ).fetchall():
            by_source.setdefault(src, {})[split] = {"stored": total, "selected": selected}
        by_split = {
            split: {"stored": total, "selected": selected}
            for split, total, selected in q(
                "SELECT split, count(*), count(*) FILTER (WHERE selected) FROM seeds GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        }
        quarantine = _nested(q("SELECT stage, reason, count(*) FROM quarantine GROUP BY ALL ORDER BY ALL").fetchall())
        quarantine_by_source = _nested(
            q("SELECT source, reason, count(*) FROM quarantine GROUP BY ALL ORDER BY ALL").fetchall()
        )
        drops = _nested(q("SELECT stage, reason, count(*) FROM drops GROUP BY ALL ORDER BY ALL").fetchall())
        media = q("SELECT count(*), coalesce(sum(size_bytes), 0) FROM media").fetchone()
        return {
            "run_dir": str(run_dir),
            "schema_version": SCHEMA_VERSION,
            "stages": store.last_stage_runs(),
            "seeds": {
                "stored": sum(v["stored"] for v in by_split.values()),
                "selected": sum(v["selected"] for v in by_split.values()),
                "by_source": by_source,
                "by_split": by_split,
            },
            "media": {"images": media[0], "bytes": int(media[1])},
            "quarantine": {"total": sum(sum(v.values()) for v in quarantine.values()),
                           "by_stage": quarantine, "by_source": quarantine_by_source},
            "drops": {"total": sum(sum(v.values()) for v in drops.values()), "by_stage": drops},
            "teachers": teacher_summary(store),
            "curation": curation_summary(store),
            "evaluation": eval_table(store),
        }
    finally:
        store.close()


def _nested(rows: list[tuple]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for outer, inner, n in rows:
        out.setdefault(str(outer), {})[str(inner)] = n
    return out
