"""Session-wide test settings: offline, deterministic, and helpers to drive the real CLI."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


def require_vllm() -> None:
    """Skip a ``vllm`` test where vLLM is not installed; fail instead where
    ``SIQKIT_REQUIRE_VLLM`` is set (.ci/run sets it in its vLLM environment)."""
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("SIQKIT_REQUIRE_VLLM"):
            pytest.fail("SIQKIT_REQUIRE_VLLM is set but vllm cannot be found")
        pytest.skip("vLLM is not installed here (.ci/run runs these tests in its vLLM environment)")


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``siqkit ARGS`` as a user would (a fresh process), capturing its output."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "siqkit", *args], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def kill_9_once_committed(*args: str, cwd: Path, store: Path, wal_bytes: int, timeout: float = 120) -> None:
    """Start ``siqkit ARGS`` and ``kill -9`` it, with every process it started, once the run
    store's write-ahead log holds ``wal_bytes`` (some commits have landed)."""
    proc = subprocess.Popen([sys.executable, "-m", "siqkit", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wal = store.with_suffix(".duckdb.wal")
    deadline = time.time() + timeout
    while time.time() < deadline and not (wal.exists() and wal.stat().st_size > wal_bytes):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def cli(tmp_path):
    """``cli("run", "recipe.yaml")`` runs the real command line in a temporary folder."""

    def _run(*args: str, **kw) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=kw.pop("cwd", tmp_path), **kw)

    return _run


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory):
    """The quickstart recipe run stage by stage (--only seeds, generate, annotate), once per session.

    Returns the folder it ran in, and each stage's process result and wall time.
    """
    cwd = tmp_path_factory.mktemp("quickstart")
    results, seconds = {}, {}
    for stage in ("seeds", "generate", "annotate"):
        t0 = time.perf_counter()
        results[stage] = run_cli("run", str(REPO / "recipes" / "quickstart.yaml"), "--only", stage, cwd=cwd)
        seconds[stage] = time.perf_counter() - t0
        assert results[stage].returncode == 0, results[stage].stderr
    return {"cwd": cwd, "run_dir": cwd / "runs" / "quickstart", "results": results, "seconds": seconds}
