"""The manifest: path checks (property-based), sealing, and the refusals of check_bundle."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbook.deploy.manifest import (
    Manifest,
    check_bundle,
    check_path,
    read_manifest,
    write_manifest,
)
from mlbook.errors import ExportError


def tiny_bundle(root: Path) -> Manifest:
    (root / "code").mkdir(parents=True)
    (root / "code" / "E001_x.py").write_text("x = 1\n")
    (root / "params.json").write_text("{}")
    manifest = Manifest(
        experiment="E001",
        version="v",
        run_id="r1",
        entry_point="code/E001_x.py",
        created="2026-01-01T00:00:00+00:00",
        mlbook="0",
        python="3.11",
    )
    return write_manifest(root, manifest)


segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00"),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(segment, st.sampled_from(["..", ".", "", "/"])), min_size=1, max_size=5))
def test_accepted_paths_stay_inside_the_bundle(parts: list[str]) -> None:
    text = "/".join(parts)
    try:
        pure = check_path(text)
    except ExportError as exc:
        assert "escapes the bundle" in str(exc)
        return
    root = Path("/bundle")
    joined = Path(os.path.normpath(root / pure))
    assert joined != root and root in joined.parents
    assert ".." not in pure.parts and not pure.is_absolute()
    assert pure == PurePosixPath(text) and pure.as_posix() == text


@pytest.mark.parametrize(
    "bad", ["..", "../x", "a/../../x", "/abs", "C:/x", "a\\b", "a//b", "./a", "a/", "manifest.json"]
)
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ExportError, match="escapes the bundle"):
        check_path(bad)


def test_seal_and_check_round_trip(tmp_path: Path) -> None:
    sealed = tiny_bundle(tmp_path)
    assert [f.path for f in sealed.files] == ["code/E001_x.py", "params.json"]
    assert read_manifest(tmp_path) == sealed
    assert check_bundle(tmp_path) == sealed


def test_check_names_the_changed_file(tmp_path: Path) -> None:
    tiny_bundle(tmp_path)
    (tmp_path / "code" / "E001_x.py").write_text("x = 2\n")
    with pytest.raises(ExportError, match=r"file code/E001_x\.py was changed after export"):
        check_bundle(tmp_path)


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    tiny_bundle(tmp_path / "b")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "b" / "code" / "lib").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ExportError, match=r"code/lib is a symbolic link"):
        check_bundle(tmp_path / "b")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"format": "other"}, "not an mlbook export manifest"),
        ({"format_version": 99}, "format_version 99 is not supported"),
        ({"experiment": 5}, "Expected `str`, got `int`"),
        ({"entry_point": "../evil.py"}, "escapes the bundle"),
        ({"files": [{"path": "params.json", "size": 2, "sha256": "0" * 64}] * 2}, "listed twice"),
    ],
)
def test_bad_manifests_are_refused(tmp_path: Path, edit: dict[str, object], message: str) -> None:
    tiny_bundle(tmp_path)
    raw = orjson.loads((tmp_path / "manifest.json").read_bytes())
    raw.update(edit)
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(raw))
    with pytest.raises(ExportError, match=message):
        check_bundle(tmp_path)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not a directory"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(ExportError, match=r"manifest\.json: missing; .* is not an export bundle"):
        read_manifest(tmp_path)
