"""Resumable study stages: a rerun skips finished stages whose inputs have not changed."""

from __future__ import annotations

from mvi_tf.demo import StudyLayout, _StageRunner


def _run(layout, calls, size):
    runner = _StageRunner(layout)
    out_a, out_b = layout.root / "a.txt", layout.root / "b.txt"

    def stage_a():
        calls.append("a")
        out_a.write_text(str(size))
        return {"size": size}

    def stage_b():
        calls.append("b")
        out_b.write_text("done")

    runner("a", {"size": size}, [], [out_a], stage_a)
    runner("b", {}, ["a"], [out_b], stage_b)
    return runner


def test_rerun_skips_unchanged_and_reruns_downstream(tmp_path):
    layout = StudyLayout(tmp_path)
    calls: list[str] = []
    _run(layout, calls, 1)
    assert calls == ["a", "b"]
    _run(layout, calls, 1)
    assert calls == ["a", "b"], "unchanged stages must be skipped"
    _run(layout, calls, 2)
    assert calls == ["a", "b", "a", "b"], "a changed parameter reruns the stage and everything downstream"
    (tmp_path / "b.txt").unlink()
    _run(layout, calls, 2)
    assert calls[-1] == "b" and calls.count("a") == 2, "a missing output reruns only that stage"
    (tmp_path / "a.txt").unlink()
    _run(layout, calls, 2)
    assert calls[-2:] == ["a", "b"], "a stage that reran makes its downstream stages rerun"
    _run(layout, calls, 2)
    assert calls.count("a") == 3 and calls.count("b") == 4, "and then everything is up to date again"
