"""The ``curate`` stage: annotated traces in, training subsets out, every drop with its reason.

Traces of the seed splits in ``curate.splits`` go through three layers, in order:

1. **rules** (:mod:`siqkit.curate.rules`): format, truncation, missing reasoning, wrong
   answer, length, charset and refusal (SQL), then loops and repetition (Python, in batches);
2. **dedup** (:mod:`siqkit.curate.dedup`): among the survivors, ranked best-annotated
   first (correct, then judge quality, then a clean parse, then a seeded hash),
   *questions* are clustered (exact copies, then MinHash + LSH near-duplicates, only
   between seeds whose images are near-identical by perceptual hash), and only the best
   seed of each cluster keeps its traces; then *reasoning* is clustered within each
   problem and only the best trace of each cluster is kept;
3. **selection** (:mod:`siqkit.curate.select`): with ``selection.reasoning_length``, one
   trace per question, its length matched to the question's difficulty (the shortest for
   easy ones, the longest for hard ones, by default); then the difficulty mix and label caps.

Every considered trace gets one row in ``curation``: kept, or ``layer``/``reason``/``detail``,
plus its question and reasoning cluster (the kept member). The kept traces form the
``curated`` set; each recipe subset is a filtered view of it. All of them are recorded in
``curation_subsets`` and exported to ``RUN_DIR/datasets/<name>/`` (:mod:`siqkit.curate.datasets`).
The stage recomputes its decisions from the store on every run (they are cheap next to
generation); perceptual image hashes are cached. Texts are streamed from DuckDB in batches
and DuckDB's page cache is capped while the stage runs: on 1M synthetic traces the stage
took about 80 s and 1.4 GB of peak memory on 2 cores.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from siqkit.curate import reasons as R
from siqkit.curate.config import BUCKETS, CurateConfig
from siqkit.curate.dedup import DedupResult, DedupSettings, find_duplicates, format_report
from siqkit.curate.datasets import export_samples
from siqkit.curate.images import image_clusters, stored_fingerprints
from siqkit.curate.rules import TextRules, plan, sql_rule_reasons
from siqkit.curate.select import select
from siqkit.curate.subsets import subset_keys
from siqkit.hashing import digest
from siqkit.progress import track
from siqkit.records import Curation, CurationSubset
from siqkit.store import Store, seeded_hash

log = logging.getLogger("siqkit.curate")

VIEW = "curate_samples"
BATCH = 4096
DUCKDB_MEMORY = "512MB"  # while the stage runs; the connection's own limit is restored after
SAMPLES_SQL = """
CREATE OR REPLACE TEMP VIEW curate_samples AS
SELECT g.key, g.seed_id, g.teacher, s.split, s.source, s.question, s.answer AS gold, s.images,
       g.reasoning, g.answer, g.parse_status, g.parse_reason, g.finish_reason,
       a.key AS annotated, a.correct, a.labels, a.judge_tags, a.judge_quality,
       a.reasoning_tokens, a.answer_tokens, a.difficulty, a.difficulty_bucket
FROM generations g JOIN seeds s ON s.id = g.seed_id LEFT JOIN annotations a ON a.key = g.key
WHERE list_contains(?, s.split)"""
# best-annotated first: correct, then unchecked, then wrong; judge quality; a clean parse
QUALITY_ORDER = ("(correct IS TRUE) DESC, (correct IS NULL) DESC, coalesce(judge_quality, 0) DESC, "
                 f"(parse_status = 'ok') DESC, {seeded_hash('key')}")


def run_curate(store: Store, recipe: Any, strict: bool = False) -> dict:
    """Run the stage on ``recipe.curate`` (a :class:`CurateConfig`); return its counts."""
    cfg: CurateConfig = recipe.curate
    con = store.con
    limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")  # DuckDB's cache of the store's pages, bounded
    try:
        return _run(store, cfg, recipe.seed)
    finally:
        con.execute(f"SET memory_limit = '{limit}'")


def _run(store: Store, cfg: CurateConfig, seed: int) -> dict:
    con = store.con
    con.execute(SAMPLES_SQL.replace("?", _sql_list(cfg.splits)))
    n_in = con.execute(f"SELECT count(*) FROM {VIEW}").fetchone()[0]
    outside = dict(con.execute(
        "SELECT s.split, count(*) FROM generations g JOIN seeds s ON s.id = g.seed_id "
        "WHERE NOT list_contains(?, s.split) GROUP BY ALL ORDER BY ALL", [cfg.splits]).fetchall())
    counts: dict = {"input": n_in, "not_curated": {"splits": outside}, "kept": 0,
                    "dropped": {"rules": {}, "dedup": {}, "selection": {}}}
    if n_in == 0:
        log.warning("curate: no traces of seed splits %s to curate; run the generate and annotate stages first",
                    ", ".join(cfg.splits))
    drops: dict[str, tuple[str, str, str | None]] = {}

    _rules(store, cfg, drops)
    s = _ranked(store, cfg, drops, seed)
    if cfg.dedup.enabled:
        counts["dedup"] = _dedup(store, cfg, s, drops)
    if cfg.selection.reasoning_length is not None:
        counts["length_matched"] = _match_length(s, cfg.selection.reasoning_length, drops)
    alive = np.flatnonzero(s["alive"])
    keys = [s["key"][i] for i in alive]
    sel = select(keys, [s["bucket"][i] for i in alive], [s["labels"][i] for i in alive], cfg.selection, seed)
    rank = np.full(len(s["key"]), -1, dtype=np.int64)
    for j, i in enumerate(alive):
        if sel.kept[j]:
            rank[i] = sel.rank[j]
        else:
            drops[keys[j]] = ("selection", sel.reason[j] or R.NOT_SELECTED, sel.detail[j])
    counts["selection"] = sel.report
    for layer, reason, _ in drops.values():
        counts["dropped"][layer][reason] = counts["dropped"][layer].get(reason, 0) + 1
    counts["kept"] = int((rank >= 0).sum())
    counts["dropped_total"] = len(drops)
    settings = digest(cfg.model_dump(mode="json"), 16)
    _write(store, drops, s, rank, settings)
    counts["subsets"] = _subsets(store, cfg, counts)
    _log_summary(counts)
    return counts


def _match_length(s: dict, cfg, drops: dict) -> dict:
    """Keep one trace per question (``s["question_rep"]``), by reasoning length and the bucket of
    the question's best trace (see :class:`ReasoningLengthConfig`); count the choices made."""
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(s["alive"]):  # in quality order, so a group's first is its best trace
        groups.setdefault(int(s["question_rep"][i]), []).append(int(i))
    made: dict = {}
    for members in groups.values():
        bucket = s["bucket"][members[0]] or "unknown"
        choice = getattr(cfg, bucket)
        if choice == "all" or len(members) == 1:
            continue
        by_length = sorted(members, key=lambda i: s["tokens"][i])  # stable: ties keep quality order
        keep = by_length[{"shortest": 0, "median": len(members) // 2, "longest": -1}[choice]]
        made[f"{bucket}: {choice}"] = made.get(f"{bucket}: {choice}", 0) + 1
        for i in members:
            if i != keep:
                s["alive"][i] = False
                drops[s["key"][i]] = ("selection", R.REASONING_LENGTH,
                                      f"{bucket} question: its {choice} trace ({s['tokens'][keep]} tokens) "
                                      f"is kept, of {len(members)}")
    return made


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _rules(store: Store, cfg: CurateConfig, drops: dict) -> None:
    in_sql, in_python = plan(store.con, cfg.rules)
    for key, reason, detail in sql_rule_reasons(store.con, VIEW, cfg.rules, in_sql):
        drops[key] = ("rules", reason, detail)
    rules = TextRules(cfg.rules, in_python)
    con = store.con
    con.register("_dropped", pa.table({"key": list(drops) or [""]}))
    try:
        where = "WHERE key NOT IN (SELECT key FROM _dropped)"
        total = con.execute(f"SELECT count(*) FROM {VIEW} {where}").fetchone()[0]
        con.execute(f"SELECT key, reasoning, answer FROM {VIEW} {where}")
        failed = []
        for batch in track(iter(lambda: con.fetchmany(BATCH), []), "curate: rules", total=-(-total // BATCH),
                           unit="batches"):
            for key, reasoning, answer in batch:
                why = rules.check(reasoning, answer)
                if why:
                    failed.append((key, why))
    finally:
        con.unregister("_dropped")
    for key, why in failed:
        drops[key] = ("rules", *why)


def _ranked(store: Store, cfg: CurateConfig, drops: dict, seed: int) -> dict:
    """The traces that passed the rules, best-annotated first, as columns; ``seed_pos``
    numbers their seeds in the order of each seed's best trace, ``seeds`` lists them."""
    con = store.con
    con.register("_dropped", pa.table({"key": list(drops) or [""]}))
    try:
        t = con.sql(
            f"WITH r AS (SELECT key, seed_id, difficulty_bucket, coalesce(labels, []) AS labels, "
            f"coalesce(reasoning_tokens, 0) AS tokens, "
            f"coalesce(judge_tags, []) AS tags, row_number() OVER (ORDER BY {QUALITY_ORDER}) AS rn "
            f"FROM {VIEW} WHERE key NOT IN (SELECT key FROM _dropped)), "
            f"f AS (SELECT *, min(rn) OVER (PARTITION BY seed_id) AS first FROM r) "
            f"SELECT key, seed_id, difficulty_bucket, labels, tags, tokens, "
            f"dense_rank() OVER (ORDER BY first) - 1 AS seed_pos "
            f"FROM f ORDER BY rn", params=[seed]).to_arrow_table()
    finally:
        con.unregister("_dropped")
    shared: dict[str, str] = {}  # one string object per label, not one per row
    labels = [[shared.setdefault(x, x) for x in ls] for ls in t.column("labels").to_pylist()]
    if cfg.selection.labels.judge_tags:
        labels = [a + [shared.setdefault(x, x) for x in b if x not in a]
                  for a, b in zip(labels, t.column("tags").to_pylist())]
    seed_pos = t.column("seed_pos").to_numpy().astype(np.int64)
    first = np.unique(seed_pos, return_index=True)[1]
    n = len(seed_pos)
    buckets = [shared.setdefault(b, b) if b else None for b in t.column("difficulty_bucket").to_pylist()]
    return {"key": t.column("key").to_pylist(), "bucket": buckets,
            "labels": labels, "tokens": t.column("tokens").to_pylist(), "seed_pos": seed_pos, "seeds": t.column("seed_id").combine_chunks().take(pa.array(first)),
            "alive": np.ones(n, dtype=bool), "question_rep": seed_pos.copy(), "reasoning_rep": np.arange(n)}


def _texts(store: Store, ids: pa.Array, sql: str) -> Callable[[], Iterator[list]]:
    """Re-readable batches of one text per id, in the ids' order, for :func:`find_duplicates`.
    ``sql`` selects the text from ``_ids (id, pos)`` ordered by ``pos``."""

    def batches() -> Iterator[list]:
        store.con.register("_ids", pa.table({"id": ids, "pos": pa.array(np.arange(len(ids)))}))
        try:
            for b in store.con.sql(sql).to_arrow_reader(BATCH):
                yield b.column(0).to_pylist()
        finally:
            store.con.unregister("_ids")

    return batches


def _dedup(store: Store, cfg: CurateConfig, s: dict, drops: dict) -> dict:
    """Question clusters, then reasoning clusters within a problem; fills ``s["alive"]``,
    ``s["question_rep"]`` (a seed position) and ``s["reasoning_rep"]`` (a trace index)."""
    d = cfg.dedup
    settings = DedupSettings(threshold=d.threshold, num_perm=d.num_perm, ngram=d.ngram, batch_size=BATCH)
    report: dict = {}
    seeds, seed_pos, keys = s["seeds"], s["seed_pos"], s["key"]
    if d.question and len(seeds):
        groups = _image_groups(store, seeds, d.image_distance)
        res = find_duplicates(_texts(store, seeds, "SELECT s.question FROM _ids i JOIN seeds s ON s.id = i.id "
                                                   "ORDER BY i.pos"), settings, group=groups)
        report["question"] = _summary(res, "questions")
        s["question_rep"] = res.cluster[seed_pos]
        exact = res.exact_of != np.arange(len(seeds))
        for i in np.flatnonzero(s["question_rep"] != seed_pos):
            s["alive"][i] = False
            rep = seeds[int(s["question_rep"][i])].as_py()
            if exact[seed_pos[i]]:
                drops[keys[i]] = ("dedup", R.DUPLICATE_QUESTION, f"same problem as seed {rep}")
            else:
                drops[keys[i]] = ("dedup", R.NEAR_DUPLICATE_QUESTION,
                                  f"same problem as seed {rep} (question Jaccard >= {d.threshold:g})")
    if d.reasoning and s["alive"].any():
        idx = np.flatnonzero(s["alive"])
        res = find_duplicates(_texts(store, pa.array([keys[i] for i in idx]),
                                     "SELECT g.reasoning FROM _ids i JOIN generations g ON g.key = i.id "
                                     "ORDER BY i.pos"), settings, group=s["question_rep"][idx])
        report["reasoning"] = _summary(res, "reasoning traces")
        s["reasoning_rep"][idx] = idx[res.cluster]
        for j in np.flatnonzero(~res.keep):
            i, rep = idx[j], idx[res.cluster[j]]
            s["alive"][i] = False
            if res.exact_of[j] != j:
                drops[keys[i]] = ("dedup", R.DUPLICATE_REASONING, f"same reasoning as trace {keys[rep]}")
            else:
                drops[keys[i]] = ("dedup", R.NEAR_DUPLICATE_REASONING,
                                  f"same reasoning as trace {keys[rep]} (Jaccard >= {d.threshold:g})")
    return report


def _image_groups(store: Store, seeds: pa.Array, distance: int | None) -> np.ndarray:
    """One group number per seed: seeds share one when their images match, in order."""
    images = _texts(store, seeds, "SELECT s.images FROM _ids i JOIN seeds s ON s.id = i.id ORDER BY i.pos")
    per_seed = [hs for batch in images() for hs in batch]
    digests = sorted({h for hs in per_seed if hs for h in hs})
    if not digests:
        return np.zeros(len(per_seed), dtype=np.int64)
    label: dict[str, int] = {h: i for i, h in enumerate(digests)}
    if distance is not None:
        fp = stored_fingerprints(store, digests)
        known = [h for h in digests if h in fp]
        if known:
            thumbs = np.frombuffer(b"".join(fp[h][1] for h in known), dtype=np.uint8).reshape(len(known), -1)
            lab = image_clusters(np.array([fp[h][0] for h in known], dtype=np.uint64), distance, thumbs)
            for h, c in zip(known, lab):
                label[h] = len(digests) + int(c)  # near-identical images share a label
    groups: dict[tuple, int] = {}
    return np.array([groups.setdefault(tuple(label[h] for h in hs or ()), len(groups)) for hs in per_seed],
                    dtype=np.int64)


def _summary(res: DedupResult, what: str) -> dict:
    for line in format_report(res, what):
        log.info("curate: dedup: %s", line)
    return res.summary()


_CURATION_VALUES = {"key": "v.key", "seed_id": "v.seed_id", "teacher": "v.teacher", "split": "v.split",
                    "difficulty_bucket": "v.difficulty_bucket", "labels": "v.labels",
                    "rank": "CASE WHEN d.rank >= 0 THEN d.rank END", "settings": "?"}
"""Where each :class:`Curation` column comes from: the sample view ``v``, or (unnamed here) the
decision of the same name in ``_decisions`` ``d``."""


def _write(store: Store, drops: dict, s: dict, rank: np.ndarray, settings: str) -> None:
    """One ``curation`` row per considered trace (those the rules dropped have no clusters)."""
    n = len(s["key"])
    ruled = [k for k, v in drops.items() if v[0] == "rules"]
    keys = pa.array(s["key"] + ruled, pa.string())
    why = [drops.get(k) for k in s["key"]] + [drops[k] for k in ruled]
    pad = pa.nulls(len(ruled), pa.string())
    table = pa.table({
        "key": keys,
        "kept": np.concatenate([rank >= 0, np.zeros(len(ruled), dtype=bool)]),
        "layer": [w[0] if w else None for w in why],
        "reason": [w[1] if w else None for w in why],
        "detail": [w[2] if w else None for w in why],
        "question_cluster": pa.concat_arrays([s["seeds"].take(pa.array(s["question_rep"])).cast(pa.string()), pad])
        if n else pad,
        "reasoning_cluster": pa.concat_arrays([pa.array(s["key"], pa.string()).take(pa.array(s["reasoning_rep"])), pad])
        if n else pad,
        "rank": pa.array(np.concatenate([rank, np.full(len(ruled), -1)]), pa.int64()),
    })
    with store.transaction() as con:
        con.execute("DELETE FROM curation")
        con.execute("DELETE FROM curation_subsets")
        con.register("_decisions", table)
        values = [_CURATION_VALUES.get(c, f"d.{c}") for c in Curation.columns()]
        con.execute(f"INSERT INTO curation ({', '.join(Curation.columns())}) SELECT {', '.join(values)} "
                    f"FROM {VIEW} v JOIN _decisions d ON d.key = v.key", [settings])
        con.unregister("_decisions")


def _subsets(store: Store, cfg: CurateConfig, counts: dict) -> dict:
    out = {}
    card = {"source": "siqkit run --only curate", "license": cfg.export.license, "language": cfg.export.language,
            "filters": cfg.rules.model_dump(mode="json"),
            "dropped": counts["dropped"], "dedup": {k: {x: v[x] for x in ("documents", "kept", "exact_removed",
                                                                        "near_removed", "threshold", "bands", "rows")}
                                                    for k, v in counts.get("dedup", {}).items()},
            "selection": {k: v for k, v in counts["selection"].items() if not k.startswith("labels_")}}
    views = [("curated", {})] + [(s.name, s.model_dump(exclude={"name"})) for s in cfg.subsets]
    for name, flt in views:
        keys = subset_keys(store, **flt, require_curation=False)
        path = store.run_dir / "datasets" / name
        with store.transaction():
            store.write([CurationSubset(name, k, str(path)) for k in keys])
        exported = export_samples(store, keys, path, cfg.export.formats, cfg.export.link_images,
                                  {**card, "subset": {"name": name, **flt}})
        out[name] = {"samples": len(keys), "path": str(path), "difficulty": exported["difficulty"]}
    return out


def _log_summary(c: dict) -> None:
    by_layer = {layer: sum(r.values()) for layer, r in c["dropped"].items()}
    log.info("curate: %d traces in, %d kept; dropped by rules %d, dedup %d, selection %d",
             c["input"], c["kept"], by_layer["rules"], by_layer["dedup"], by_layer["selection"])
    for layer, reasons in c["dropped"].items():
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            log.info("curate:   %s: %s: %d", layer, reason, n)
    sel = c["selection"]
    if "targets" in sel:
        shares = ", ".join(f"{b} {sel['shares_after'][b]:.1%} (target {sel['targets'][b]:.0%})" for b in BUCKETS)
        log.info("curate: difficulty mix %s: %s", "met" if sel["met"] else "NOT met", shares)
    for note in sel.get("notes", []):
        log.warning("curate: %s", note)


def curation_summary(store: Store) -> dict:
    """Counts for ``siqkit inspect``: kept, dropped by layer and by reason, subsets."""
    con = store.con
    total, kept = con.execute("SELECT count(*), count(*) FILTER (WHERE kept) FROM curation").fetchone()
    if not total:
        return {}
    by_layer = dict(con.execute("SELECT layer, count(*) FROM curation WHERE NOT kept GROUP BY ALL ORDER BY ALL")
                    .fetchall())
    by_reason: dict[str, dict[str, int]] = {}
    for layer, reason, n in con.execute(
            "SELECT layer, reason, count(*) FROM curation WHERE NOT kept GROUP BY ALL ORDER BY 1, 3 DESC").fetchall():
        by_reason.setdefault(layer, {})[reason] = n
    subsets = dict(con.execute("SELECT subset, count(*) FROM curation_subsets GROUP BY ALL ORDER BY ALL").fetchall())
    difficulty = dict(con.execute("SELECT coalesce(difficulty_bucket, 'unknown'), count(*) FROM curation "
                                  "WHERE kept GROUP BY ALL ORDER BY ALL").fetchall())
    return {"considered": total, "kept": kept, "dropped": total - kept, "by_layer": by_layer,
            "by_reason": by_reason, "kept_difficulty": difficulty, "subsets": subsets}
