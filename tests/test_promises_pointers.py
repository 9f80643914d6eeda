"""Outputs stay out of git's objects: large files are pointers, restored while their bytes last.

Real runs, a real repository, real `mlbook checkout`: a file over `[git] max_file_size`
goes into a snapshot as a pointer (path, sha256, size); its bytes stay in
`Models/outputs/`. Dataset metadata (records.jsonl: the split) goes into the
before commit by the same rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.errors import ProvenanceError
from mlbook.experiments.query import get_run
from mlbook.experiments.runner import run_experiments
from mlbook.project import Project
from mlbook.provenance.checkout import checkout_run
from mlbook.provenance.pointers import HashCache, Pointer, parse_pointer, restore_pointers

WEIGHTS = """
    import os

    import mlbook

    exp = mlbook.Experiment(seed=0, grid={{"i": list(range({runs}))}})


    @exp.train
    def train(run):
        weights = run.dir / "weights"
        weights.mkdir()
        (weights / "model.pt").write_bytes(os.urandom({size}))  # ignored by .gitignore too
        (run.dir / "report.txt").write_text(f"run {{run.params.i}}\\n")
        return {{"i": run.params.i}}
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["-C", str(project.root), *args], prog_name="mlbook")
    return result.exit_code, result.stdout, result.stderr


def git_bytes(root: Path) -> int:
    """The bytes of every file under .git (apparent sizes)."""
    return sum(p.stat().st_size for p in (root / ".git").rglob("*") if p.is_file())


def committed(project: Project) -> Project:
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "start")
    return project


def weights_project(project: Project, runs: int, size: int) -> Project:
    script = textwrap.dedent(WEIGHTS.format(runs=runs, size=size))
    (project.models_dir / "E001_weights.py").write_text(script)
    return committed(project)


@pytest.mark.slow
def test_twenty_runs_of_5_mb_weights_grow_git_by_under_2_mb(project: Project) -> None:
    weights_project(project, runs=20, size=5 * 1024 * 1024)
    before = git_bytes(project.root)
    result = run_experiments(project, ["E001"])
    assert result.ok and len(result.runs) == 20, [r.error for r in result.runs]
    grown = git_bytes(project.root) - before
    assert grown < 2 * 1024 * 1024, f".git grew by {grown / 1e6:.2f} MB"
    last = get_run(project, result.runs[-1].run_id)
    pointer = git(project.root, "show", f"{last.commit_after}:{last.outputs}/weights/model.pt")
    parsed = parse_pointer(pointer.encode())
    assert parsed is not None and parsed.size == 5 * 1024 * 1024
    assert parsed.path == f"{last.outputs}/weights/model.pt"
    report = git(project.root, "show", f"{last.commit_after}:{last.outputs}/report.txt")
    assert report == "run 19\n"  # small files go in whole


def test_checkout_after_restores_pointed_files_and_says_which_are_gone(
    project: Project, tmp_path: Path
) -> None:
    weights_project(project, runs=2, size=1_200_000)
    result = run_experiments(project, ["E001"])
    assert result.ok, [r.error for r in result.runs]
    first, second = (get_run(project, r.run_id) for r in result.runs)
    weights = f"{first.outputs}/weights/model.pt"
    done = checkout_run(project, first.id[:-2], tmp_path / "a", after=True)  # a prefix
    assert done.restored == (weights,) and done.missing == ()
    assert (tmp_path / "a" / weights).read_bytes() == (project.root / weights).read_bytes()

    (project.root / weights).write_bytes(b"retrained over it")  # the bytes are gone
    with pytest.raises(ProvenanceError) as info:
        checkout_run(project, first.id, tmp_path / "b", after=True)
    assert str(info.value).startswith(
        f"1 file(s) of run {first.id} (after) were recorded as pointers and their bytes are "
        "gone from the "
        f"project: {weights}; nothing was written (pass --missing-ok"
    )
    assert not (tmp_path / "b").exists()
    code, out, err = invoke(project, "checkout", first.id, "--after", str(tmp_path / "c"))
    assert (code, out) == (1, "") and err.startswith(f"error: 1 file(s) of run {first.id} ")
    assert len(err.splitlines()) == 1
    code, out, err = invoke(
        project, "checkout", first.id, "--after", "--missing-ok", str(tmp_path / "c")
    )
    assert code == 0 and out.startswith(f"wrote {first.id} (")
    assert err == f"warning: {weights}: its bytes are gone; its pointer is in its place\n"
    assert parse_pointer((tmp_path / "c" / weights).read_bytes()) is not None
    # the other run's bytes are still there
    code, out, _ = invoke(project, "checkout", second.id, "--after", str(tmp_path / "d"))
    assert code == 0 and "restored 1 large file(s) from the project" in out


def test_dataset_metadata_goes_into_the_before_commit(project: Project, tmp_path: Path) -> None:
    toml = project.root / "mlbook.toml"
    toml.write_text(toml.read_text().replace('max_file_size = "1 MB"', "max_file_size = 2000"))
    data = project.datasets_dir / "digits"
    (data / "images").mkdir(parents=True)
    (data / "images" / "0.png").write_bytes(b"\x89PNG not recorded")
    (data / "dataset.json").write_text('{"name": "digits"}\n')
    split = "".join(
        json.dumps({"id": str(i), "file": "images/0.png", "split": "train" if i % 5 else "test"})
        + "\n"
        for i in range(100)
    )
    (data / "records.jsonl").write_text(split)  # over 2000 bytes: a pointer
    (project.models_dir / "E001_x.py").write_text(
        'import mlbook\nexp = mlbook.Experiment(dataset="digits")\n'
        "@exp.train\ndef train(run):\n    return {}\n"
    )
    committed(Project.open(project.root))
    git(project.root, "rm", "-q", "-r", "--cached", "Datasets/digits")  # untracked data
    result = run_experiments(Project.open(project.root), ["E001"])
    assert result.ok, [r.error for r in result.runs]
    record = get_run(project, result.runs[0].run_id)
    names = git(project.root, "ls-tree", "-r", "--name-only", record.commit_before or "")
    assert "Datasets/digits/records.jsonl" in names.split()
    assert "Datasets/digits/dataset.json" in names.split()
    assert "Datasets/digits/images/0.png" not in names.split()
    (data / "records.jsonl").write_text("a new split\n")  # the split changes later
    gone = r"Datasets/digits/records\.jsonl; nothing was written"
    with pytest.raises(ProvenanceError, match=gone):
        checkout_run(Project.open(project.root), record.id, tmp_path / "gone")
    (data / "records.jsonl").write_text(split)
    done = checkout_run(Project.open(project.root), record.id, tmp_path / "split")
    assert done.restored == ("Datasets/digits/records.jsonl",)
    assert (tmp_path / "split" / "Datasets" / "digits" / "records.jsonl").read_text() == split


def test_pointer_files_parse_strictly_and_never_leave_the_project(tmp_path: Path) -> None:
    good = Pointer("Models/outputs/w.pt", "a" * 64, 12)
    assert parse_pointer(good.to_bytes()) == good
    for bad in (
        b"",
        b"not a pointer",
        b'{"mlbook-pointer": 2, "path": "x", "sha256": "' + b"a" * 64 + b'", "size": 1}',
        b'{"mlbook-pointer": 1, "path": "x", "sha256": "short", "size": 1}',
        b'{"mlbook-pointer": 1, "path": "x", "sha256": "' + b"a" * 64 + b'", "size": true}',
        good.to_bytes() + b" " * 1024,
    ):
        assert parse_pointer(bad) is None, bad
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "secret").write_bytes(b"outside")
    tree = tmp_path / "tree"
    tree.mkdir()
    from mlbook._fs import sha256_file

    escaping = Pointer("../secret", sha256_file(tmp_path / "secret"), 7)
    (tree / "w.pt").write_bytes(escaping.to_bytes())
    done = restore_pointers(tree, project)
    assert done.restored == () and done.missing == (escaping,)


def test_the_hash_cache_rehashes_only_changed_files(tmp_path: Path) -> None:
    state = tmp_path / ".mlbook"
    state.mkdir()
    (tmp_path / "big.bin").write_bytes(b"x" * 5000)
    first = HashCache(state).pointer(tmp_path, "big.bin")
    cache = HashCache(state)
    assert cache.entries == {}  # nothing saved yet
    writer = HashCache(state)
    writer.pointer(tmp_path, "big.bin")
    writer.save()
    reread = HashCache(state)
    assert reread.pointer(tmp_path, "big.bin") == first and not reread.changed
    (tmp_path / "big.bin").write_bytes(b"y" * 5001)
    changed = reread.pointer(tmp_path, "big.bin")
    assert (
        changed is not None and changed.size == 5001 and changed.sha256 != (first or changed).sha256
    )
    os.utime(tmp_path / "big.bin")
    assert HashCache(state).pointer(tmp_path, "nope") is None
