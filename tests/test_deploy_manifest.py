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


# -- any bytes in manifest.json: a Manifest or one ExportError line ---------------------------

from hypothesis import HealthCheck  # noqa: E402

from mlbook.deploy.manifest import parse_manifest  # noqa: E402
from mlbook.errors import MlbookError  # noqa: E402


def parses_or_one_line(data: bytes) -> None:
    try:
        manifest = parse_manifest(data, "b/manifest.json")
    except MlbookError as exc:
        message = str(exc)
        assert message.startswith("b/manifest.json") and "\n" not in message
        assert len(message) < 1000
    else:
        assert isinstance(manifest, Manifest)


VALID = {
    "format": "mlbook-export",
    "format_version": 1,
    "experiment": "E001",
    "version": "v",
    "run_id": "r1",
    "entry_point": "code/E001_x.py",
    "created": "2026-01-01T00:00:00+00:00",
    "mlbook": "0",
    "python": "3.11",
    "files": [{"path": "code/E001_x.py", "size": 6, "sha256": "0" * 64}],
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinity included: written as NaN/Infinity tokens
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_give_a_manifest_or_one_line(data: bytes) -> None:
    parses_or_one_line(data)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from([*VALID, "metrics", "packages", "weights", "onnx", "extra"]),
    value=json_values,
)
def test_any_value_in_any_field_gives_a_manifest_or_one_line(field: str, value: object) -> None:
    import json

    parses_or_one_line(json.dumps({**VALID, field: value}).encode())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"a":', b",", b"1", b"NaN", b"\xff"])))
def test_json_fragments_give_a_manifest_or_one_line(parts: list[bytes]) -> None:
    parses_or_one_line(b'{"format": "mlbook-export", "format_version": 1, "x": ' + b"".join(parts))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "not an mlbook export manifest"),
        (b'{"metrics": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (
            orjson.dumps({**VALID, "metrics": {"a": 1}})[:-1] + b', "x": ' + b"[" * 50_000,
            "nested too deeply",
        ),
        (b'{"format": "mlbook-export", "format_version": NaN}', "not valid JSON"),
        (b'{"format": "mlbook-\xff"}', "not valid JSON"),
        (orjson.dumps({**VALID, "experiment": "x" * 5_000_000}), None),
        (orjson.dumps({**VALID, "format_version": "9" * 10_000}), "is not supported"),
        (orjson.dumps({**VALID, "files": [{"path": "a", "size": -1, "sha256": "0" * 64}]}), ">= 0"),
        (
            orjson.dumps({**VALID, "files": [{"path": "a", "size": 1, "sha256": "zz"}]}),
            "matching regex",
        ),
        (orjson.dumps({**VALID, "files": "all"}), "Expected `array`, got `str`"),
        (b"", "not valid JSON"),
    ],
)
def test_hostile_manifests(data: bytes, message: str | None, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_bytes(data)
    if message is None:
        assert read_manifest(tmp_path).experiment == "x" * 5_000_000
        return
    with pytest.raises(ExportError, match=message) as refused:
        read_manifest(tmp_path)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 1000


def test_oversized_manifest_is_refused_before_parsing(tmp_path: Path) -> None:
    from mlbook.deploy.manifest import MAX_MANIFEST_BYTES

    with open(tmp_path / "manifest.json", "wb") as handle:
        handle.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(ExportError, match="larger than 64 MiB"):
        read_manifest(tmp_path)


def test_signature_file_is_never_listed(tmp_path: Path) -> None:
    tiny_bundle(tmp_path)
    (tmp_path / "signature.json").write_text("{}")
    assert check_bundle(tmp_path).files == read_manifest(tmp_path).files
    with pytest.raises(ExportError, match="escapes the bundle"):
        check_path("signature.json")
