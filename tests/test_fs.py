"""Atomic writes: the target is the old file or the whole new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlbook._fs import atomic_write_text, atomic_writer, sha256_file


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
