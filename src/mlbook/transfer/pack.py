"""``mlbook pack``: finished runs, their commits and outputs, as one signed file.

:func:`pack_runs` picks runs (IDs, experiments, filters), reads every row the
store holds about them (:func:`mlbook.experiments.query.stored_runs`: metric
chunks as they are), bundles their hidden refs with git, adds their output
files (``--outputs none|small|all``; small: under 10 MB each), and writes the
pack (:mod:`mlbook.transfer.packfile`) signed with the project's key. Runs
still running are left out and said so. The file appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import msgspec

from mlbook._fs import TEMP_SUFFIX, atomic_writer, sha256_file, temp_dir_for
from mlbook._version import __version__
from mlbook.errors import MlbookError, TransferError
from mlbook.experiments.query import RunRecord, StoredRun
from mlbook.progress import NullReporter, Reporter
from mlbook.project import Project
from mlbook.transfer.packfile import (
    OUTPUTS_PREFIX,
    REFS_MEMBER,
    ROWS_MEMBER,
    SIGNING_CONTEXT,
    Member,
    PackedRun,
    PackManifest,
    Rows,
    Source,
    write_pack,
)

if TYPE_CHECKING:
    from mlbook.experiments.store import Store

__all__ = ["SMALL_OUTPUT_BYTES", "OutputsPolicy", "PackResult", "pack_runs", "select_runs"]

OutputsPolicy = Literal["none", "small", "all"]
#: ``--outputs small`` takes output files under this size (10 MB).
SMALL_OUTPUT_BYTES = 10 * 1000 * 1000
_OPERATORS = ("<", ">", "=", "!")


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack_runs` wrote.

    Attributes:
        path: the pack file (``"-"``: written to a stream).
        runs: IDs of the runs packed.
        skipped: ``(run id, why)`` of selected runs left out (still running).
        outputs: output files packed.
        large: output files left out by ``--outputs small``.
        refs: hidden refs bundled.
        size: bytes written.
    """

    path: str
    runs: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    outputs: int = 0
    large: int = 0
    refs: int = 0
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "path": self.path,
            "runs": self.runs,
            "skipped": [{"run": run, "why": why} for run, why in self.skipped],
            "outputs": self.outputs,
            "large_outputs_left_out": self.large,
            "refs": self.refs,
            "bytes": self.size,
        }


def select_runs(
    project: Project, selectors: Sequence[str] = (), experiments: Sequence[str] = ()
) -> list[RunRecord]:
    """The runs that ``selectors`` and ``experiments`` name, oldest first.

    A selector with an operator (``acc>0.9``, ``status=completed``) is a filter;
    any other is a run ID or a unique prefix. Filters and ``experiments`` narrow
    the runs of the store; IDs add runs. With neither, every run.

    Raises:
        ExperimentError: an unknown or ambiguous run ID, a bad filter.
    """
    from mlbook.experiments.query import get_run, runs

    filters = [s for s in selectors if any(op in s for op in _OPERATORS)]
    ids = [s for s in selectors if s not in filters]
    chosen: dict[str, RunRecord] = {}
    with _readonly(project) as store:
        for ident in ids:
            record = get_run(store, ident)
            chosen[record.id] = record
        if filters or experiments or not ids:
            for record in runs(store, experiment=list(experiments) or None, filters=filters):
                chosen.setdefault(record.id, record)
    return sorted(chosen.values(), key=lambda r: (r.created, r.id))


@contextlib.contextmanager
def _readonly(project: Project) -> Iterator[Store]:
    from mlbook.experiments.store import Store

    with Store.for_project(project, readonly=True) as store:
        yield store


def pack_runs(
    project: Project,
    selectors: Sequence[str] = (),
    *,
    experiments: Sequence[str] = (),
    output: Path | str | IO[bytes],
    outputs: OutputsPolicy = "small",
    reporter: Reporter | None = None,
) -> PackResult:
    """Pack runs of ``project`` into one signed file (see the module doc).

    Args:
        project: the project whose runs are packed.
        selectors: run IDs (or unique prefixes) and filters (see :func:`select_runs`).
        experiments: only runs of these experiments.
        output: the pack file to write (replaced atomically), or an open binary stream.
        outputs: which output files come along: ``none``, ``small`` (under 10 MB
            each) or ``all``.
        reporter: progress (default: none).

    Raises:
        TransferError: nothing to pack, a file changed while packed, the pack
            cannot be written.
        ExperimentError: an unknown run ID or a bad filter.
    """
    from mlbook.experiments.store import Store

    reporter = reporter or NullReporter()
    with contextlib.suppress(MlbookError):  # settle runs whose runner died (marked crashed)
        Store.for_project(project).close()
    chosen = select_runs(project, selectors, experiments)
    finished = [r for r in chosen if r.status != "running"]
    skipped = [(r.id, "still running") for r in chosen if r.status == "running"]
    if not finished:
        raise TransferError(
            "no finished runs to pack"
            + (f" ({len(skipped)} still running)" if skipped else "")
            + "; list runs with `mlbook runs`"
        )
    state = project.state_dir
    state.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pack-", dir=temp_dir_for(state / "pack")) as tmp:
        rows, records, hashes = _rows(project, finished, reporter)
        sources = [Source(_member(ROWS_MEMBER, rows), data=rows)]
        refs = _bundle(project, [r.id for r in records], Path(tmp) / REFS_MEMBER)
        if refs:
            bundle = Path(tmp) / REFS_MEMBER
            member = Member(REFS_MEMBER, bundle.stat().st_size, sha256_file(bundle))
            sources.append(Source(member, path=bundle))
        files, large = _outputs(project, records, outputs, reporter)
        sources.extend(files)
        manifest = _manifest(project, records, hashes, outputs, [s.member for s in sources])
        signature = _sign(project, manifest)
        path, size = _write(output, manifest, signature, sources)
    return PackResult(
        path=path,
        runs=[r.id for r in records],
        skipped=skipped,
        outputs=len(files),
        large=large,
        refs=refs,
        size=size,
    )


def _rows(
    project: Project, finished: list[RunRecord], reporter: Reporter
) -> tuple[bytes, list[RunRecord], dict[str, str]]:
    """The ``runs.msgpack`` bytes, the runs as read, and their content hashes."""
    from mlbook.experiments.query import experiment_rows, stored_runs

    with _readonly(project) as store, reporter.task("reading runs", len(finished)) as task:
        stored: list[StoredRun] = []
        ids = [r.id for r in finished]
        for start in range(0, len(ids), 200):
            batch = stored_runs(store, ids[start : start + 200])
            stored.extend(run for run in batch if run.record.status != "running")
            task.advance(len(batch))
        experiments = experiment_rows(store, {run.record.experiment for run in stored})
    rows = msgspec.msgpack.encode(Rows(stored, experiments))
    return rows, [run.record for run in stored], {run.id: run.content_hash() for run in stored}


def _member(path: str, data: bytes) -> Member:
    return Member(path, len(data), hashlib.sha256(data).hexdigest())


def _bundle(project: Project, run_ids: list[str], destination: Path) -> int:
    """Bundle the runs' hidden refs into ``destination``; how many (0: no git, no refs)."""
    from mlbook.provenance.git import bundle_refs, git_info, run_refs

    if isinstance(git_info(project.root), str):
        return 0
    refs = run_refs(project.root, set(run_ids))
    if refs:
        bundle_refs(project.root, sorted(refs), destination)
    return len(refs)


def _outputs(
    project: Project, records: list[RunRecord], policy: OutputsPolicy, reporter: Reporter
) -> tuple[list[Source], int]:
    """The output files of the runs as pack members; and how many were too large."""
    if policy == "none":
        return [], 0
    sources: list[Source] = []
    large = 0
    outputs_root = project.outputs_dir.resolve()
    with reporter.task("hashing outputs", len(records)) as task:
        for record in records:
            task.advance()
            if not record.outputs:
                continue
            directory = (project.root / record.outputs).resolve()
            if not directory.is_relative_to(outputs_root) or not directory.is_dir():
                continue
            for path in sorted(directory.rglob("*")):
                try:
                    info = path.lstat()
                except OSError:
                    continue  # vanished meanwhile
                if not stat.S_ISREG(info.st_mode) or path.name.endswith(TEMP_SUFFIX):
                    continue
                if policy == "small" and info.st_size >= SMALL_OUTPUT_BYTES:
                    large += 1
                    continue
                name = f"{OUTPUTS_PREFIX}{record.id}/{path.relative_to(directory).as_posix()}"
                member = Member(name, info.st_size, sha256_file(path))
                sources.append(Source(member, path=path))
    return sources, large


def _manifest(
    project: Project,
    records: list[RunRecord],
    hashes: dict[str, str],
    policy: OutputsPolicy,
    members: list[Member],
) -> bytes:
    from mlbook.experiments.store import SCHEMA_VERSION
    from mlbook.provenance.git import root_commits

    manifest = PackManifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        mlbook=__version__,
        project=project.name,
        roots=list(root_commits(project.root)),
        schema=SCHEMA_VERSION,
        outputs=policy,
        runs=[PackedRun(r.id, r.experiment, r.version, hashes[r.id]) for r in records],
        members=members,
    )
    return msgspec.json.format(msgspec.json.encode(manifest)) + b"\n"


def _sign(project: Project, manifest: bytes) -> bytes:
    from mlbook.deploy.signing import project_key, signature_bytes
    from mlbook.errors import ExportError

    try:
        key = project_key(project.root)
    except ExportError as exc:
        raise TransferError(f"cannot sign the pack: {exc}") from exc
    return signature_bytes(manifest, key, SIGNING_CONTEXT)


def _write(
    output: Path | str | IO[bytes], manifest: bytes, signature: bytes, sources: list[Source]
) -> tuple[str, int]:
    """Write the pack; return where (``-`` for a stream) and how many bytes."""
    if not isinstance(output, (str, Path)):
        counter = _Counter(output)
        write_pack(counter, manifest, signature, sources)  # type: ignore[arg-type]
        return "-", counter.count
    target = Path(output)
    if target.is_dir():
        raise TransferError(f"{target} is a directory; name the pack file, e.g. runs.mlbook")
    try:
        with atomic_writer(target) as handle:
            counter = _Counter(handle)
            write_pack(counter, manifest, signature, sources)  # type: ignore[arg-type]
    except OSError as exc:
        raise TransferError(f"{target}: cannot write the pack ({exc.strerror or exc})") from exc
    return str(target), counter.count


class _Counter:
    """A binary writer that counts the bytes it passes on."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.count = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()
