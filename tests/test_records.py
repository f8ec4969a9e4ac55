"""Table records: each is its table's one definition; the store's schema moves with a version."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from siqkit.errors import StoreError
from siqkit.records import TABLES, Curation, EvalOutput, Generation, Seed, make
from siqkit.store import MIGRATIONS, SCHEMA, SCHEMA_VERSION, Store

V1 = Path(__file__).with_name("data") / "store_v1.sql"

SCHEMA_DIGESTS = {2: "5dee48507d1a9c36"}
"""The digest of :data:`siqkit.store.SCHEMA` at each version. A change to a table record
changes it: bump ``SCHEMA_VERSION``, add the migration from the old version to
``siqkit.store.MIGRATIONS`` (and a test of it here), then record the new digest."""


def test_a_schema_change_comes_with_a_version_and_a_migration():
    digest = hashlib.sha256(SCHEMA.encode()).hexdigest()[:16]
    assert SCHEMA_DIGESTS.get(SCHEMA_VERSION) == digest, (
        f"the store's tables changed (schema digest {digest}): bump SCHEMA_VERSION, add a migration to "
        "siqkit.store.MIGRATIONS and record the digest in SCHEMA_DIGESTS")
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_the_store_has_exactly_the_records_columns(tmp_path):
    store = Store.open(tmp_path / "run", create=True)
    try:
        for table in TABLES:
            have = [r[0] for r in store.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table.TABLE]).fetchall()]
            assert have == table.columns(), table.TABLE
    finally:
        store.close()


def test_records_round_trip_through_the_store_with_json_and_lists(tmp_path):
    store = Store.open(tmp_path / "run", create=True)
    try:
        seeds = [Seed("s1", "src", "train", "Is it red? ünï", None, ["h1", "h2"], {"caption": "a red ünï", "n": 2},
                      "f.jsonl:1"),
                 Seed("s2", "src", "test", "How many?", "3", [], {}, "f.jsonl:2", selected=False)]
        store.write(seeds)
        assert store.read(Seed, "true ORDER BY id") == seeds
        g = Generation(key="k", seed_id="s1", teacher="t", teacher_identity={"backend": "python"},
                       prompt=[{"role": "user", "content": "x"}], sampling={"temperature": 0.0}, raw="r",
                       finish_reason="stop", seconds=0.5)
        store.write([g])
        assert store.read(Generation, "key = ?", ["k"]) == [g]
        # a mapping with other keys makes a record from the ones it names
        assert make(EvalOutput, {"seed_id": "s1", "after_stage": "x", "correct": True, "extra": 1}) == \
            EvalOutput(seed_id="s1", after_stage="x", correct=True)
    finally:
        store.close()


def v1_store(run: Path) -> duckdb.DuckDBPyConnection:
    """An open connection to a new version-1 store in ``run``."""
    run.mkdir()
    con = duckdb.connect(str(run / "store.duckdb"))
    con.execute(V1.read_text())
    con.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('created_by', 'siqkit 0.1.0')")
    return con


def test_a_version_1_store_is_upgraded_in_place_keeping_its_rows(tmp_path):
    run = tmp_path / "run"
    con = v1_store(run)
    con.execute("INSERT INTO seeds (id, source, split, question, images, metadata) "
                "VALUES ('s1', 'src', 'test', 'Is it red?', ['h'], '{\"caption\": \"red\"}')")
    con.execute("INSERT INTO eval_outputs (after_stage, seed_id, answer) VALUES ('after-reason', 's1', 'yes')")
    con.execute("DROP TABLE curation")  # a store from before the curate stage created it
    con.close()

    with pytest.raises(StoreError) as e:  # inspect and report only read: they say what to do
        Store.open(run, read_only=True)
    assert "schema version 1" in str(e.value) and f"siqkit upgrade {run}" in str(e.value)
    assert "\n" not in str(e.value)

    store = Store.open(run)
    try:
        assert store.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == \
            str(SCHEMA_VERSION)
        assert store.read(Seed) == [Seed("s1", "src", "test", "Is it red?", None, ["h"], {"caption": "red"}, None)]
        assert store.read(EvalOutput) == [EvalOutput(after_stage="after-reason", seed_id="s1", answer="yes")]
        assert store.read(Curation) == []
    finally:
        store.close()
    Store.open(run, read_only=True).close()  # now at this version


def test_an_upgrade_that_cannot_match_the_records_leaves_the_store_as_it_was(tmp_path):
    run = tmp_path / "run"
    con = v1_store(run)
    con.execute("ALTER TABLE drops ADD COLUMN extra VARCHAR")  # not a store siqkit wrote
    con.close()
    with pytest.raises(StoreError, match="cannot upgrade the run store from version 1: table drops has columns"):
        Store.open(run)
    con = duckdb.connect(str(run / "store.duckdb"), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
    assert "task" not in [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'eval_outputs'").fetchall()]
    con.close()


def test_siqkit_upgrade_upgrades_a_run_folder(tmp_path, cli):
    v1_store(tmp_path / "run").close()
    res = cli("upgrade", "run")
    assert res.returncode == 0, res.stderr
    assert f"schema version {SCHEMA_VERSION}" in res.stdout + res.stderr
    res = cli("inspect", "run", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["schema_version"] == SCHEMA_VERSION
    res = cli("upgrade", "nowhere")
    assert res.returncode == 1 and "no run store here" in res.stdout + res.stderr


def test_every_stage_boundary_has_a_record():
    names = {t.TABLE for t in TABLES}
    assert {"seeds", "generations", "annotations", "curation", "eval_outputs"} <= names
    for t in TABLES:
        assert dataclasses.is_dataclass(t) and all("sql" in f.metadata for f in t.fields())
