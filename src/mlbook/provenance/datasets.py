"""The datasets a run uses, recorded honestly: what the working copy holds, not what a file claims.

:func:`capture_datasets` reads every DVC output under ``Datasets/`` (``.dvc``
files and ``dvc.lock`` stages, see :mod:`mlbook.provenance.dvc`) and compares each
working copy with what its file states, by DVC's own hash computed natively
(:mod:`mlbook.provenance.datahash`: unchanged files are never read again). Each
dataset becomes a :class:`DatasetRecord`:

- ``clean``: the working copy is what the ``.dvc`` / ``dvc.lock`` says;
- ``modified``: it is not (edited since ``dvc add``): the record holds the working
  copy's hash, and the stated one in ``recorded``;
- ``missing``: the data is not checked out (``dvc checkout`` / ``dvc pull``);
- ``untracked``: not under DVC; hashed like :func:`mlbook.provenance.data.dataset_version`
  (metadata, or every file), or DVC's way when it has no metadata to hash.

``modified`` and ``missing`` are *dirty*: the run warns (``mlbook run --strict``
refuses, :func:`refuse_dirty`). A run that names its dataset records that
dataset and the DVC outputs inside it; a run that names none records every
DVC output of the datasets area. :func:`dataset_identity` is the same hash for one
path, used by data-processing steps so that lineage can match steps to runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbook.errors import DatasetError
from mlbook.provenance.datahash import ContentHash, HashCache, content_hash
from mlbook.provenance.dvc import (
    DvcOut,
    DvcState,
    dvc_root,
    find_dvc_files,
    read_dvc_file,
    read_dvc_lock,
    read_dvc_yaml,
)

if TYPE_CHECKING:
    from mlbook.project import Project

__all__ = [
    "STATES",
    "DatasetRecord",
    "Datasets",
    "capture_datasets",
    "data_version",
    "dataset_identity",
    "dirty_problems",
    "record_run_datasets",
    "refuse_dirty",
    "refuse_dirty_datasets",
    "tracked_outs",
]

STATES = ("clean", "modified", "missing", "untracked")


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset as a run used it.

    Attributes:
        path: root-relative path of the dataset (a directory or a file).
        hash: ``md5:<hex>[.dir]`` (DVC's hash) or ``sha256:<hex>`` (untracked metadata).
        scheme: ``md5``, ``md5-dos2unix``, ``sha256-metadata`` or ``sha256-files``.
        size, nfiles: bytes and files (``None`` when not known).
        state: ``clean``, ``modified``, ``missing`` or ``untracked``.
        recorded: the hash the ``.dvc`` / ``dvc.lock`` states (DVC-tracked only).
        source: that file, root-relative.
        stage: the ``dvc.lock`` stage producing the dataset, if any.
    """

    path: str
    hash: str
    scheme: str
    size: int | None = None
    nfiles: int | None = None
    state: str = "untracked"
    recorded: str | None = None
    source: str | None = None
    stage: str | None = None

    @property
    def dirty(self) -> bool:
        """True when the working copy is not what DVC recorded (modified or missing)."""
        return self.state in ("modified", "missing")

    @property
    def short(self) -> str:
        """``md5:1a2b3c4d5e6f``: the hash's kind and first 12 digits."""
        kind, _, value = self.hash.partition(":")
        return f"{kind}:{value[:12]}"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON output)."""
        return {**asdict(self), "dirty": self.dirty}

    def problem(self) -> str:
        """The one-line warning for a dirty dataset ('' when it is clean)."""
        recorded = _short(self.recorded)
        if self.state == "modified":
            return (
                f"{self.path} changed since {self.source} ({recorded}; working copy "
                f"{self.short}); recorded as modified; `dvc add {self.path}` (or `dvc commit`) "
                "to version it"
            )
        if self.state == "missing":
            return (
                f"{self.path} is not checked out ({self.source} says {recorded}); "
                "run `dvc checkout` (or `dvc pull`) first"
            )
        return ""


def _short(value: str | None) -> str:
    if not value:
        return "-"
    kind, _, rest = value.partition(":")
    return f"{kind}:{rest[:12]}"


class Datasets:
    """The DVC view of one project: its tracked outputs and the caches used to hash them.

    Use as a context manager (the hash cache is written on exit).
    """

    def __init__(self, project: Project, cache: HashCache | None = None) -> None:
        self.project = project
        self.root = project.root
        self.cache = cache if cache is not None else HashCache.for_state_dir(project.state_dir)
        self._state: DvcState | None = None
        self._outs: list[DvcOut] | None = None

    def __enter__(self) -> Datasets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the hash cache and close DVC's state."""
        self.cache.close()
        if self._state is not None:
            self._state.close()

    @property
    def state(self) -> DvcState:
        """DVC's hash state of the repository around the project (read-only)."""
        if self._state is None:
            self._state = DvcState(dvc_root(self.root))
        return self._state

    def refresh(self) -> None:
        """Read the DVC files again on next use (after one was rewritten)."""
        self._outs = None

    def outs(self) -> list[DvcOut]:
        """Every DVC output under the datasets area (``.dvc`` files, then ``dvc.lock`` stages).

        Raises:
            DvcFileError: a malformed ``.dvc`` or ``dvc.lock`` (file, line, key).
        """
        if self._outs is None:
            self._outs = tracked_outs(self.project, self.cache)
        return self._outs

    def record(self, out: DvcOut) -> DatasetRecord:
        """The record of one DVC output: its working copy against what its file says."""
        recorded = f"md5:{out.md5}" if out.md5 else None
        found = self._hash(self.root / out.path, out.scheme)
        if found is None:
            return DatasetRecord(
                out.path,
                recorded or "md5:-",
                out.scheme,
                out.size,
                out.nfiles,
                "missing",
                recorded,
                out.source,
                out.stage,
            )
        current = f"md5:{found.md5}"
        state = "clean" if current == recorded else "modified"
        return DatasetRecord(
            out.path,
            current,
            out.scheme,
            found.size,
            found.nfiles,
            state,
            recorded,
            out.source,
            out.stage,
        )

    def _hash(self, path: Path, scheme: str) -> ContentHash | None:
        try:
            return content_hash(path, scheme, self.cache, self.state)
        except OSError as exc:  # a file vanished or cannot be read while hashing
            where = self.project.relative(exc.filename or path)
            raise DatasetError(
                f"{where}: cannot read it to hash the dataset ({exc.strerror or exc}); "
                "check the permissions, or run again once nothing is writing there"
            ) from exc

    def identity(self, path: Path) -> DatasetRecord:
        """The record of any dataset path: DVC's view when DVC tracks it, else its content hash.

        Raises:
            DatasetError: the path does not exist.
        """
        relative = self.project.relative(path)
        for out in self.outs():
            if out.path == relative:
                return self.record(out)
        return self.untracked(path)

    def untracked(self, path: Path) -> DatasetRecord:
        """The content hash of a dataset DVC does not track (see the module docstring)."""
        from mlbook.provenance.data import dataset_version

        relative = self.project.relative(path)
        if not path.exists():
            raise DatasetError(f"{relative}: no such dataset; check the path")
        if path.is_dir():
            try:
                version = dataset_version(path, self.project.config.data.hash_images)
            except DatasetError:
                pass  # no metadata to hash: DVC's hash of every file instead
            else:
                scheme = f"sha256-{version.kind}"
                return DatasetRecord(relative, version.hash, scheme, None, version.files)
        found = self._hash(path, "md5")
        assert found is not None
        return DatasetRecord(relative, f"md5:{found.md5}", "md5", found.size, found.nfiles)

    def identities(self, path: Path) -> list[DatasetRecord]:
        """:meth:`identity`, plus DVC's md5 when that is a content hash: what ``dvc add``
        would record, so a step's output still matches once DVC tracks it."""
        first = self.identity(path)
        if first.scheme in ("md5", "md5-dos2unix") or not path.exists():
            return [first]
        found = self._hash(path, "md5")
        assert found is not None
        native = DatasetRecord(
            first.path, f"md5:{found.md5}", "md5", found.size, found.nfiles, "untracked"
        )
        return [first, native]

    def capture(self, dataset: Path | None = None) -> list[DatasetRecord]:
        """The records of what a run uses (see :func:`capture_datasets`)."""
        outs = self.outs()
        if dataset is None:
            return [self.record(out) for out in outs]
        relative = self.project.relative(dataset)
        chosen = [out for out in outs if _overlaps(out.path, relative)]
        records = [self.record(out) for out in chosen]
        if not any(_within(relative, out.path) for out in chosen) and dataset.exists():
            records.insert(0, self.untracked(dataset))
        return records


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _overlaps(a: str, b: str) -> bool:
    return _within(a, b) or _within(b, a)


def tracked_outs(project: Project, cache: HashCache | None = None) -> list[DvcOut]:
    """Every DVC output under the datasets area: ``.dvc`` files, then ``dvc.lock`` outs.

    Outside a DVC repository (no ``.dvc/`` at or above the root) there are none.
    Parsed files are remembered in ``cache`` by their inode, mtime and size.

    Raises:
        DvcFileError: a malformed ``.dvc`` or ``dvc.lock`` (file, line, key).
    """
    cache = cache if cache is not None else HashCache(None)
    root = project.root
    if dvc_root(root) is None:
        return []  # not a DVC repository: nothing to walk the datasets area for
    area = project.area_name("datasets")
    dvc_files, locks = find_dvc_files(project.datasets_dir, root)
    outs: list[DvcOut] = []
    for path in dvc_files:
        outs.extend(_parsed(path, root, cache, "dvc"))
    for path in locks:
        outs.extend(o for o in _parsed(path, root, cache, "lock") if _within(o.path, area))
    seen: set[str] = set()
    unique = []
    for out in outs:
        if out.path not in seen:
            seen.add(out.path)
            unique.append(out)
    return unique


def _parsed(path: Path, root: Path, cache: HashCache, kind: str) -> list[DvcOut]:
    try:
        stat = path.stat()
    except OSError:
        return []
    key = str(path)
    signature = f"{kind}:{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"
    if kind == "lock":
        yaml_file = path.with_name("dvc.yaml")
        with_yaml = yaml_file.stat() if yaml_file.is_file() else None
        if with_yaml is not None:
            signature += f":{with_yaml.st_mtime_ns}:{with_yaml.st_size}"
    known = cache.parsed(key, signature)
    if known is not None:
        return [DvcOut(**item) for item in known]
    if kind == "dvc":
        outs = read_dvc_file(path, root)
    else:
        yaml_file = path.with_name("dvc.yaml")
        wdirs = (
            {s.name: s.wdir for s in read_dvc_yaml(yaml_file, root)} if yaml_file.is_file() else {}
        )
        outs = [out for stage in read_dvc_lock(path, root, wdirs) for out in stage.outs]
    cache.remember_parsed(key, signature, [asdict(out) for out in outs])
    return outs


def capture_datasets(
    project: Project, dataset: Path | str | None = None, cache: HashCache | None = None
) -> list[DatasetRecord]:
    """The datasets a run uses, each compared with what DVC recorded.

    Args:
        project: the project.
        dataset: the run's dataset directory (``Datasets/digits``): that dataset and
            the DVC outputs inside it (or around it). ``None``: every DVC output of
            the datasets area.
        cache: the hash cache (default: the project's, ``.mlbook/cache/``).

    Raises:
        DvcFileError: a malformed ``.dvc`` or ``dvc.lock`` (file, line, key).
        DatasetError: a file cannot be read while hashing.
    """
    with Datasets(project, cache) as datasets:
        return datasets.capture(_absolute(project, dataset) if dataset is not None else None)


def dataset_identity(project: Project, path: Path | str) -> DatasetRecord:
    """The record of one dataset path, hashed as a run would record it.

    Raises:
        DatasetError: the path does not exist or cannot be read.
    """
    with Datasets(project) as datasets:
        return datasets.identity(_absolute(project, path))


def _absolute(project: Project, path: Path | str) -> Path:
    path = Path(path)
    return Path(os.path.abspath(path if path.is_absolute() else project.root / path))


def refuse_dirty(records: Iterable[DatasetRecord], why: str = "--strict") -> None:
    """Raise when a dataset is dirty: ``--strict`` runs only on data DVC recorded.

    Raises:
        DatasetError: the first dirty dataset, saying what to do.
    """
    for record in records:
        if record.dirty:
            raise DatasetError(f"{record.problem()}; {why} refuses to run on it")


def dirty_problems(records: Sequence[DatasetRecord]) -> list[str]:
    """The one-line warning of each dirty dataset."""
    return [record.problem() for record in records if record.dirty]


def data_version(records: Sequence[DatasetRecord], dataset: str | None = None) -> str | None:
    """The one-string data version of a run (the runs table's ``data_version``).

    The declared dataset's hash when it is the only record; with several, a sha256
    over every ``path=hash`` (so a change to any of them shows); ``None`` for none.
    """
    if not records:
        return None
    if len(records) == 1:
        return records[0].hash
    import hashlib

    lines = sorted(f"{r.path}={r.hash}" for r in records)
    if dataset is not None:
        lines.insert(0, f"dataset={dataset}")
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def record_run_datasets(
    project: Project, run_id: str, dataset: Path | str | None, store: Any
) -> tuple[str | None, list[str]]:
    """Capture a run's datasets, store them (when ``store`` is a run store) and say what's dirty.

    Returns:
        the run's data version (:func:`data_version`) and one warning per dirty dataset.

    Raises:
        DvcFileError: a malformed ``.dvc`` or ``dvc.lock``.
        DatasetError: a file cannot be read while hashing.
    """
    from mlbook.experiments.store import Store, add_run_datasets

    records = capture_datasets(project, dataset)
    if isinstance(store, Store) and records:
        add_run_datasets(store, run_id, records)
    shown = project.relative(_absolute(project, dataset)) if dataset is not None else None
    return data_version(records, shown), dirty_problems(records)


def refuse_dirty_datasets(project: Project, datasets: Iterable[Path | str | None]) -> None:
    """``mlbook run --strict``: refuse before any run starts when a run's dataset is dirty.

    Args:
        datasets: each run's dataset directory (``None``: every DVC output).

    Raises:
        DatasetError: a dirty dataset (or a malformed ``.dvc`` / ``dvc.lock``).
    """
    with Datasets(project) as found:
        for dataset in dict.fromkeys(datasets):
            path = _absolute(project, dataset) if dataset is not None else None
            refuse_dirty(found.capture(path))
