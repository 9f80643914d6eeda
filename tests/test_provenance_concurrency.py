"""Snapshots under concurrency and slow git: no temp file recorded, no commit lost or hung."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlbook._fs import TEMP_SUFFIX, atomic_writer
from mlbook.errors import ProvenanceError
from mlbook.project import Project
from mlbook.provenance.git import snapshot
from mlbook.provenance.journal import add_entry, record_step

ROOT = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def files_in(repo: Path, commit: str | None) -> set[str]:
    assert commit
    return set(git(repo, "ls-tree", "-r", "--name-only", commit).split())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('v1')\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def hook(repo: Path, name: str, body: str) -> None:
    path = repo / ".git" / "hooks" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_journal_temp_file_goes_to_state_dir_and_never_into_a_snapshot(project: Project) -> None:
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "start")
    with atomic_writer(project.journal_path) as handle:  # a journal write in progress
        handle.write(b"# half written\n")
        [temp] = list((project.state_dir / "tmp").iterdir())
        assert temp.name.endswith(TEMP_SUFFIX)
        refs = snapshot(project.root, "r1", "before", "m")
        branch = snapshot(project.root, "r1", "after", "m", mode="branch")
    for shot in (refs, branch):
        assert not [n for n in files_in(project.root, shot.commit) if n.endswith(".tmp")]
    assert project.journal_path.read_text() == "# half written\n"
    assert list((project.state_dir / "tmp").iterdir()) == []
    assert not list(project.root.glob(f".*{TEMP_SUFFIX}"))


def test_state_dir_and_temp_files_are_left_out_even_when_not_ignored(repo: Path) -> None:
    (repo / ".mlbook").mkdir()
    (repo / ".mlbook" / "runs.sqlite-wal").write_bytes(b"wal")
    (repo / "sub").mkdir()
    (repo / "sub" / f".x.abc{TEMP_SUFFIX}").write_text("partial")
    (repo / "kept.py").write_text("k = 1\n")
    for mode in ("refs", "branch"):
        shot = snapshot(repo, f"r-{mode}", "before", "m", mode=mode)
        assert files_in(repo, shot.commit) == {"train.py", "kept.py"}


def test_an_ignored_datasets_area_does_not_fail_snapshots(repo: Path) -> None:
    (repo / ".gitignore").write_text("Datasets/\n.mlbook/\n")
    (repo / ".mlbook").mkdir()
    (repo / "Datasets" / "d").mkdir(parents=True)
    (repo / "Datasets" / "d" / "x.bin").write_bytes(b"1")
    refs = snapshot(repo, "r1", "before", "m", data_dir="Datasets")
    branch = snapshot(repo, "r1", "after", "m", mode="branch", data_dir="Datasets")
    assert (
        files_in(repo, refs.commit) == files_in(repo, branch.commit) == {".gitignore", "train.py"}
    )


def test_files_vanishing_while_snapshotting_do_not_lose_the_commit(repo: Path) -> None:
    stop = threading.Event()

    def churn() -> None:  # someone else's temporary files, appearing and vanishing
        n = 0
        while not stop.is_set():
            path = repo / f"churn{n % 50}.part"
            path.write_text("x")
            path.unlink()
            n += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        shots = [snapshot(repo, f"r{i}", "before", "m") for i in range(6)]
        shots += [snapshot(repo, f"b{i}", "before", f"m{i}", mode="branch") for i in range(3)]
    finally:
        stop.set()
        worker.join()
    assert all(shot.commit for shot in shots)


def test_branch_mode_gives_up_on_a_held_index_lock_and_names_it(repo: Path) -> None:
    (repo / "train.py").write_text("print('v2')\n")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    with pytest.raises(ProvenanceError) as info:
        snapshot(repo, "r1", "before", "m", mode="branch", lock_timeout=0.3)
    assert f"{lock} still exists after 0.3 s" in str(info.value)
    assert "\n" not in str(info.value)
    lock.unlink()
    assert git(repo, "log", "--format=%s") == "first\n"


def test_branch_mode_commits_once_the_index_lock_goes(repo: Path) -> None:
    (repo / "train.py").write_text("print('v2')\n")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    timer = threading.Timer(0.3, lock.unlink)
    timer.start()
    try:
        shot = snapshot(repo, "r1", "before", "[E1.1] before", mode="branch", lock_timeout=30)
    finally:
        timer.join()
    assert shot.commit == git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "log", "-1", "--format=%s") == "[E1.1] before\n"


def test_concurrent_branch_snapshots_and_journal_writes_lose_nothing(project: Project) -> None:
    add_entry(project.journal_path, "E001", "t")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "start")
    results: dict[int, object] = {}

    def runner(index: int) -> None:
        try:
            for round_ in range(3):
                run_id = f"r{index}-{round_}"
                record_step(project.journal_path, "E001", "v", run_id, "running", {}, None, None)
                (project.models_dir / f"out{index}.txt").write_text(f"{round_}\n")
                shot = snapshot(project.root, run_id, "before", f"[{run_id}]", mode="branch")
                assert shot.commit, shot.reason
        except BaseException as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {}
    for commit in git(project.root, "rev-list", "HEAD").split():
        assert not [n for n in files_in(project.root, commit) if n.endswith(".tmp")]


@pytest.mark.slow
def test_slow_post_commit_hook_is_stopped_and_the_commit_kept(repo: Path) -> None:
    pid_file = repo.parent / "hook.pid"
    hook(repo, "post-commit", f"echo $$ > {pid_file}\nexec sleep 600\n")
    (repo / "train.py").write_text("print('v2')\n")
    shot = snapshot(repo, "r1", "before", "[E1.1] before", mode="branch", git_timeout=2)
    assert shot.commit == git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "log", "-1", "--format=%s") == "[E1.1] before\n"
    assert "git commit did not finish within 2 s" in shot.reason
    assert not _running(int(pid_file.read_text()))


def test_a_hook_that_hangs_before_the_commit_times_out_with_one_line(repo: Path) -> None:
    hook(repo, "prepare-commit-msg", "exec sleep 600\n")
    (repo / "train.py").write_text("print('v2')\n")
    with pytest.raises(ProvenanceError, match="git commit did not finish within 1 s") as info:
        snapshot(repo, "r1", "before", "m", mode="branch", git_timeout=1)
    assert "\n" not in str(info.value)
    assert git(repo, "log", "--format=%s") == "first\n"
    assert not (repo / ".git" / "index.lock").exists()  # git was stopped cleanly


def test_refs_mode_runs_no_hooks(repo: Path) -> None:
    marker = repo.parent / "hook-ran"
    for name in ("reference-transaction", "post-commit", "pre-commit"):
        hook(repo, name, f"touch {marker}\nexec sleep 600\n")
    shot = snapshot(repo, "r1", "before", "m", git_timeout=30)
    assert shot.commit and not marker.exists()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


@pytest.mark.slow
def test_fault_script_short_form_meets_its_targets(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fault_concurrent_runs.py"), "--short"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lost commits 0  temp files in snapshots 0  no commit and no reason 0" in done.stdout
    assert done.stdout.count("runs 4/4") == 2
