"""A checkpoint that ships its own Python code never runs it unless a recipe asks (trust_remote_code).

transformers asks on a terminal before it runs a checkpoint's code when the caller leaves
``trust_remote_code`` unset, and runs it on "y". So each loader runs here on a
pseudo-terminal that answers "y": the code must still not run.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time

import pytest

from siqkit.models.twins import make_tiny

from tests.conftest import REPO


@pytest.fixture
def booby_trapped(tmp_path):
    """A checkpoint of an unknown class whose config names a .py file that leaves a marker."""
    twin = make_tiny("qwen3", tmp_path / "twin")
    marker = tmp_path / "code-ran"
    (twin / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import Qwen3Config\n"
        "class EvilConfig(Qwen3Config):\n    model_type = 'evil_arch'\n")
    cfg = json.loads((twin / "config.json").read_text())
    cfg.update(model_type="evil_arch", auto_map={"AutoConfig": "evil.EvilConfig"})
    (twin / "config.json").write_text(json.dumps(cfg))
    return twin, marker


def on_a_terminal_answering_yes(args: list[str], cwd) -> str:
    """Run ``args`` with a pseudo-terminal for stdin and stdout, typing "y" to any question."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, cwd=cwd,
                            env={**os.environ, "COLUMNS": "200"})
    os.close(follower)
    out, deadline = b"", time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        out += chunk
        if b"[y/N]" in chunk:
            os.write(leader, b"y\n")
    proc.wait(timeout=30)
    os.close(leader)
    return out.decode(errors="replace")


@pytest.mark.parametrize("loader", [
    "from siqkit.models.twins import load_tiny; load_tiny({path!r})",
    "from siqkit.export.verify import HFReference; HFReference({path!r})",
])
def test_verification_loaders_never_run_a_checkpoints_code(booby_trapped, tmp_path, loader):
    twin, marker = booby_trapped
    out = on_a_terminal_answering_yes([sys.executable, "-c", loader.format(path=str(twin))], cwd=REPO)
    assert not marker.exists(), out[-2000:]
    assert "trust_remote_code" in out  # refused, saying why


def test_plan_memory_never_runs_a_checkpoints_code(booby_trapped, tmp_path):
    twin, marker = booby_trapped
    out = on_a_terminal_answering_yes(
        [sys.executable, "-m", "siqkit", "plan-memory", "--model", str(twin), "--vram", "8GB"], cwd=tmp_path)
    assert not marker.exists(), out[-2000:]
