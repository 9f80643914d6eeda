"""Pack and unpack between two clones of one project: real runs, real git, real store."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import msgspec
import pytest
from transfer_helpers import (
    Clones,
    add_experiment,
    git,
    make_clones,
    run,
    snapshot_of,
    state_of,
)

from mlbook.deploy.signing import export_public_key, project_key, signature_bytes
from mlbook.errors import TransferError
from mlbook.experiments.query import get_run, metric_series, run_artifacts, runs
from mlbook.experiments.store import Store
from mlbook.project import Project
from mlbook.provenance.journal import read_journal
from mlbook.scaffold import init_project
from mlbook.transfer.pack import pack_runs
from mlbook.transfer.packfile import SIGNING_CONTEXT, Member, PackManifest, Source, write_pack
from mlbook.transfer.unpack import unpack


@pytest.fixture
def clones(tmp_path: Path) -> Clones:
    return make_clones(tmp_path)


def test_pack_unpack_both_ways(clones: Clones, tmp_path: Path) -> None:
    a, b = clones.a, clones.b
    ran_a = run(a, "E001")
    add_experiment(b, "E002", "second")
    ran_b = run(b, "E002")

    to_b = tmp_path / "a.mlbook"
    packed = pack_runs(a, output=to_b)
    assert sorted(packed.runs) == sorted(ran_a)
    assert packed.refs == 4
    first = unpack(b, to_b, trust=True)
    assert sorted(first.added) == sorted(ran_a) and first.present == []
    assert first.refs == 4 and first.outputs == 6  # result.txt, big.bin, output.log each

    to_a = tmp_path / "b.mlbook"
    pack_runs(b, output=to_a)
    back = unpack(a, to_a, trust=True)
    assert sorted(back.added) == sorted(ran_b)
    assert sorted(back.present) == sorted(ran_a)

    assert snapshot_of(a) == snapshot_of(b)
    assert len(snapshot_of(a)) == 4
    again = unpack(b, to_b, trust=True)
    assert again.added == [] and sorted(again.present) == sorted(ran_a)
    assert snapshot_of(a) == snapshot_of(b)

    # commits, outputs, artifacts and the journal came along
    run_id = ran_a[0]
    record = get_run(b, run_id)
    after = git(b.root, "rev-parse", f"refs/mlbook/runs/{run_id}/after").strip()
    assert after == record.commit_after
    assert git(b.root, "cat-file", "-t", record.commit_before or "").strip() == "commit"
    assert (b.root / record.outputs / "result.txt").read_text().startswith("k ")
    assert run_artifacts(b, run_id) == run_artifacts(a, run_id)
    steps = {s.run_id for e in read_journal(b.journal_path) if e.id == "E001" for s in e.steps}
    assert set(ran_a) <= steps
    assert metric_series(b, run_id) == metric_series(a, run_id)  # times too


def test_selection_by_id_experiment_and_filter(clones: Clones, tmp_path: Path) -> None:
    a = clones.a
    small, big = run(a, "E001")
    add_experiment(a, "E002", "second")
    run(a, "E002")
    others = [r.id for r in runs(a) if r.id != small]
    # a prefix, as a user types one: the shortest from 17 characters that no other run shares
    prefix = next(
        small[:n] for n in range(17, 23) if not any(o.startswith(small[:n]) for o in others)
    )
    by_id = pack_runs(a, [prefix], output=tmp_path / "one.mlbook")
    assert by_id.runs == [small]
    by_filter = pack_runs(a, ["acc>0.3"], experiments=["E001"], output=tmp_path / "f.mlbook")
    assert by_filter.runs == [big]
    assert len(pack_runs(a, output=tmp_path / "all.mlbook").runs) == 4


def test_outputs_none_small_all(tmp_path: Path) -> None:
    clones = make_clones(tmp_path, big=10 * 1000 * 1000)
    run(clones.a, "E001")
    none = pack_runs(clones.a, output=tmp_path / "none.mlbook", outputs="none")
    small = pack_runs(clones.a, output=tmp_path / "small.mlbook")
    every = pack_runs(clones.a, output=tmp_path / "all.mlbook", outputs="all")
    assert (none.outputs, small.outputs, every.outputs) == (0, 4, 6)
    assert small.large == 2
    result = unpack(clones.b, tmp_path / "all.mlbook", trust=True)
    record = get_run(clones.b, result.added[0])
    assert (clones.b.root / record.outputs / "big.bin").stat().st_size == 10 * 1000 * 1000


def test_nothing_to_pack(clones: Clones, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no finished runs to pack"):
        pack_runs(clones.a, output=tmp_path / "x.mlbook")
    assert not (tmp_path / "x.mlbook").exists()


def _member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    with tarfile.open(path) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


@pytest.mark.parametrize("member", ["runs.msgpack", "refs.bundle", "outputs", "manifest.json"])
def test_a_tampered_pack_is_refused_before_anything_is_written(
    clones: Clones, tmp_path: Path, member: str
) -> None:
    run(clones.a, "E001")
    pack = tmp_path / "a.mlbook"
    pack_runs(clones.a, output=pack)
    offsets = _member_offsets(pack)
    name = next(n for n in offsets if n.startswith(member))
    offset, size = offsets[name]
    data = bytearray(pack.read_bytes())
    data[offset + size // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    before = state_of(clones.b)
    with pytest.raises(TransferError) as caught:
        unpack(clones.b, pack, trust=True)
    message = str(caught.value)
    if member == "manifest.json":
        assert "the signature does not match the manifest" in message
    else:
        assert f"member {name!r} has sha256" in message
    assert "refused, nothing was written" in message
    assert state_of(clones.b) == before


def test_a_truncated_pack_is_refused(clones: Clones, tmp_path: Path) -> None:
    run(clones.a, "E001")
    pack = tmp_path / "a.mlbook"
    pack_runs(clones.a, output=pack)
    data = pack.read_bytes()
    before = state_of(clones.b)
    content = len(data.rstrip(b"\0"))  # tar pads its end with zeros: cut into the data
    for cut in (len(data) // 2, content - 100, 700):
        pack.write_bytes(data[:cut])
        with pytest.raises(TransferError, match="truncated"):
            unpack(clones.b, pack, trust=True)
    assert state_of(clones.b) == before


def test_a_pack_of_another_project_is_refused_unless_forced(clones: Clones, tmp_path: Path) -> None:
    run(clones.a, "E001")
    pack = tmp_path / "a.mlbook"
    pack_runs(clones.a, output=pack)
    other = init_project(tmp_path / "other").project
    add_experiment(other, "E001", "elsewhere")
    before = state_of(other)
    with pytest.raises(TransferError, match=r"comes from another project \(a, root commit "):
        unpack(other, pack, trust=True)
    assert state_of(other) == before
    forced = unpack(other, pack, trust=True, force=True)
    assert len(forced.added) == 2 and forced.refs == 4


def test_same_run_with_other_content_is_a_conflict(clones: Clones, tmp_path: Path) -> None:
    a, b = clones.a, clones.b
    small, _ = run(a, "E001")
    pack_runs(a, [small], output=tmp_path / "one.mlbook")
    unpack(b, tmp_path / "one.mlbook", trust=True)
    with Store.for_project(b) as store:
        store.set_provenance(small, commit_reason="edited here")
    pack_runs(a, output=tmp_path / "all.mlbook")
    before = state_of(b)
    with pytest.raises(TransferError) as caught:
        unpack(b, tmp_path / "all.mlbook", trust=True)
    message = str(caught.value)
    assert f"1 run(s) are here with different content: {small} (here " in message
    assert "refused, nothing was written" in message
    assert [r.id for r in runs(b)] == [small]  # the other run was not added either
    assert state_of(b) == before


def test_keys_an_unsigned_pack_and_trust(
    clones: Clones, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(clones.a, "E001")
    pack = tmp_path / "a.mlbook"
    pack_runs(clones.a, output=pack)
    with pytest.raises(TransferError, match="which is not trusted"):
        unpack(clones.b, pack)
    key = export_public_key(clones.a.root, tmp_path / "a.pub")
    assert len(unpack(clones.b, pack, trusted_keys=[key]).added) == 2
    monkeypatch.setenv("MLBOOK_TRUSTED_KEYS", str(key))
    assert unpack(clones.b, pack).present != []

    unsigned = tmp_path / "unsigned.mlbook"
    with tarfile.open(pack) as src, tarfile.open(unsigned, "w") as out:
        for info in src.getmembers():
            if info.name != "signature.json":
                out.addfile(info, src.extractfile(info))
    with pytest.raises(TransferError, match="the pack is not signed"):
        unpack(clones.b, unsigned)
    assert unpack(clones.b, unsigned, trust=True).added == []


def _resigned(project: Project, pack: Path, out: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Rewrite a pack with ``change(members: dict[name, bytes])`` and sign it with
    ``project``'s own key (so only the checks after the signature can refuse it)."""
    with tarfile.open(pack) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = msgspec.json.decode(members.pop("manifest.json"), type=PackManifest)
    members.pop("signature.json")
    change(members, manifest)
    import hashlib

    entries = [Member(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in members.items()]
    manifest = msgspec.structs.replace(manifest, members=entries)
    data = msgspec.json.encode(manifest)
    signature = signature_bytes(data, project_key(project.root), SIGNING_CONTEXT)
    with out.open("wb") as handle:
        write_pack(handle, data, signature, [Source(e, data=members[e.path]) for e in entries])


def test_paths_and_refs_stay_inside_even_in_a_trusted_pack(clones: Clones, tmp_path: Path) -> None:
    a, b = clones.a, clones.b
    small, _ = run(a, "E001")
    pack = tmp_path / "a.mlbook"
    pack_runs(a, [small], output=pack)
    before = state_of(b)

    def escape(members, manifest) -> None:  # type: ignore[no-untyped-def]
        members[f"outputs/{small}/../../../../evil.txt"] = b"x"

    _resigned(b, pack, tmp_path / "escape.mlbook", escape)
    with pytest.raises(TransferError, match="which a run pack cannot hold"):
        unpack(b, tmp_path / "escape.mlbook")

    def branch_ref(members, manifest) -> None:  # type: ignore[no-untyped-def]
        bundle = tmp_path / "evil.bundle"
        branch = git(a.root, "rev-parse", "--abbrev-ref", "HEAD").strip()
        git(a.root, "bundle", "create", "-q", str(bundle), branch)
        members["refs.bundle"] = bundle.read_bytes()

    _resigned(b, pack, tmp_path / "ref.mlbook", branch_ref)
    with pytest.raises(TransferError, match="which is not a ref of its runs"):
        unpack(b, tmp_path / "ref.mlbook")
    assert state_of(b) == before
    ok = tmp_path / "ok.mlbook"
    _resigned(b, pack, ok, lambda members, manifest: None)
    assert unpack(b, ok).added == [small]


def test_a_stream_pack_round_trips(clones: Clones) -> None:
    small, _ = run(clones.a, "E001")
    buffer = io.BytesIO()
    result = pack_runs(clones.a, [small], output=buffer)
    assert result.path == "-"
    buffer.seek(0)
    assert unpack(clones.b, buffer, trust=True, name="stream").added == [small]
