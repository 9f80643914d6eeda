"""DVC files read natively, DVC's md5 computed natively, datasets recorded honestly per run.

The real-DVC tests use a `git init` + `dvc init` project and the `dvc` command
installed by `bash scripts/test.sh` (extra `dvc`); they skip when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from dvc_helpers import DVC, SCRIPT, mlbook, needs_dvc, sh

from mlbook.cli import cli
from mlbook.errors import DatasetError, DvcFileError
from mlbook.experiments.query import run_datasets, runs
from mlbook.project import Project
from mlbook.provenance.datahash import HashCache, content_hash, file_md5
from mlbook.provenance.datasets import capture_datasets, dataset_identity
from mlbook.provenance.dvc import DvcState, read_dvc_file, read_dvc_lock, read_dvc_yaml, run_dvc


@pytest.fixture
def dvc_project(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project in git with `dvc init`, a plain experiment E001 on Datasets/cars (3 files)."""
    if not DVC.exists():
        pytest.skip("dvc not installed (extra mlbook[dvc])")
    monkeypatch.setenv("PATH", f"{DVC.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    root = project.root
    (root / "Models" / "E001_x.py").write_text(SCRIPT)
    with open(root / "mlbook.toml", "a") as handle:
        handle.write('\n[experiments.E001]\ndataset = "cars"\n')
    cars = root / "Datasets" / "cars"
    cars.mkdir(parents=True)
    for index in range(3):
        (cars / f"r{index}.txt").write_text(f"row {index}\n")
    sh(root, "dvc", "init", "-q")
    sh(root, "dvc", "add", "-q", "Datasets/cars")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "start")
    return Project.open(root)


# ---------------------------------------------------------------- parsing


def test_dvc3_and_dvc2_files_are_parsed(tmp_path: Path) -> None:
    (tmp_path / "Datasets").mkdir()
    v3 = tmp_path / "Datasets" / "a.dvc"
    v3.write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  size: 10\n  nfiles: 2\n"
        "  hash: md5\n  path: a\n"
    )
    v2 = tmp_path / "Datasets" / "b.dvc"
    v2.write_text("outs:\n- md5: ffffffffffffffffffffffffffffffff\n  size: 4\n  path: b.csv\n")
    (out3,) = read_dvc_file(v3, tmp_path)
    (out2,) = read_dvc_file(v2, tmp_path)
    assert (out3.path, out3.scheme, out3.size, out3.nfiles, out3.is_dir) == (
        "Datasets/a",
        "md5",
        10,
        2,
        True,
    )
    assert (out2.path, out2.scheme, out2.source, out2.is_dir) == (
        "Datasets/b.csv",
        "md5-dos2unix",
        "Datasets/b.dvc",
        False,
    )


def test_dvc_lock_stages_with_wdir_and_legacy_schema(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  clean:\n    cmd: python clean.py\n    wdir: Data_processing\n"
        "    deps: [clean.py, ../Datasets/raw]\n"
    )
    lock = tmp_path / "dvc.lock"
    lock.write_text(
        "schema: '2.0'\nstages:\n  clean:\n    cmd: python clean.py\n    deps:\n"
        "    - path: clean.py\n      hash: md5\n      md5: 1111111111111111111111111111111a\n"
        "    params:\n      params.yaml:\n        limit: 3\n    outs:\n"
        "    - path: ../Datasets/cars\n      hash: md5\n"
        "      md5: 2222222222222222222222222222222a.dir\n      nfiles: 3\n"
    )
    wdirs = {s.name: s.wdir for s in read_dvc_yaml(tmp_path / "dvc.yaml", tmp_path)}
    (stage,) = read_dvc_lock(lock, tmp_path, wdirs)
    assert stage.deps[0].path == "Data_processing/clean.py"
    assert (stage.outs[0].path, stage.outs[0].stage, stage.outs[0].scheme) == (
        "Datasets/cars",
        "clean",
        "md5",
    )
    assert stage.params == {"params.yaml": {"limit": 3}}
    lock.write_text(
        "prep:\n  cmd: python p.py\n  outs:\n  - path: Datasets/x\n"
        "    md5: 3333333333333333333333333333333a.dir\n"
    )
    (old,) = read_dvc_lock(lock, tmp_path)
    assert old.outs[0].scheme == "md5-dos2unix"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("outs:\n- md5: xyz\n  path: a\n", r"a\.dvc:2: outs\[0\]\.md5: expected 32 hex digits"),
        ("outs:\n- md5: [1\n", r"a\.dvc:\d: not valid YAML"),
        ("meta: 1\n", r"a\.dvc: no outs"),
        ("outs:\n- path: ../../etc\n", r"a\.dvc:2: outs\[0\]\.path: '\.\./\.\./etc' leaves"),
        ("outs:\n- path: a\n  hash: sha1\n", r"a\.dvc:3: outs\[0\]\.hash: unknown hash 'sha1'"),
    ],
)
def test_a_malformed_dvc_file_is_one_line_with_file_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "Datasets" / "a.dvc"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(DvcFileError, match=message) as caught:
        read_dvc_file(path, tmp_path)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("Datasets/a.dvc")


def test_malformed_lock_names_the_stage_key(tmp_path: Path) -> None:
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  clean:\n    cmd: [1]\n    outs: 3\n")
    with pytest.raises(DvcFileError, match=r"dvc.lock:5: stages.clean.outs: expected a list"):
        read_dvc_lock(lock, tmp_path)


# ---------------------------------------------------------------- native hashes


def _tree(base: Path) -> Path:
    data = base / "Datasets" / "mixed"
    (data / "sub dir").mkdir(parents=True)
    (data / "a.txt").write_bytes(b"line\r\nline\r\n")
    (data / "b.bin").write_bytes(bytes(range(256)) * 10)
    (data / "sub dir" / "ü.json").write_text('{"x": 1}\n', encoding="utf-8")
    (data / "empty").write_bytes(b"")
    (data / "big.txt").write_bytes(b"x\r\n" * 400_000)  # two 1 MiB blocks, CRLF across one
    return data


def test_dos2unix_applies_per_text_block() -> None:
    Path("t.txt").write_bytes(b"a\r\nb\r\n")
    Path("b.bin").write_bytes(b"\x00\r\n")
    assert file_md5("t.txt", "md5-dos2unix") != file_md5(Path("t.txt"), "md5")
    Path("u.txt").write_bytes(b"a\nb\n")
    assert file_md5("t.txt", "md5-dos2unix") == file_md5("u.txt", "md5")
    assert file_md5("b.bin", "md5-dos2unix") == file_md5("b.bin", "md5")


@pytest.mark.slow
@needs_dvc
def test_native_dir_hash_equals_dvcs_for_dvc3_and_dvc2(
    dvc_project: Project, tmp_path: Path
) -> None:
    root = dvc_project.root
    data = _tree(root)
    sh(root, "dvc", "add", "-q", "Datasets/mixed")
    (out,) = read_dvc_file(root / "Datasets" / "mixed.dvc", root)
    assert out.scheme == "md5"
    mine = content_hash(data, "md5")
    assert mine is not None
    assert (mine.md5, mine.size, mine.nfiles) == (out.md5, out.size, out.nfiles)
    # a DVC 2 file (no `hash:`) with the native dos2unix md5: DVC's commit finds the
    # data unchanged and keeps the file as it is (a wrong md5 is rewritten as DVC 3)
    native = content_hash(data, "md5-dos2unix")
    assert native is not None and native.md5 != mine.md5
    legacy = root / "Datasets" / "mixed.dvc"
    text = f"outs:\n- md5: {native.md5}\n  size: {native.size}\n  nfiles: {native.nfiles}\n"
    legacy.write_text(text + "  path: mixed\n")
    sh(root, "dvc", "commit", "-f", "-q", "Datasets/mixed.dvc")
    (old,) = read_dvc_file(legacy, root)
    assert (old.scheme, old.md5) == ("md5-dos2unix", native.md5)
    legacy.write_text(f"outs:\n- md5: {'a' * 32}.dir\n  path: mixed\n")
    sh(root, "dvc", "commit", "-f", "-q", "Datasets/mixed.dvc")
    assert read_dvc_file(legacy, root)[0].md5 == mine.md5  # rewritten: the check can fail
    # one file tracked on its own
    single = root / "Datasets" / "one.csv"
    single.write_text("a,b\r\n1,2\r\n")
    sh(root, "dvc", "add", "-q", "Datasets/one.csv")
    (one,) = read_dvc_file(root / "Datasets" / "one.csv.dvc", root)
    found = content_hash(single, "md5")
    assert found is not None and found.md5 == one.md5


@needs_dvc
def test_dvc_state_and_the_cache_spare_reading_unchanged_files(
    dvc_project: Project, tmp_path: Path
) -> None:
    cars = dvc_project.root / "Datasets" / "cars"
    state = DvcState(dvc_project.root)
    assert state.db is not None, "DVC's state database was not found"
    via_state = content_hash(cars, "md5", HashCache(None), state)
    assert via_state is not None and via_state.hashed == 0
    for path in cars.iterdir():  # written seconds ago: make them old enough to remember
        os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))
    cache = HashCache(tmp_path / "cache.sqlite")
    assert content_hash(cars, "md5", cache).hashed == 3  # type: ignore[union-attr]
    cache.flush()
    (cars / "r1.txt").write_text("row X\n")  # same size, new content, just now
    changed = content_hash(cars, "md5", cache)
    assert changed is not None and changed.md5 != via_state.md5 and changed.hashed == 1
    cache.close()


# ---------------------------------------------------------------- runs record their data


@needs_dvc
def test_an_edited_dataset_is_recorded_dirty_and_strict_refuses(dvc_project: Project) -> None:
    root = dvc_project.root
    (clean,) = capture_datasets(dvc_project, "Datasets/cars")
    assert (clean.state, clean.nfiles, clean.source) == ("clean", 3, "Datasets/cars.dvc")
    (root / "Datasets" / "cars" / "r3.txt").write_text("new row\n")
    refused = mlbook(root, "run", "E001", "--strict", code=1)
    assert refused.stderr.startswith("error: Datasets/cars changed since Datasets/cars.dvc")
    assert "--strict refuses to run on it" in refused.stderr
    assert runs(dvc_project) == []
    done = mlbook(root, "run", "E001")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "recorded as modified" in warnings[0]
    (run,) = runs(dvc_project)
    (record,) = run_datasets(dvc_project, run.id)
    assert (record.state, record.dirty, record.nfiles) == ("modified", True, 4)
    assert record.recorded == clean.hash != record.hash
    assert run.data_version == record.hash
    shown = mlbook(root, "show", run.id).stdout
    assert f"data: Datasets/cars {record.short} (4 files) [modified;" in shown


def test_an_untracked_dataset_keeps_its_content_hash(project: Project) -> None:
    data = project.datasets_dir / "digits"
    data.mkdir(parents=True)
    (data / "dataset.json").write_text('{"name": "digits"}')
    (data / "records.jsonl").write_text('{"id": "1"}\n')
    (record,) = capture_datasets(project, data)
    assert (record.state, record.scheme, record.dirty) == ("untracked", "sha256-metadata", False)
    raw = project.datasets_dir / "raw"
    raw.mkdir()
    (raw / "x.bin").write_bytes(b"\x00\x01")
    assert dataset_identity(project, raw).scheme == "md5"
    with pytest.raises(DatasetError, match="no such dataset"):
        dataset_identity(project, "Datasets/none")


def test_a_malformed_dvc_file_stops_a_strict_run(project: Project) -> None:
    (project.root / ".dvc").mkdir()  # a DVC repository (as `dvc init` leaves it)
    (project.datasets_dir / "bad.dvc").write_text("outs:\n- md5: nope\n  path: bad\n")
    (project.root / "Models" / "E001_x.py").write_text(SCRIPT)
    result = CliRunner().invoke(cli, ["-C", str(project.root), "run", "E001", "--strict"])
    assert result.exit_code == 1
    assert result.output.strip().startswith(
        "error: Datasets/bad.dvc:2: outs[0].md5: expected 32 hex digits (+ .dir), got 'nope'"
    )


def test_run_dvc_without_dvc_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(DatasetError, match=r"dvc is not installed .*mlbook\[dvc\]"):
        run_dvc(["status"], Path.cwd())


def test_import_mlbook_loads_no_dvc_or_yaml() -> None:
    probe = "import mlbook, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert not [m for m in loaded if m.split(".")[0] in ("dvc", "dvc_data", "yaml")]


def test_cache_survives_an_unwritable_location(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    cache = HashCache(blocked / "sub" / "cache.sqlite")  # cannot be created: in memory
    data = tmp_path / "d"
    data.mkdir()
    (data / "a").write_text("a")
    assert content_hash(data, "md5", cache) is not None
    cache.close()
