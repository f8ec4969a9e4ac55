"""The engine's window and the store's commits are separate things."""

from __future__ import annotations

import time

from siqkit.generate.stage import _duration, _Writer
from siqkit.records import Generation
from siqkit.store import Store
from siqkit.teachers.base import TeacherInput, TeacherOutput, iter_outputs


def row(i: int) -> Generation:
    return Generation(key=f"k{i}", seed_id=f"s{i}", teacher="t", sample_index=0, raw="", finish_reason="stop")


def committed(store: Store) -> int:
    return store.con.execute("SELECT count(*) FROM generations").fetchone()[0]


def test_rows_are_committed_every_commit_rows_and_after_commit_seconds(tmp_path):
    store = Store.open(tmp_path / "run", create=True)
    writer = _Writer(store, rows=3, seconds=3600)
    for i in range(7):
        writer.add(row(i))
    assert committed(store) == 6  # two commits of 3; the 7th waits
    writer.flush()
    assert committed(store) == 7
    slow = _Writer(store, rows=1000, seconds=0.05)
    slow.add(row(7))
    assert committed(store) == 7
    time.sleep(0.06)
    slow.add(row(8))  # the time is up: both go in
    assert committed(store) == 9
    seconds = [r[0] for r in store.con.execute("SELECT seconds FROM generations WHERE key IN ('k7', 'k8')").fetchall()]
    assert len(seconds) == 2 and seconds[0] == seconds[1] > 0.02  # the commit's wall time, shared
    store.close()


class Streaming:
    """A streaming teacher: takes inputs lazily, at most ``window`` ahead, finishes them last-first."""

    def __init__(self, window: int):
        self.window, self.pulled, self.calls = window, 0, 0

    def stream(self, inputs):
        held = []
        for inp in inputs:
            self.pulled += 1
            held.append(inp)
            if len(held) == self.window:
                yield TeacherOutput(held.pop().key, "x", "stop")
        while held:
            yield TeacherOutput(held.pop().key, "x", "stop")

    def generate(self, batch):  # pragma: no cover - iter_outputs must prefer stream
        raise AssertionError("a streaming teacher is streamed")


class Batched:
    def __init__(self):
        self.calls = []

    def generate(self, batch):
        self.calls.append(len(batch))
        return [TeacherOutput(i.key, "x", "stop") for i in batch]


def inputs(n: int):
    return (TeacherInput(key=f"k{i}", seed_id="s", question="q", images=[], messages=[]) for i in range(n))


def test_iter_outputs_streams_a_streaming_teacher_and_chunks_the_others():
    t = Streaming(window=4)
    outs = iter_outputs(t, inputs(10), chunk=3)
    first = next(outs)
    assert (first.key, t.pulled) == ("k3", 4)  # the first output came before the rest was pulled
    assert sorted(o.key for o in [first, *outs]) == sorted(f"k{i}" for i in range(10))
    b = Batched()
    assert [o.key for o in iter_outputs(b, inputs(7), chunk=3)] == [f"k{i}" for i in range(7)]
    assert b.calls == [3, 3, 1]


def test_eta_reads_as_hours_and_minutes():
    assert _duration(59) == "0m59s"
    assert _duration(3 * 3600 + 125) == "3h02m"
    assert _duration(float("inf")) == "unknown"
