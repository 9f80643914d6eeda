"""Signed bundles: keys, trust, pickles that never run unsigned, code only from verified bytes.

The bundles here are made by hand (a pure-Python script, pickled weights), sealed
with the real manifest writer and signed with real Ed25519 keys: no torch, no
child process, so each test takes milliseconds.
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlbook
from mlbook.cli import cli
from mlbook.deploy import list_exports
from mlbook.deploy.manifest import Manifest, read_manifest, write_manifest
from mlbook.deploy.signing import (
    SIGNATURE_FILE,
    SigningKey,
    export_public_key,
    project_key,
    read_public_key,
    sign_bundle,
)
from mlbook.errors import ExportError
from mlbook.project import Project
from mlbook.scaffold import init_project

SCRIPT = """
import mlbook

exp = mlbook.Experiment()


@exp.model
def build(p):
    return None


@exp.predict
def predict(model, inputs):
    from helpers import late          # imported lazily, after the load

    return late.answer(model, inputs)
"""

LATE = """
def answer(model, inputs):
    return ("original", model, inputs)
"""


class Payload:
    """Unpickling this writes a marker file: proof that a pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.write_text, (self.marker, "the pickle ran"))


def make_bundle(root: Path, weights: object, key: SigningKey | None) -> Path:
    """A bundle with pickled ``weights``, sealed, and signed with ``key`` (if any)."""
    (root / "code" / "helpers").mkdir(parents=True)
    (root / "code" / "E001_hand.py").write_text(textwrap.dedent(SCRIPT))
    (root / "code" / "helpers" / "__init__.py").write_text("")
    (root / "code" / "helpers" / "late.py").write_text(textwrap.dedent(LATE))
    (root / "weights").mkdir()
    (root / "weights" / "model.pkl").write_bytes(pickle.dumps(weights))
    (root / "params.json").write_text("{}")
    manifest = Manifest(
        experiment="E001",
        version="hand",
        run_id="r1",
        entry_point="code/E001_hand.py",
        created="2026-01-01T00:00:00+00:00",
        mlbook="0",
        python="3.11",
        weights=["weights/model.pkl"],
        weights_format="pickle",
    )
    write_manifest(root, manifest)
    if key is not None:
        sign_bundle(root, key)
    return root


@pytest.fixture
def proj(project: Project) -> Project:
    project_key(project.root)
    return project


@pytest.fixture
def other_key(tmp_path: Path) -> SigningKey:
    """The key of another project."""
    other = init_project(tmp_path / "other").project
    return project_key(other.root)


def in_project(project: Project, name: str = "E001-hand") -> Path:
    return project.exports_dir / name


def test_key_is_made_once_private_and_readable_by_openssl_tools(project: Project) -> None:
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )

    first = project_key(project.root)
    second = project_key(project.root)
    assert first.public == second.public
    keys = project.root / ".mlbook" / "keys"
    assert stat.S_IMODE((keys / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    private = load_pem_private_key((keys / "signing.key").read_bytes(), password=None)
    public = load_pem_public_key((keys / "signing.pub").read_bytes())
    assert private.public_key().public_bytes_raw() == first.public.raw  # type: ignore[union-attr]
    assert public.public_bytes_raw() == first.public.raw  # type: ignore[union-attr]
    assert first.public.fingerprint.startswith("SHA256:") and len(first.public.fingerprint) == 50
    assert ".mlbook/" in (project.root / ".gitignore").read_text()  # never committed


def test_signed_bundle_in_its_project_loads_and_unpickles(proj: Project) -> None:
    bundle = make_bundle(in_project(proj), {"w": 1}, project_key(proj.root))
    loaded = mlbook.load(bundle)
    assert loaded.model == {"w": 1}
    assert loaded.signature.status == "trusted" and loaded.signature.project
    assert loaded.predict(3) == ("original", {"w": 1}, 3)


def test_unsigned_bundle_is_refused_unless_trusted(proj: Project) -> None:
    bundle = make_bundle(in_project(proj), {"w": 1}, None)
    with pytest.raises(ExportError, match=r"the bundle is not signed \(no signature\.json\)"):
        mlbook.load(bundle)
    with pytest.raises(ExportError, match=r"is a pickle, .* this bundle is not signed"):
        mlbook.load(bundle, trust=True)  # trust=True does not cover pickles


def test_foreign_key_is_named_and_can_be_trusted(
    proj: Project, other_key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = make_bundle(in_project(proj), {"w": 2}, other_key)
    own = project_key(proj.root).public.fingerprint
    with pytest.raises(ExportError) as refused:
        mlbook.load(bundle)
    message = str(refused.value)
    assert f"signed by key {other_key.public.fingerprint}, which is not trusted" in message
    assert f"(trusted: {own})" in message and "MLBOOK_TRUSTED_KEYS" in message
    public = export_public_key(other_key.path.parents[2], tmp_path / "other.pub")
    assert mlbook.load(bundle, trusted_keys=[public]).model == {"w": 2}
    monkeypatch.setenv("MLBOOK_TRUSTED_KEYS", f"{tmp_path / 'nothing.pub'}{os.pathsep}{public}")
    with pytest.raises(ExportError, match=r"MLBOOK_TRUSTED_KEYS: .*nothing\.pub: no such file"):
        mlbook.load(bundle)
    monkeypatch.setenv("MLBOOK_TRUSTED_KEYS", str(public))
    assert mlbook.load(bundle).signature.status == "trusted"
    monkeypatch.delenv("MLBOOK_TRUSTED_KEYS")
    with pytest.raises(ExportError, match=r"is a pickle, .* signed by key SHA256:.*not trusted"):
        mlbook.load(bundle, trust=True)


def test_bundle_outside_any_project_trusts_no_key_by_default(
    other_key: SigningKey, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "loose" / "E001-hand", [1], other_key)
    with pytest.raises(ExportError, match=r"which is not trusted \(trusted: none\)"):
        mlbook.load(bundle)
    assert mlbook.load(bundle, trusted_keys=[other_key.public]).model == [1]
    with pytest.raises(ExportError, match=r"give a list of key files"):
        mlbook.load(bundle, trusted_keys=str(tmp_path / "k.pub"))  # type: ignore[arg-type]


def test_bad_key_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(ExportError, match=r"junk\.pub: not an Ed25519 public key in PEM"):
        read_public_key(tmp_path / "junk.pub")
    (tmp_path / "huge.pub").write_bytes(b"x" * 100_000)
    with pytest.raises(ExportError, match=r"huge\.pub: too large for a key"):
        read_public_key(tmp_path / "huge.pub")
    (tmp_path / "signing.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(ExportError, match=r"signing\.key: not an Ed25519 private key"):
        SigningKey.read(tmp_path / "signing.key")


@pytest.mark.parametrize("trust", [False, True])
def test_reduce_payload_in_a_tampered_bundle_never_runs(
    proj: Project, tmp_path: Path, trust: bool
) -> None:
    marker = tmp_path / "marker.txt"
    bundle = make_bundle(in_project(proj), {"w": 1}, project_key(proj.root))
    # swap the weights for a payload and re-hash the manifest: the signature no longer matches
    (bundle / "weights" / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    write_manifest(bundle, read_manifest(bundle))
    with pytest.raises(ExportError, match=r"signature\.json does not match manifest\.json"):
        mlbook.load(bundle, trust=trust)
    assert not marker.exists()
    # the same without a signature, or signed by someone else's key
    (bundle / SIGNATURE_FILE).unlink()
    with pytest.raises(ExportError, match="not signed"):
        mlbook.load(bundle, trust=trust)
    sign_bundle(bundle, SigningKey(os.urandom(32), tmp_path / "stranger.key"))
    with pytest.raises(ExportError, match="not trusted"):
        mlbook.load(bundle, trust=trust)
    assert not marker.exists()


def test_payload_without_rehashing_is_a_changed_file(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    bundle = make_bundle(in_project(proj), {"w": 1}, project_key(proj.root))
    (bundle / "weights" / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ExportError, match=r"file weights/model\.pkl was changed after export"):
        mlbook.load(bundle)
    assert not marker.exists()


def test_code_written_after_the_load_never_runs(proj: Project, tmp_path: Path) -> None:
    bundle = make_bundle(in_project(proj), "model", project_key(proj.root))
    loaded = mlbook.load(bundle)
    marker = tmp_path / "marker.txt"
    evil = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    # the lazily imported module is changed on disk after the load ...
    (bundle / "code" / "helpers" / "late.py").write_text(
        evil + "def answer(model, inputs):\n    return ('swapped', model, inputs)\n"
    )
    # ... and a module that was never in the bundle appears beside it
    (bundle / "code" / "helpers" / "new.py").write_text(evil)
    assert loaded.predict(1) == ("original", "model", 1)  # the verified bytes
    with pytest.raises(ModuleNotFoundError):
        loaded.module.__builtins__["__import__"]("helpers.new", fromlist=["x"])
    assert not marker.exists()
    late = __import__(f"{loaded.module.__name__.rsplit('.', 1)[0]}.helpers.late", fromlist=["x"])
    assert late.__file__ == str(bundle / "code" / "helpers" / "late.py")  # for data files
    assert late.__spec__ is not None and late.__spec__.submodule_search_locations is None
    # a new load checks the bundle again and refuses it
    with pytest.raises(
        ExportError, match=r"extra file code/helpers/new\.py is not in the manifest"
    ):
        mlbook.load(bundle)
    (bundle / "code" / "helpers" / "new.py").unlink()
    with pytest.raises(ExportError, match=r"file code/helpers/late\.py was changed after export"):
        mlbook.load(bundle)


def test_tracebacks_show_the_verified_source(proj: Project) -> None:
    import traceback

    bundle = make_bundle(in_project(proj), "m", project_key(proj.root))
    (bundle / "code" / "helpers" / "late.py").write_text(
        "def answer(model, inputs):\n    raise ValueError('verified line')\n"
    )
    write_manifest(bundle, read_manifest(bundle))
    sign_bundle(bundle, project_key(proj.root))
    loaded = mlbook.load(bundle)
    (bundle / "code" / "helpers" / "late.py").write_text("# replaced\n# replaced\n")
    with pytest.raises(ValueError, match="verified line") as failed:
        loaded.predict(1)
    text = "".join(traceback.format_exception(failed.value))
    assert "raise ValueError('verified line')" in text and "# replaced" not in text


def test_exports_lists_each_signature_status(
    proj: Project, other_key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = project_key(proj.root)
    make_bundle(in_project(proj, "a-signed"), 1, own)
    make_bundle(in_project(proj, "b-foreign"), 1, other_key)
    make_bundle(in_project(proj, "c-unsigned"), 1, None)
    tampered = make_bundle(in_project(proj, "d-tampered"), 1, own)
    (tampered / "params.json").write_text('{"lr": 1}')
    rehashed = make_bundle(in_project(proj, "e-rehashed"), 1, own)
    (rehashed / "params.json").write_text('{"lr": 1}')
    write_manifest(rehashed, read_manifest(rehashed))
    deep = make_bundle(in_project(proj, "f-deep"), 1, own)
    (deep / "manifest.json").write_bytes(b'{"metrics": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    trusted = make_bundle(in_project(proj, "g-trusted"), 1, other_key)
    (trusted / "params.json").write_text("{ }")  # sealed and signed again by the other key
    write_manifest(trusted, read_manifest(trusted))
    sign_bundle(trusted, other_key)
    public = export_public_key(other_key.path.parents[2], tmp_path / "other.pub")
    statuses = {info.name: info.status for info in list_exports(proj)}
    assert statuses == {
        "a-signed": "signed",
        "b-foreign": "foreign",
        "c-unsigned": "unsigned",
        "d-tampered": "tampered",
        "e-rehashed": "tampered",
        "f-deep": "invalid",
        "g-trusted": "foreign",
    }
    monkeypatch.setenv("MLBOOK_TRUSTED_KEYS", str(public))
    infos = {info.name: info for info in list_exports(proj)}
    assert infos["g-trusted"].status == "trusted" and infos["b-foreign"].status == "trusted"
    assert infos["g-trusted"].key == other_key.public.fingerprint
    monkeypatch.delenv("MLBOOK_TRUSTED_KEYS")
    result = CliRunner().invoke(cli, ["-C", str(proj.root), "exports"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["export", "run", "metrics", "created", "onnx", "status"]
    assert [line.split()[-1] for line in lines[1:8]] == [
        "signed",
        "foreign",
        "unsigned",
        "tampered",
        "tampered",
        "invalid",
        "foreign",
    ]
    problems = {line.split(":", 1)[0]: line for line in lines[8:]}
    assert f"signed by key {other_key.public.fingerprint}" in problems["b-foreign"]
    assert "not signed" in problems["c-unsigned"]
    assert "params.json was changed after export" in problems["d-tampered"]
    assert "signature.json does not match manifest.json" in problems["e-rehashed"]
    assert "nested too deeply" in problems["f-deep"]


def test_cli_key_shows_and_exports(project: Project, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-C", str(project.root), "key"])
    assert result.exit_code == 0, result.output
    fingerprint = project_key(project.root).public.fingerprint
    assert result.output.splitlines() == [
        f"key       {fingerprint}",
        "public    .mlbook/keys/signing.pub",
        "private   .mlbook/keys/signing.key (keep it in the project)",
    ]
    target = tmp_path / "out" / "project.pub"
    result = CliRunner().invoke(
        cli, ["-C", str(project.root), "key", "--export", str(target), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert read_public_key(target).raw == project_key(project.root).public.raw
    assert fingerprint in result.output and str(target) in result.output


def test_copied_keys_directory_shares_the_key(project: Project, tmp_path: Path) -> None:
    original = project_key(project.root)
    clone = init_project(tmp_path / "clone").project
    shutil.copytree(project.root / ".mlbook" / "keys", clone.root / ".mlbook" / "keys")
    assert project_key(clone.root).public.raw == original.public.raw
