"""Controllable subsets: filtered views of the curated samples, in selection order.

A subset keeps the curated traces that match every condition given (``difficulty``,
``labels`` (any of them), ``teachers``, ``splits``), in the selection's order (rare labels
first, then the seeded sampling order), and at most ``max`` of them. The same filter serves
the recipe's ``curate.subsets`` and ``siqkit subset RUN_DIR …``.
"""

from __future__ import annotations

from siqkit.errors import StoreError
from siqkit.store import Store


def subset_keys(store: Store, difficulty: list[str] | None = None, labels: list[str] | None = None,
                teachers: list[str] | None = None, splits: list[str] | None = None,
                max: int | None = None, require_curation: bool = True) -> list[str]:  # noqa: A002
    """Keys of the curated traces that match, best first. Without a curated run (and
    ``require_curation``), a :class:`StoreError` says to run the stage."""
    if require_curation and not store.con.execute("SELECT count(*) FROM curation").fetchone()[0]:
        raise StoreError(f"{store.run_dir}: nothing curated yet; run the curate stage first "
                         "(siqkit run RECIPE --only curate)")
    where, params = ["kept"], []
    for column, values in (("difficulty_bucket", difficulty), ("teacher", teachers), ("split", splits)):
        if values:
            where.append(f"list_contains(?, {column})")
            params.append(list(values))
    if labels:
        where.append("list_has_any(coalesce(labels, []), ?)")
        params.append(list(labels))
    sql = f"SELECT key FROM curation WHERE {' AND '.join(where)} ORDER BY rank, key"
    if max is not None:
        sql += f" LIMIT {int(max)}"
    return [r[0] for r in store.con.execute(sql, params).fetchall()]
