"""Snapshots on hidden refs and on the branch, with a real git in temporary repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlbook.errors import ProvenanceError
from mlbook.provenance.git import (
    checkout,
    current_commit,
    diff_commits,
    resolve,
    run_ref,
    snapshot,
)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def state(repo: Path) -> tuple[str, str, str, str, bytes]:
    """Everything of the user's that a refs-mode snapshot must leave alone."""
    head = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout
    index = (repo / ".git" / "index").read_bytes() if (repo / ".git" / "index").exists() else b""
    return (
        head,
        git(repo, "status", "--porcelain=v1", "-uall"),
        git(repo, "log", "--branches", "--tags", "--oneline"),
        git(repo, "stash", "list"),
        index,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text("data/\n")
    (root / "train.py").write_text("print('v1')\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def files_in(repo: Path, commit: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", commit).split())


def test_refs_snapshot_leaves_user_state_untouched(repo: Path) -> None:
    (repo / "train.py").write_text("print('v2')\n")  # modified, unstaged
    (repo / "new.py").write_text("x = 1\n")  # untracked
    (repo / "staged.py").write_text("y = 2\n")
    git(repo, "add", "staged.py")  # a dirty index
    (repo / "data").mkdir()
    (repo / "data" / "big.bin").write_bytes(b"0" * 1000)  # ignored
    (repo / "large.bin").write_bytes(b"1" * 300_000)  # over the limit below
    before = state(repo)

    shot = snapshot(repo, "20261124-1616-ab12", "before", "[E012.1] before run small", 100_000)

    assert state(repo) == before
    assert shot.ref == "refs/mlbook/runs/20261124-1616-ab12/before"
    assert shot.pointers == ("large.bin",) and shot.skipped == ()
    assert git(repo, "rev-parse", shot.ref).strip() == shot.commit
    assert files_in(repo, shot.commit) == {
        ".gitignore",
        "train.py",
        "new.py",
        "staged.py",
        "large.bin",  # as a pointer
    }
    assert git(repo, "show", f"{shot.commit}:large.bin").startswith('{"mlbook-pointer": 1')
    assert git(repo, "show", f"{shot.commit}:train.py") == "print('v2')\n"
    assert git(repo, "log", "-1", "--format=%s%n%P", shot.commit).split() == [
        "[E012.1]",
        "before",
        "run",
        "small",
        git(repo, "rev-parse", "HEAD").strip(),
    ]


def test_deleted_file_is_recorded_as_deleted(repo: Path) -> None:
    (repo / "train.py").unlink()
    shot = snapshot(repo, "r1", "after", "after")
    assert files_in(repo, shot.commit or "") == {".gitignore"}


def test_no_git_on_path_gives_a_reason(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "nowhere"))
    shot = snapshot(repo, "r1", "before", "before")
    assert shot.commit is None
    assert shot.reason.startswith("git not found on PATH")
    assert current_commit(repo) is None


def test_not_a_repository_gives_a_reason(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path)
    try:
        shot = snapshot(plain, "r1", "before", "before")
    finally:
        del os.environ["GIT_CEILING_DIRECTORIES"]
    assert shot.commit is None
    assert "is not in a git repository" in shot.reason


def test_empty_repository_gives_a_root_commit(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a.py").write_text("a = 1\n")
    shot = snapshot(root, "r1", "before", "before")
    assert shot.commit
    assert git(root, "log", "-1", "--format=%P", shot.commit).strip() == ""
    assert files_in(root, shot.commit) == {"a.py"}
    assert git(root, "status", "--porcelain").strip() == "?? a.py"


def test_detached_head_uses_head_as_parent(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "--detach")
    shot = snapshot(repo, "r1", "before", "before")
    assert git(repo, "log", "-1", "--format=%P", shot.commit or "").strip() == head
    with pytest.raises(ProvenanceError, match="HEAD is detached"):
        snapshot(repo, "r2", "before", "before", mode="branch")


def test_submodule_is_recorded_as_its_commit(repo: Path) -> None:
    inner = repo / "vendor"
    inner.mkdir()
    git(inner, "init", "-q")
    (inner / "lib.py").write_text("z = 0\n")
    git(inner, "add", ".")
    git(inner, "commit", "-q", "-m", "inner")
    inner_head = git(inner, "rev-parse", "HEAD").strip()
    (inner / "lib.py").write_text("z = 1\n")  # dirty inside: not recorded
    before = state(repo)
    shot = snapshot(repo, "r1", "before", "before")
    assert state(repo) == before
    entry = git(repo, "ls-tree", shot.commit or "", "vendor").split()
    assert entry[:3] == ["160000", "commit", inner_head]


def test_project_in_a_subdirectory_snapshots_only_its_files(repo: Path) -> None:
    sub = repo / "proj"
    sub.mkdir()
    (sub / "m.py").write_text("m = 1\n")
    (repo / "outside.py").write_text("o = 1\n")
    shot = snapshot(sub, "r1", "before", "before")
    assert files_in(repo, shot.commit or "") == {".gitignore", "train.py", "proj/m.py"}
    dest = checkout(sub, "r1", repo.parent / "out").path
    assert sorted(p.name for p in dest.iterdir()) == ["m.py"]


def test_branch_mode_commits_on_the_branch(repo: Path) -> None:
    (repo / "train.py").write_text("print('v2')\n")
    shot = snapshot(repo, "r1", "before", "[E012.1] before run small", mode="branch")
    assert shot.mode == "branch"
    assert shot.ref == "refs/heads/main"
    assert git(repo, "log", "-1", "--format=%s").strip() == "[E012.1] before run small"
    assert git(repo, "rev-parse", "HEAD").strip() == shot.commit
    assert git(repo, "status", "--porcelain") == ""
    again = snapshot(repo, "r1", "after", "[E012.1] results: acc=0.962", mode="branch")
    assert again.commit == shot.commit
    assert again.reason == "nothing changed; HEAD recorded"


def test_branch_mode_refused_during_a_merge(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    (repo / "train.py").write_text("print('other')\n")
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "main")
    (repo / "train.py").write_text("print('main')\n")
    git(repo, "commit", "-q", "-am", "main")
    subprocess.run(["git", "merge", "-q", "other"], cwd=repo, capture_output=True)
    assert (repo / ".git" / "MERGE_HEAD").exists()
    with pytest.raises(ProvenanceError, match="in the middle of a merge; finish or abort"):
        snapshot(repo, "r1", "before", "before", mode="branch")
    before = state(repo)
    shot = snapshot(repo, "r1", "before", "before")  # refs mode still works
    assert shot.commit and state(repo) == before


def test_bad_run_id_is_refused() -> None:
    with pytest.raises(ProvenanceError, match="run id 'a b' cannot be part of a git ref"):
        run_ref("a b", "before")


def test_checkout_and_resolve(repo: Path, tmp_path: Path) -> None:
    shot = snapshot(repo, "r1", "before", "before")
    (repo / "train.py").write_text("print('v3')\n")
    after = snapshot(repo, "r1", "after", "after")
    assert resolve(repo, "r1") == shot.commit
    assert resolve(repo, "r1", "after") == after.commit
    done = checkout(repo, "r1", tmp_path / "co")
    assert (done.path / "train.py").read_text() == "print('v1')\n"
    assert (done.commit, done.restored, done.missing) == (shot.commit, (), ())
    with pytest.raises(ProvenanceError, match="is not an empty directory"):
        checkout(repo, "r1", tmp_path / "co")
    with pytest.raises(ProvenanceError, match="no commit, ref or run called 'nope'"):
        checkout(repo, "nope", tmp_path / "co2")


def test_diff_commits_limited_to_paths_and_working_tree(repo: Path) -> None:
    (repo / "other.py").write_text("o = 1\n")
    a = snapshot(repo, "r1", "before", "before")
    (repo / "train.py").write_text("print('v2')\n")
    (repo / "other.py").write_text("o = 2\n")
    b = snapshot(repo, "r2", "before", "before")
    limited = diff_commits(repo, a.commit or "", b.commit, ["train.py"])
    assert "+print('v2')" in limited and "other.py" not in limited
    assert "other.py" in diff_commits(repo, "r1", "r2")
    assert diff_commits(repo, "r1", "r2", []) == ""
    (repo / "fresh.py").write_text("f = 1\n")  # untracked: part of the working tree
    now = diff_commits(repo, "r2", None, ["fresh.py", "train.py"])
    assert "+f = 1" in now and "train.py" not in now


def test_include_records_ignored_outputs_within_the_limit(repo: Path) -> None:
    out = repo / "data" / "run1"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text("{}\n")
    (out / "weights.bin").write_bytes(b"w" * 300_000)
    (repo / "data" / "other.txt").write_text("not included\n")
    before = state(repo)
    shot = snapshot(repo, "r1", "after", "after", 100_000, include=[out, repo / "missing"])
    assert state(repo) == before
    assert files_in(repo, shot.commit or "") == {
        ".gitignore",
        "train.py",
        "data/run1/metrics.json",
        "data/run1/weights.bin",  # a pointer: the bytes stay in data/run1/
    }
    assert shot.pointers == ("data/run1/weights.bin",)
    pointer = git(repo, "show", f"{shot.commit}:data/run1/weights.bin")
    assert len(pointer) < 300 and '"size": 300000' in pointer


def test_data_dir_keeps_untracked_data_out_but_dataset_metadata_in(repo: Path) -> None:
    data = repo / "Datasets" / "digits"
    (data / "images").mkdir(parents=True)
    (data / "images" / "0001.png").write_bytes(b"\x89PNG fake")
    (data / "records.jsonl").write_text('{"id": "1"}\n')
    (data / "dataset.json").write_text('{"name": "digits"}\n')
    (repo / "Models").mkdir(exist_ok=True)
    (repo / "Models" / "E001_x.py").write_text("x = 1\n")
    before = state(repo)

    shot = snapshot(repo, "r-data", "before", "m", data_dir="Datasets")
    names = git(repo, "ls-tree", "-r", "--name-only", shot.commit or "").split()
    assert "Datasets/digits/dataset.json" in names
    assert "Models/E001_x.py" in names
    assert "Datasets/digits/images/0001.png" not in names
    assert "Datasets/digits/records.jsonl" in names  # the split the run trained on
    assert state(repo) == before

    everything = snapshot(repo, "r-all", "before", "m")
    names = git(repo, "ls-tree", "-r", "--name-only", everything.commit or "").split()
    assert "Datasets/digits/images/0001.png" in names


def test_data_dir_in_branch_mode(repo: Path) -> None:
    data = repo / "Datasets" / "d"
    data.mkdir(parents=True)
    (data / "big.bin").write_bytes(b"data")
    (data / "dataset.json").write_text("{}\n")
    shot = snapshot(repo, "r-b", "before", "[E1.1] before", mode="branch", data_dir="Datasets")
    names = git(repo, "ls-tree", "-r", "--name-only", shot.commit or "").split()
    assert "Datasets/d/dataset.json" in names
    assert "Datasets/d/big.bin" not in names
    assert git(repo, "status", "--porcelain") == "?? Datasets/d/big.bin\n"


def test_refs_snapshot_without_a_git_identity(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("EMAIL", "")
    git(repo, "config", "--unset", "user.name") if "user.name" in git(
        repo, "config", "--local", "--list"
    ) else None
    shot = snapshot(repo, "r-noid", "before", "m")
    assert shot.commit is not None
    assert git(repo, "log", "-1", "--format=%an <%ae>", shot.commit).strip() == (
        "mlbook <mlbook@localhost>"
    )
