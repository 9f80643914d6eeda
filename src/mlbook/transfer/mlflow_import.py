"""``mlbook import mlflow``: the runs of an MLflow tracking store as mlbook runs.

MLflow is read through its own client (``MlflowClient``; extra ``mlflow``,
imported only here), from a SQL store (``sqlite:///mlflow.db``) or a file store
(``./mlruns``); a bare path is taken as one or the other. Each finished MLflow
run becomes one mlbook run:

- run ID ``<UTC start, YYYYmmdd-HHMMSS>-<MLflow run id>``: importing twice adds
  nothing (runs already here are skipped), and the MLflow run id stays visible;
- experiment: ``--as E020``, else a new ID per MLflow experiment (the next free
  ``E<n>``), reused on later imports; its journal entry carries the MLflow name;
- version: the MLflow run name (``mlflow.runName``), made safe for a directory;
- params (numbers where MLflow's strings are numbers), final metrics (the latest
  values), every metric series with its steps and timestamps, status
  (FINISHED -> completed, FAILED -> failed, KILLED -> interrupted), start and end;
- ``Models/outputs/<ID>/<version>/<run-id>/mlflow.json``: the MLflow run and
  experiment ids, the tracking URI and every tag; ``artifacts/``: the run's
  artifacts, copied, each recorded with its sha256;
- ``commit_before``: the tag ``mlflow.source.git.commit`` when it is a commit hash.

Runs still RUNNING or SCHEDULED, and whatever else cannot be carried over, are
listed in the result's ``unmapped`` (the import goes on). Rows are written in
batches, one transaction each (``Store.import_runs``).

Metric series are read per batch of runs: through MLflow's SQLAlchemy engine and
its own ``metrics`` table model when the store is a SQL store (MLflow's client
reads one run and key per call, 0.2 ms a point), through
``MlflowClient.get_metric_history`` otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from mlbook._fs import temp_dir_for
from mlbook.errors import MlbookError, MlbookWarning, TransferError
from mlbook.experiments.query import (
    Artifact,
    ExperimentRow,
    RunRecord,
    StoredChunk,
    StoredRun,
    StoredSummary,
)
from mlbook.experiments.series import Chunk, chunk_of
from mlbook.progress import NullReporter, Reporter
from mlbook.project import Project

__all__ = ["MlflowImportResult", "Unmapped", "import_mlflow", "resolve_tracking_uri"]

_STATUSES = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted"}
_BATCH = 100
_CHUNK_POINTS = 4096
_VERSION_BAD = re.compile(r"[^A-Za-z0-9_.=,+-]+")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_INT = re.compile(r"^-?(0|[1-9]\d*)$")
_FLOAT = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?$")
_INFO_FILE = "mlflow.json"
_ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
_ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class Unmapped:
    """Something of an MLflow run that was not carried over, and why."""

    run: str
    what: str
    why: str


@dataclass
class MlflowImportResult:
    """What :func:`import_mlflow` did.

    Attributes:
        uri: the tracking URI read.
        added: IDs of the mlbook runs made.
        present: IDs of runs imported before (left as they are).
        experiments: MLflow experiment name -> the mlbook experiment ID its runs went to.
        artifacts: artifact files copied.
        unmapped: what could not be carried over.
    """

    uri: str
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    experiments: dict[str, str] = field(default_factory=dict)
    artifacts: int = 0
    unmapped: list[Unmapped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return {
            "uri": self.uri,
            "added": self.added,
            "present": self.present,
            "experiments": self.experiments,
            "artifacts": self.artifacts,
            "unmapped": [{"run": u.run, "what": u.what, "why": u.why} for u in self.unmapped],
        }


def resolve_tracking_uri(uri: str | None) -> str:
    """The tracking URI to open: a path becomes ``file://`` (a directory) or ``sqlite:///``.

    ``None`` means MLflow's default (``MLFLOW_TRACKING_URI``, else ``./mlruns``
    when it exists, else ``sqlite:///mlflow.db``). A local store must exist:
    MLflow would otherwise create an empty one.

    Raises:
        TransferError: a local store that does not exist.
    """
    if uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (
            "mlruns" if Path("mlruns").is_dir() else "sqlite:///mlflow.db"
        )
    parsed = urlparse(uri)
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path
        path = Path(uri).expanduser()
        if path.is_dir():
            return path.resolve().as_uri()
        if path.is_file():
            return f"sqlite:///{path.resolve()}"
        raise TransferError(
            f"{uri}: no MLflow tracking store there; give its directory (mlruns) or database file"
        )
    if parsed.scheme == "file":
        if not Path(unquote(parsed.path)).is_dir():
            raise TransferError(f"{uri}: no MLflow file store there (no such directory)")
    elif parsed.scheme == "sqlite":
        database = unquote(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else ""
        if not database or not Path(database).is_file():
            raise TransferError(f"{uri}: no MLflow database there (no such file)")
    return uri


def import_mlflow(
    project: Project,
    tracking_uri: str | None = None,
    *,
    experiments: Sequence[str] = (),
    as_id: str | None = None,
    artifacts: bool = True,
    reporter: Reporter | None = None,
) -> MlflowImportResult:
    """Import the runs of an MLflow tracking store into ``project`` (see the module doc).

    Args:
        project: the project receiving the runs.
        tracking_uri: the MLflow store (a URI or a path; default: MLflow's default).
        experiments: only these MLflow experiments (by name); default: every one with runs.
        as_id: put every run into this experiment ID (one MLflow experiment only).
        artifacts: copy the runs' artifacts into their output directories.
        reporter: progress (default: none).

    Raises:
        TransferError: mlflow not installed, the store cannot be opened (the message
            names the URI), an unknown experiment name, a bad ``as_id``.
    """
    reporter = reporter or NullReporter()
    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    chosen = _experiments(client, uri, experiments)
    if as_id is not None:
        _check_id(project, as_id)
    with _quiet():
        listed = [(experiment, _runs(client, uri, experiment)) for experiment in chosen]
    listed = [(experiment, found) for experiment, found in listed if found]
    if as_id is not None and len(listed) > 1:
        names = ", ".join(repr(experiment.name) for experiment, _ in listed)
        raise TransferError(
            f"--as {as_id}: {len(listed)} MLflow experiments have runs ({names}); "
            "pick one with --experiment NAME"
        )
    result = MlflowImportResult(uri)
    total = sum(len(found) for _, found in listed)
    with reporter.task("importing MLflow runs", total) as task:
        for experiment, found in listed:
            _import_experiment(project, client, uri, experiment, found, as_id, artifacts, result)
            task.advance(len(found))
    return result


@contextlib.contextmanager
def _quiet() -> Any:
    """MLflow's own warnings and log lines (deprecations, migrations) stay out of the output."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _client(uri: str) -> Any:
    try:
        with _quiet():
            from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise TransferError(
            "importing from MLflow needs the mlflow package: pip install 'mlbook[mlflow]'"
        ) from exc
    # MLflow 3 refuses to open a file store unless told to: reading one is what an
    # import is for (the store is only read)
    allow = os.environ.get(_ALLOW_FILE_STORE)
    os.environ[_ALLOW_FILE_STORE] = "true"
    try:
        with _quiet():
            return MlflowClient(tracking_uri=uri)
    except Exception as exc:  # MLflow's own, SQLAlchemy's or OS errors: one line
        raise _cannot_open(uri, exc) from exc
    finally:
        if allow is None:
            del os.environ[_ALLOW_FILE_STORE]
        else:
            os.environ[_ALLOW_FILE_STORE] = allow


def _cannot_open(uri: str, exc: BaseException) -> TransferError:
    return TransferError(f"{uri}: cannot open the MLflow tracking store ({_short(exc)})")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _experiments(client: Any, uri: str, names: Sequence[str]) -> list[Any]:
    try:
        with _quiet():
            found = sorted(
                client.search_experiments(),
                key=lambda e: (e.creation_time or 0, str(e.experiment_id)),
            )
    except Exception as exc:  # the store is not readable: one line naming it
        raise _cannot_open(uri, exc) from exc
    if names:
        by_name = {e.name: e for e in found}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            known = ", ".join(repr(e.name) for e in found) or "none"
            raise TransferError(f"{uri}: no MLflow experiment {unknown[0]!r} (there are: {known})")
        return [by_name[n] for n in names]
    return found


def _runs(client: Any, uri: str, experiment: Any) -> list[Any]:
    runs: list[Any] = []
    token = None
    try:
        while True:
            page = client.search_runs(
                [experiment.experiment_id], max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
    except Exception as exc:  # a store that cannot be read: one line naming it
        raise TransferError(
            f"{uri}: cannot read the runs of {experiment.name!r} ({_short(exc)})"
        ) from exc
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def _check_id(project: Project, ident: str) -> None:
    pattern = project.config.experiments.id_pattern
    if not re.fullmatch(pattern, ident):
        raise TransferError(
            f"--as {ident}: does not match [experiments] id_pattern {pattern!r} (e.g. E020)"
        )


def _run_id(run: Any) -> str:
    started = (run.info.start_time or 0) / 1000
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(started)) + "-" + str(run.info.run_id)


def _import_experiment(
    project: Project,
    client: Any,
    uri: str,
    experiment: Any,
    found: list[Any],
    as_id: str | None,
    artifacts: bool,
    result: MlflowImportResult,
) -> None:
    from mlbook.experiments.query import get_run, known_run_ids
    from mlbook.experiments.store import Store

    if not found:
        return
    ids = {run.info.run_id: _run_id(run) for run in found}
    with Store.for_project(project, readonly=True) as store:
        here = known_run_ids(store, ids.values())
        earlier = next((get_run(store, i).experiment for i in ids.values() if i in here), None)
    ident = as_id or earlier or _next_id(project, set(result.experiments.values()))
    result.experiments[experiment.name] = ident
    result.present.extend(i for i in ids.values() if i in here)
    todo = []
    for run in found:
        status = _STATUSES.get(run.info.status)
        if ids[run.info.run_id] in here:
            continue
        if status is None:
            why = f"status {run.info.status}: import it again when it has ended"
            result.unmapped.append(Unmapped(run.info.run_id, "run", why))
            continue
        todo.append(run)
    for start in range(0, len(todo), _BATCH):
        batch = todo[start : start + _BATCH]
        _import_batch(project, client, uri, experiment, ident, batch, artifacts, result)


def _next_id(project: Project, reserved: set[str]) -> str:
    """The next free ``E<n>`` after every ID in the store, the journal, ``Models/`` and
    ``reserved`` (IDs this import gave out already)."""
    from mlbook.experiments.discovery import find_scripts
    from mlbook.experiments.query import experiment_ids
    from mlbook.provenance.journal import read_journal

    taken = set(experiment_ids(project)) | reserved
    with contextlib.suppress(MlbookError):
        taken.update(entry.id for entry in read_journal(project.journal_path))
    with contextlib.suppress(MlbookError):
        taken.update(script.id for script in find_scripts(project))
    numbers = [int(m[1]) for m in (re.fullmatch(r"E(\d+)", t) for t in taken) if m]
    ident = f"E{max(numbers, default=0) + 1:03d}"
    pattern = project.config.experiments.id_pattern
    if not re.fullmatch(pattern, ident):
        raise TransferError(
            f"cannot make an experiment ID matching [experiments] id_pattern {pattern!r}; "
            "give one with --as ID"
        )
    return ident


def _version(run: Any) -> str:
    name = run.info.run_name or run.data.tags.get("mlflow.runName") or ""
    safe = _VERSION_BAD.sub("-", name).lstrip("_.=,+-")[:64]
    return safe or "mlflow"


def _param(text: str) -> Any:
    """An MLflow param (always a string) as the number or flag it spells, else the string."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return {"True": True, "False": False, "true": True, "false": False}.get(text, text)


def _import_batch(
    project: Project,
    client: Any,
    uri: str,
    experiment: Any,
    ident: str,
    batch: list[Any],
    artifacts: bool,
    result: MlflowImportResult,
) -> None:
    from mlbook.experiments.store import Store
    from mlbook.provenance.observer import journal_runs

    series = _histories(client, batch, result)
    state = project.state_dir
    state.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="mlflow-", dir=temp_dir_for(state / "mlflow")))
    try:
        stored: list[StoredRun] = []
        places: dict[str, tuple[Path, Path]] = {}
        for run in batch:
            run_id = _run_id(run)
            version = _version(run)
            outputs = project.outputs_dir / ident / version / run_id
            staged = staging / run_id
            files = _stage_outputs(client, uri, experiment, run, staged, artifacts, result)
            records = [
                Artifact(project.relative(outputs / rel), size, digest, kind)
                for rel, size, digest, kind in files
            ]
            places[run_id] = (staged, outputs)
            result_series = series.get(run.info.run_id, {})
            stored.append(
                _stored_run(project, run, run_id, ident, version, outputs, result_series, records)
            )
        with Store.for_project(project) as store:
            outcome = store.import_runs(stored, [ExperimentRow(ident, "", experiment.name)])
        for conflict in outcome.conflicts:
            result.unmapped.append(
                Unmapped(conflict.run_id, "run", "imported before with other content; left as is")
            )
        for run_id in outcome.added:
            staged, outputs = places[run_id]
            _place(staged, outputs)
        result.added.extend(outcome.added)
        result.present.extend(outcome.present)
        result.artifacts = result.artifacts + sum(
            1
            for run in stored
            if run.id in outcome.added
            for a in run.artifacts
            if a.kind == "file"
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    added = set(outcome.added)
    records_added = [run.record for run in stored if run.id in added]
    if records_added:
        try:
            _journal_entry(project, ident, experiment, uri)
            journal_runs(project, records_added, {ident: experiment.name})
        except MlbookError as exc:  # a side channel: the runs are in
            warnings.warn(f"journal: {exc}", MlbookWarning, stacklevel=2)


def _journal_entry(project: Project, ident: str, experiment: Any, uri: str) -> None:
    from mlbook.provenance.journal import add_entry

    add_entry(
        project.journal_path,
        ident,
        experiment.name,
        f"Imported from MLflow: experiment {experiment.name!r} "
        f"(id {experiment.experiment_id}) at {uri}.",
    )


def _stored_run(
    project: Project,
    run: Any,
    run_id: str,
    ident: str,
    version: str,
    outputs: Path,
    series: dict[str, tuple[list[int], list[float], list[float]]],
    artifacts: list[Artifact],
) -> StoredRun:
    info, data = run.info, run.data
    started = (info.start_time or 0) / 1000
    ended = info.end_time / 1000 if info.end_time else None
    commit = data.tags.get("mlflow.source.git.commit", "")
    final = {
        key: str(value) if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in data.metrics.items()
    }  # NaN and ±inf as the store keeps them: "nan", "inf", "-inf"
    record = RunRecord(
        pk=0,
        id=run_id,
        experiment=ident,
        version=version,
        mode="run",
        status=_STATUSES[info.status],
        created=started,
        started=started,
        ended=ended,
        host="",
        pid=None,
        runner_pid=None,
        params_json=orjson.dumps({k: _param(v) for k, v in data.params.items()}).decode(),
        metrics_json=orjson.dumps(final).decode(),
        error=None,
        outputs=project.relative(outputs),
        weights=None,
        resumed_from=None,
        commit_before=commit if _COMMIT.match(commit) else None,
        commit_after=None,
        commit_reason=f"imported from MLflow (run {info.run_id})",
        data_version=None,
        python=None,
        packages_json=None,
    )
    chunks: list[Chunk] = []
    for key, (steps, values, times) in sorted(series.items()):
        for start in range(0, len(steps), _CHUNK_POINTS):
            end = start + _CHUNK_POINTS
            chunk = chunk_of(key, steps[start:end], values[start:end], times[start:end])
            if chunk is not None:
                chunks.append(chunk)
    return StoredRun(
        record,
        chunks=[_stored_chunk(c) for c in chunks],
        summaries=_summaries(chunks),
        artifacts=artifacts,
    )


def _stored_chunk(chunk: Chunk) -> StoredChunk:
    return StoredChunk(
        chunk.key,
        1,
        chunk.count,
        chunk.first_step,
        chunk.last_step,
        chunk.stride,
        chunk.steps,
        chunk.values,
        chunk.first_time,
        chunk.times,
        chunk.min,
        chunk.max,
        None if math.isnan(chunk.last) else chunk.last,
    )


def _summaries(chunks: Iterable[Chunk]) -> list[StoredSummary]:
    """One summary per key, as the store keeps them (NaN left out of min and max)."""
    merged: dict[str, StoredSummary] = {}
    for c in chunks:
        last = None if math.isnan(c.last) else c.last
        old = merged.get(c.key)
        if old is None:
            merged[c.key] = StoredSummary(
                c.key, c.count, c.first_step, c.last_step, c.min, c.max, last, c.last_time
            )
            continue
        low = min((v for v in (old.min, c.min) if v is not None), default=None)
        high = max((v for v in (old.max, c.max) if v is not None), default=None)
        merged[c.key] = StoredSummary(
            c.key, old.count + c.count, old.first_step, c.last_step, low, high, last, c.last_time
        )
    return [merged[key] for key in sorted(merged)]


def _histories(
    client: Any, batch: list[Any], result: MlflowImportResult
) -> dict[str, dict[str, tuple[list[int], list[float], list[float]]]]:
    """MLflow run id -> metric key -> (steps, values, times in seconds), in MLflow's order."""
    with _quiet():
        fast = _sql_histories(client, [run.info.run_id for run in batch])
        if fast is not None:
            return fast
        found: dict[str, dict[str, tuple[list[int], list[float], list[float]]]] = {}
        for run in batch:
            per_key = found.setdefault(run.info.run_id, {})
            for key in run.data.metrics:
                try:
                    history = client.get_metric_history(run.info.run_id, key)
                except Exception as exc:  # one metric that cannot be read: noted, not fatal
                    result.unmapped.append(Unmapped(run.info.run_id, f"metric {key}", _short(exc)))
                    continue
                points = sorted(history, key=lambda m: (m.timestamp, m.step, m.value))
                per_key[key] = (
                    [int(m.step) for m in points],
                    [float(m.value) for m in points],
                    [m.timestamp / 1000 for m in points],
                )
        return found


def _sql_histories(
    client: Any, run_ids: list[str]
) -> dict[str, dict[str, tuple[list[int], list[float], list[float]]]] | None:
    """The fast path for SQL stores: one query per batch on MLflow's ``metrics`` table.

    The query is built from MLflow's own table model, compiled for its engine's
    dialect, and its rows are read from the engine's DBAPI cursor (SQLAlchemy's
    row objects cost more than the rest of the import).
    """
    try:
        from mlflow.store.tracking.dbmodels.models import SqlMetric
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from sqlalchemy import select
    except ImportError:
        return None
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not isinstance(store, SqlAlchemyStore):
        return None
    table = SqlMetric.__table__
    c = table.c
    query = (
        select(c.run_uuid, c.key, c.step, c.value, c.timestamp, c.is_nan)
        .where(c.run_uuid.in_(run_ids))
        .order_by(c.run_uuid, c.key, c.timestamp, c.step, c.value)
    )
    compiled = query.compile(
        dialect=store.engine.dialect, compile_kwargs={"render_postcompile": True}
    )
    params = compiled.params
    order = compiled.positiontup or []
    args = [params[name] for name in order] if compiled.positional else params
    found: dict[str, dict[str, tuple[list[int], list[float], list[float]]]] = {}
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(str(compiled), args)
        rows = cursor.fetchall()
    finally:
        connection.close()
    nan = float("nan")
    for (run_uuid, key), group in groupby(rows, key=itemgetter(0, 1)):
        _, _, steps, values, stamps, nans = zip(*group, strict=True)
        value_list = list(values)
        if any(nans):
            value_list = [nan if flag else v for v, flag in zip(value_list, nans, strict=True)]
        found.setdefault(run_uuid, {})[key] = (
            list(steps),
            value_list,
            [stamp / 1000 for stamp in stamps],
        )
    return found


def _stage_outputs(
    client: Any,
    uri: str,
    experiment: Any,
    run: Any,
    staged: Path,
    artifacts: bool,
    result: MlflowImportResult,
) -> list[tuple[str, int, str, str]]:
    """Write ``mlflow.json`` and copy the artifacts under ``staged``.

    Returns ``(relative path, size, sha256, kind)`` of each file written.
    """
    from mlbook._fs import sha256_file

    staged.mkdir()
    info = {
        "mlflow_run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment_id": experiment.experiment_id,
        "experiment_name": experiment.name,
        "tracking_uri": uri,
        "artifact_uri": run.info.artifact_uri,
        "user_id": run.info.user_id,
        "status": run.info.status,
        "tags": dict(sorted(run.data.tags.items())),
    }
    data = orjson.dumps(info, option=orjson.OPT_INDENT_2) + b"\n"
    (staged / _INFO_FILE).write_bytes(data)
    import hashlib

    files = [(_INFO_FILE, len(data), hashlib.sha256(data).hexdigest(), "mlflow")]
    if not artifacts:
        return files
    try:
        with _quiet():
            # the run's own artifact repository: MlflowClient.list_artifacts would read
            # the run again for its artifact URI (14 ms a run), which search_runs gave
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            repository: Any = get_artifact_repository(run.info.artifact_uri, tracking_uri=uri)
            if repository.list_artifacts():
                (staged / _ARTIFACTS_DIR).mkdir()
                repository.download_artifacts("", str(staged / _ARTIFACTS_DIR))
    except Exception as exc:  # an artifact store out of reach: noted, the run still comes
        result.unmapped.append(Unmapped(run.info.run_id, "artifacts", _short(exc)))
        shutil.rmtree(staged / _ARTIFACTS_DIR, ignore_errors=True)
        return files
    root = staged / _ARTIFACTS_DIR
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        mode = path.lstat().st_mode
        relative = path.relative_to(staged).as_posix()
        if stat.S_ISLNK(mode) or (not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)):
            result.unmapped.append(Unmapped(run.info.run_id, relative, "not a regular file"))
            path.unlink()
            continue
        if stat.S_ISREG(mode):
            files.append((relative, path.stat().st_size, sha256_file(path), "file"))
    return files


def _place(staged: Path, outputs: Path) -> None:
    """Move a run's staged output directory into place (merging into one that exists)."""
    outputs.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, outputs)
        return
    except OSError:
        pass  # the directory exists (or another filesystem): file by file
    for path in sorted(staged.rglob("*")):
        target = outputs / path.relative_to(staged)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
