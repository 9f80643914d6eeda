"""diff_runs: params, data, metric deltas and the code diff limited to the used files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlbook.provenance.diff import MetricDelta, ParamChange, RunSide, diff_runs
from mlbook.provenance.git import snapshot


def test_diff_two_runs(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "Models" / "common").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    helper = root / "Models" / "common" / "training.py"
    helper.write_text("LR = 1\n")
    (root / "notes.txt").write_text("a\n")
    a = snapshot(root, "ra", "before", "before ra")
    helper.write_text("LR = 2\n")
    (root / "notes.txt").write_text("b\n")
    b = snapshot(root, "rb", "before", "before rb")
    used = ["Models/common/training.py", "Models/E1.py"]
    side_a = RunSide(
        "ra",
        {"lr": 0.1, "net": {"width": 16}, "seed": 1},
        {"acc": 0.9, "loss": 1.0},
        "metadata:abc",
        a.commit,
        used,
    )
    side_b = RunSide(
        "rb",
        {"lr": 0.1, "net": {"width": 64}, "extra": True},
        {"acc": 0.95},
        "metadata:def",
        b.commit,
        used,
    )

    d = diff_runs(root, side_a, side_b)
    assert (d.a, d.b) == ("ra", "rb")
    assert d.params == [
        ParamChange("extra", None, True, False, True),
        ParamChange("net.width", 16, 64),
        ParamChange("seed", 1, None, True, False),
    ]
    assert d.data == ("metadata:abc", "metadata:def")
    assert d.metrics[0].key == "acc" and abs((d.metrics[0].delta or 0) - 0.05) < 1e-12
    assert d.metrics[1] == MetricDelta("loss", 1.0, None, None)
    assert "-LR = 1\n+LR = 2" in d.code and "notes.txt" not in d.code
    assert d.code_paths == sorted(used)
    assert "notes.txt" in diff_runs(root, side_a, side_b, all_files=True).code
    assert not d.same

    now = diff_runs(root, side_b, None)
    assert (now.b, now.code, now.params) == ("working tree", "", [])
    helper.write_text("LR = 3\n")
    assert "+LR = 3" in diff_runs(root, side_b).code


def test_diff_without_commits_says_why(tmp_path: Path) -> None:
    side_a = RunSide("ra", {"lr": 1}, data_version="x", no_commit_reason="git not found on PATH")
    side_b = RunSide("rb", {"lr": 1}, data_version="x")
    d = diff_runs(tmp_path, side_a, side_b)
    assert d.code == "" and d.code_note == "run ra has no commit (git not found on PATH)"
    assert d.same
