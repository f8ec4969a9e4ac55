"""benchmarks/dedup.py stays runnable: a small corpus, siqkit against datasketch."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_dedup_benchmark_smoke(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dedup.py"), "--docs", "2000",
                          "--methods", "siqkit,siqkit-cli,datasketch", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    table = {line.split("|")[1].strip(): line.split("|")[2:] for line in res.stdout.splitlines()
             if line.startswith("| ") and not line.startswith("| method")}
    assert set(table) == {"siqkit", "siqkit-cli", "datasketch"}
    precision, recall = table["siqkit"][5].strip(), table["siqkit"][6].strip()
    assert float(precision) == 1.0 and float(recall) >= 0.95
