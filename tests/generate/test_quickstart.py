"""The quickstart's generate and annotate stages on real data, with the built-in teachers."""

from __future__ import annotations

import json

import duckdb


def test_two_teachers_with_lineage_and_accuracy_against_gold(cli, quickstart):
    res = cli("inspect", str(quickstart["run_dir"]), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    teachers = s["teachers"]
    assert set(teachers) == {"perception", "digit_reader"}
    con = duckdb.connect(str(quickstart["run_dir"] / "store.duckdb"), read_only=True)
    try:
        seeds = dict(con.execute("SELECT source, count(*) FROM seeds WHERE selected GROUP BY source").fetchall())
    finally:
        con.close()
    # a short and a brief trace per seed (samples: 2)
    assert teachers["perception"]["traces"] == 2 * seeds["easy_vqa"] == 2 * (2000 + 2000)
    assert teachers["digit_reader"]["traces"] == 2 * seeds["digits"] > 2 * 3400
    for name, t in teachers.items():
        assert t["parse_failures"] == 0, name
        for split in ("train", "test"):
            acc = t["accuracy"][split]["accuracy"]
            # real, imperfect teachers: useful, and with errors for annotation to catch
            assert 0.8 < acc < 1.0, (name, split, acc)
        assert t["throughput"]["samples_per_s"] > 0
    con = duckdb.connect(str(quickstart["run_dir"] / "store.duckdb"), read_only=True)
    try:
        # every trace traces back to its seed, teacher, prompt and sampling settings
        orphans = con.execute("SELECT count(*) FROM generations g LEFT JOIN seeds s ON s.id = g.seed_id "
                              "WHERE s.id IS NULL").fetchone()[0]
        assert orphans == 0
        styles = dict(con.execute("SELECT teacher, any_value(raw) FROM generations GROUP BY teacher").fetchall())
        assert "<think>" in styles["perception"] and "Answer:" in styles["digit_reader"]
        wrong = con.execute("SELECT count(*) FROM annotations WHERE NOT correct").fetchone()[0]
        assert wrong > 0
        assert con.execute("SELECT count(*) FROM annotations").fetchone()[0] == 2 * sum(seeds.values())
    finally:
        con.close()
    assert s["stages"]["generate"]["status"] == "done" and s["stages"]["annotate"]["status"] == "done"
