"""Atomic writes: the target is the old file or the whole new one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mlbook._fs import TEMP_SUFFIX, atomic_write_text, atomic_writer, sha256_file, temp_dir_for


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_failed_write_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "out" / "f.txt"
    target.parent.mkdir()
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_mode_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)
    atomic_write_text(target, "#!/bin/sh\necho hi\n")
    assert target.stat().st_mode & 0o777 == 0o755


def test_sha256(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"abc")
    assert sha256_file(target) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_temp_file_goes_to_the_projects_state_dir(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "Models" / "deep").mkdir(parents=True)
    (root / "mlbook.toml").write_text("")
    target = root / "Models" / "deep" / "f.txt"
    assert temp_dir_for(target) == root / ".mlbook" / "tmp"
    with atomic_writer(target) as handle:
        handle.write(b"x")
        [temp] = list((root / ".mlbook" / "tmp").iterdir())
        assert temp.name.startswith(".f.txt.") and temp.name.endswith(TEMP_SUFFIX)
        assert sorted(p.name for p in target.parent.iterdir()) == []
    assert target.read_text() == "x"
    assert list((root / ".mlbook" / "tmp").iterdir()) == []


def test_temp_file_outside_a_project_stays_beside_the_target(tmp_path: Path) -> None:
    target = tmp_path / "plain" / "f.txt"
    target.parent.mkdir()
    assert temp_dir_for(target) == target.parent
    atomic_write_text(target, "x")
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir()
    or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev,
    reason="needs /dev/shm on another filesystem than the temporary directory",
)
def test_state_dir_on_another_filesystem_is_not_used(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlbook.toml").write_text("")
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        (root / ".mlbook").symlink_to(elsewhere)
        assert temp_dir_for(root / "f.txt") == root  # a rename across filesystems is not atomic
        atomic_write_text(root / "f.txt", "x")
        assert (root / "f.txt").read_text() == "x"
    finally:
        shutil.rmtree(elsewhere)
