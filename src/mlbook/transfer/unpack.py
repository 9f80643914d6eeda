"""``mlbook unpack``: runs from a pack into this project, all or nothing, idempotently.

:func:`unpack` reads the pack as a stream and checks all of it first
(:func:`mlbook.transfer.packfile.read_pack`: signature, every member's size and
sha256), then that it comes from this project (the same root commit; ``force``
skips that), that its runs and refs are what the manifest says, and what is
already here: a run with the same ID and the same content is skipped, one with
different content is a conflict and refuses the whole pack, naming both hashes.
Only then, in this order:

1. the git objects of the runs' snapshots go into the repository (no ref yet);
2. the rows go into the store in one transaction (``Store.import_runs``), which
   checks again, so a concurrent unpack or a running ``mlbook run`` is safe;
3. output files, staged under ``.mlbook/tmp/``, are renamed into ``Models/outputs/``;
4. the hidden refs ``refs/mlbook/runs/<id>/{before,after}`` are created;
5. the journal gets the runs' step lines (a broken journal is a warning).

Unpacking the same pack again adds nothing and says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import msgspec

from mlbook._fs import temp_dir_for
from mlbook.errors import MlbookError, MlbookWarning, TransferError
from mlbook.experiments.query import RunRecord, StoredRun
from mlbook.progress import NullReporter, Reporter
from mlbook.project import Project
from mlbook.transfer.packfile import (
    OUTPUTS_PREFIX,
    REFS_MEMBER,
    ROWS_MEMBER,
    ReadPack,
    Rows,
    read_pack,
    safe_relative,
)

if TYPE_CHECKING:
    from mlbook.experiments.store import Conflict

__all__ = ["UnpackResult", "unpack"]

T = TypeVar("T")

_SHOWN_CONFLICTS = 5


@dataclass(frozen=True)
class UnpackResult:
    """What :func:`unpack` did.

    Attributes:
        source: the pack (a path, ``-`` for standard input, or ``HOST:PATH``).
        added: IDs of the runs added.
        present: IDs of runs that were already here, with the same content.
        outputs: output files written.
        refs: hidden refs created.
        signer: fingerprint of the key that signed the pack (``None``: unsigned).
        project: the name of the packing project.
    """

    source: str
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    outputs: int = 0
    refs: int = 0
    signer: str | None = None
    project: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "source": self.source,
            "added": self.added,
            "present": self.present,
            "outputs": self.outputs,
            "refs": self.refs,
            "signer": self.signer,
            "project": self.project,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnpackResult:
        """The result from its :meth:`to_dict` (a remote unpack reports it as JSON)."""
        return msgspec.convert(data, type=_ResultData).result()


class _ResultData(msgspec.Struct):
    source: str
    added: list[str]
    present: list[str]
    outputs: int
    refs: int
    signer: str | None
    project: str

    def result(self) -> UnpackResult:
        return UnpackResult(**msgspec.structs.asdict(self))


def unpack(
    project: Project,
    source: Path | str | IO[bytes],
    *,
    name: str | None = None,
    force: bool = False,
    trust: bool = False,
    trusted_keys: Sequence[Path | str] | None = None,
    reporter: Reporter | None = None,
) -> UnpackResult:
    """Unpack a pack into ``project`` (see the module doc).

    Args:
        project: the project receiving the runs.
        source: the pack file, or an open binary stream of it.
        name: what to call the pack in messages (default: its path, or ``-``).
        force: unpack a pack made by another project (another root commit).
        trust: accept a pack that is unsigned or signed by a key not trusted.
        trusted_keys: public key files to trust (default: this project's own key
            and the files in ``MLBOOK_TRUSTED_KEYS``).
        reporter: progress (default: none).

    Raises:
        TransferError: a bad, untrusted or foreign pack; a conflict; a path that
            would leave ``Models/outputs/``. Nothing is written then.
    """
    from mlbook.deploy.signing import trusted_keys as keys_for
    from mlbook.errors import ExportError

    reporter = reporter or NullReporter()
    label = name or (str(source) if isinstance(source, (str, Path)) else "-")
    try:
        keys = keys_for(project.root, trusted_keys)
    except ExportError as exc:
        raise TransferError(str(exc)) from exc
    state = project.state_dir
    state.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=temp_dir_for(state / "unpack")))
    try:
        with _opened(source, label) as stream:
            pack = read_pack(stream, label, staging, keys, trust=trust)
        return _apply(project, pack, label, force, reporter)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _opened(source: Path | str | IO[bytes], label: str) -> Any:
    if not isinstance(source, (str, Path)):
        yield source
        return
    if str(source) == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(source, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise TransferError(f"{label}: cannot open the pack ({exc.strerror or exc})") from exc
    with handle:
        yield handle


def _apply(
    project: Project, pack: ReadPack, label: str, force: bool, reporter: Reporter
) -> UnpackResult:
    from mlbook.experiments.query import stored_runs
    from mlbook.experiments.store import Store

    manifest = pack.manifest
    heads = _check_git(project, pack, label, force)
    rows = _rows(pack, label)
    incoming = {run.id: run for run in rows.runs}
    with Store.for_project(project, readonly=True) as store:
        here = {run.id: run for run in stored_runs(store, list(incoming))}
    _refuse_conflicts(label, _differing([(r, here[r.id]) for r in rows.runs if r.id in here]))
    new = [run for run in rows.runs if run.id not in here]
    placements = _placements(project, pack, new, label)
    if heads and REFS_MEMBER in pack.files:
        from mlbook.provenance.git import unbundle

        _git_step(lambda: unbundle(project.root, pack.files[REFS_MEMBER]), label)
    with (
        reporter.task("adding runs", len(new)) as task,
        Store.for_project(project) as store,
    ):
        outcome = store.import_runs(new, rows.experiments)
        task.advance(len(new))
    _refuse_conflicts(label, outcome.conflicts)  # added by another process since the check
    added = set(outcome.added)
    written = _place(placements, added)
    refs = 0
    if heads:
        from mlbook.provenance.git import create_refs

        refs = len(_git_step(lambda: create_refs(project.root, heads), label))
    _journal(project, [incoming[i].record for i in outcome.added], rows)
    return UnpackResult(
        source=label,
        added=list(outcome.added),
        present=[run.id for run in rows.runs if run.id not in added],
        outputs=written,
        refs=refs,
        signer=pack.signer,
        project=manifest.project,
    )


def _rows(pack: ReadPack, label: str) -> Rows:
    """The rows member, checked against the manifest's runs and their hashes."""
    from mlbook.provenance.git import run_ref

    if not any(member.path == ROWS_MEMBER for member in pack.manifest.members):
        raise TransferError(f"{label}: the pack has no {ROWS_MEMBER}; make it again")
    try:
        rows = msgspec.msgpack.decode(pack.rows, type=Rows)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TransferError(f"{label}: {ROWS_MEMBER} is not valid ({exc})") from exc
    listed = {run.id: run.sha256 for run in pack.manifest.runs}
    ids = [run.id for run in rows.runs]
    if ids != [run.id for run in pack.manifest.runs] or len(set(ids)) != len(ids):
        raise TransferError(f"{label}: {ROWS_MEMBER} and the manifest list different runs")
    for run in rows.runs:
        if run.content_hash() != listed[run.id]:
            raise TransferError(
                f"{label}: run {run.id} does not match its hash in the manifest; refused"
            )
        if run.record.status == "running":
            raise TransferError(f"{label}: run {run.id} is still running; pack it when it ends")
        try:
            run_ref(run.id, "before")
        except MlbookError as exc:
            raise TransferError(f"{label}: {exc}") from exc
    return rows


def _check_git(project: Project, pack: ReadPack, label: str, force: bool) -> dict[str, str]:
    """Refuse a pack of another project; return the refs to create (checked)."""
    from mlbook.provenance.git import bundle_heads, git_info, root_commits

    info = git_info(project.root)
    ours = set(root_commits(project.root)) if not isinstance(info, str) else set()
    theirs = set(pack.manifest.roots)
    if ours and theirs and not ours & theirs and not force:
        raise TransferError(
            f"{label}: the pack comes from another project ({pack.manifest.project}, root commit "
            f"{sorted(theirs)[0][:12]}; this one has {sorted(ours)[0][:12]}); "
            "unpack it with --force if that is what you want"
        )
    bundle = pack.files.get(REFS_MEMBER)
    if bundle is None:
        return {}
    if isinstance(info, str):
        if force:
            return {}
        raise TransferError(
            f"{label}: the pack holds the runs' commits but {info}; "
            "or unpack with --force to leave the commits out"
        )
    heads = _git_step(lambda: bundle_heads(project.root, bundle), label)
    ids = {run.id for run in pack.manifest.runs}
    for ref in heads:
        parts = ref.split("/")
        if len(parts) != 5 or "/".join(parts[:3]) != "refs/mlbook/runs" or parts[3] not in ids:
            raise TransferError(
                f"{label}: the pack's bundle holds {ref!r}, which is not a ref of its runs; refused"
            )
        if parts[4] not in ("before", "after"):
            raise TransferError(f"{label}: the pack's bundle holds {ref!r}; refused")
    return heads


def _git_step(step: Callable[[], T], label: str) -> T:
    """Run a git step; its failure is one line naming the pack."""
    from mlbook.errors import ProvenanceError

    try:
        return step()
    except ProvenanceError as exc:
        raise TransferError(f"{label}: {exc}") from exc


def _differing(pairs: Sequence[tuple[StoredRun, StoredRun]]) -> list[Conflict]:
    """The (incoming, here) pairs whose content differs, as conflicts."""
    from mlbook.experiments.store import Conflict

    found = []
    for incoming, here in pairs:
        ours, theirs = here.content_hash(), incoming.content_hash()
        if ours != theirs:
            found.append(Conflict(incoming.id, ours, theirs))
    return found


def _refuse_conflicts(label: str, conflicts: Sequence[Conflict]) -> None:
    """Refuse, naming each run here with different content and both hashes."""
    if not conflicts:
        return
    shown = "; ".join(
        f"{c.run_id} (here {c.ours[:12]}, pack {c.theirs[:12]})"
        for c in conflicts[:_SHOWN_CONFLICTS]
    )
    more = f" and {len(conflicts) - _SHOWN_CONFLICTS} more" if len(conflicts) > 5 else ""
    raise TransferError(
        f"{label}: {len(conflicts)} run(s) are here with different content: {shown}{more}; "
        "refused, nothing was written (compare them with `mlbook show RUN_ID`)"
    )


@dataclass(frozen=True)
class _Placement:
    run_id: str
    staged: Path
    target: Path


def _placements(
    project: Project, pack: ReadPack, new: list[StoredRun], label: str
) -> list[_Placement]:
    """Where each output file of the new runs goes; refuses paths outside the outputs area."""
    outputs_root = project.outputs_dir.resolve()
    directories: dict[str, Path] = {}
    for run in new:
        relative = safe_relative(run.record.outputs) if run.record.outputs else None
        if relative is None:
            continue
        directory = (project.root / relative).resolve()
        if directory != outputs_root and directory.is_relative_to(outputs_root):
            directories[run.id] = directory
    packed = {run.id for run in pack.manifest.runs}
    wanted = {run.id: run for run in new}
    placements: list[_Placement] = []
    for member, staged in pack.files.items():
        if not member.startswith(OUTPUTS_PREFIX):
            continue
        run_id, _, inner = member[len(OUTPUTS_PREFIX) :].partition("/")
        if run_id not in packed:
            raise TransferError(f"{label}: {member!r} belongs to no run of the pack; refused")
        if run_id not in wanted:
            continue  # the run is here already, with its outputs
        if run_id not in directories:
            raise TransferError(
                f"{label}: run {run_id} has output files but its output directory "
                f"{wanted[run_id].record.outputs!r} is not inside "
                f"{project.relative(project.outputs_dir)}/; refused"
            )
        directory = directories[run_id]
        target = directory / inner  # inner is a plain relative path (checked by read_pack)
        if directory.exists() and not target.resolve().is_relative_to(directory):
            raise TransferError(f"{label}: {member!r} would leave the outputs area; refused")
        if target.exists() or target.is_symlink():
            from mlbook._fs import sha256_file

            if not target.is_file() or sha256_file(target) != sha256_file(staged):
                raise TransferError(
                    f"{label}: {project.relative(target)} exists with other content; "
                    "move it away and unpack again"
                )
            continue
        placements.append(_Placement(run_id, staged, target))
    return placements


def _place(placements: list[_Placement], added: set[str]) -> int:
    """Rename staged output files into place (runs actually added only)."""
    written = 0
    made: set[Path] = set()
    for placement in placements:
        if placement.run_id not in added:
            continue
        try:
            if placement.target.parent not in made:
                placement.target.parent.mkdir(parents=True, exist_ok=True)
                made.add(placement.target.parent)
            os.chmod(placement.staged, 0o644)
            os.replace(placement.staged, placement.target)
        except OSError as exc:
            raise TransferError(
                f"{placement.target}: cannot write an output file ({exc.strerror or exc}); "
                "the runs are in the store; free some space and unpack again to add the rest"
            ) from exc
        written += 1
    return written


def _journal(project: Project, records: list[RunRecord], rows: Rows) -> None:
    from mlbook.provenance.observer import journal_runs

    if not records:
        return
    titles = {row.id: row.title for row in rows.experiments}
    try:
        journal_runs(project, records, titles)
    except MlbookError as exc:  # a side channel: the runs are in
        warnings.warn(f"journal: {exc}", MlbookWarning, stacklevel=3)
