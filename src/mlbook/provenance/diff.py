"""What differs between two runs: params, data version, saved views, final metrics, code.

The run store is not needed here: the caller describes each run as a plain
:class:`RunSide` (its params, metrics, data version, before-commit and the
files it used) and :func:`diff_runs` returns a renderer-neutral :class:`RunDiff`.
Comparing a run with the working tree now: pass ``b=None``.

The code diff is between the two runs' ``before`` commits, limited to the files
either run used (``all_files=True``: the whole tree).

When params, data and code are the same but the metrics are not,
:attr:`RunDiff.cause` names the likely reason, from what each run recorded: a
run the runner did not seed (``seed.json`` in its outputs, written by
:mod:`mlbook.experiments.seeds`), a different number of torch threads
(``setup.json`` or ``seed.json``), another host, Python or package versions,
else nondeterministic operations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbook.errors import ProvenanceError
from mlbook.provenance.git import diff_commits

__all__ = [
    "MetricDelta",
    "ParamChange",
    "RunDiff",
    "RunSide",
    "ViewChange",
    "diff_runs",
    "likely_cause",
    "run_side",
]

_MISSING = object()


@dataclass(frozen=True)
class RunSide:
    """One run as :func:`diff_runs` sees it.

    Attributes:
        label: how to name the run in the output (its run id).
        params: the run's hyper-parameters (nested dicts are compared by dotted key).
        metrics: final metrics.
        data_version: the dataset version string, or ``None``.
        before: the commit of the code before the run, or ``None`` (no git).
        files: project-relative paths of the files the run used.
        no_commit_reason: why ``before`` is ``None``, when known.
        seed: the seed the run was seeded with (``None``: not seeded, or unknown).
        threads: torch's CPU threads in the run, when recorded.
        environment: host, Python and package versions (name -> value).
        views: the saved views the run read (``dataset@view`` -> (query, ids hash, count)).
    """

    label: str
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    data_version: str | None = None
    before: str | None = None
    files: Sequence[str] = ()
    no_commit_reason: str = ""
    seed: int | None = None
    threads: int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    views: Mapping[str, tuple[str, str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ViewChange:
    """A saved view (``dataset@view``) whose query or records differ between two runs;
    ``a``/``b`` are (query, ids hash, count), ``None`` where the run did not use it."""

    key: str
    a: tuple[str, str, int] | None
    b: tuple[str, str, int] | None


@dataclass(frozen=True)
class ParamChange:
    """A param that differs; ``None`` with ``present_*=False`` means it is missing on that side."""

    key: str
    a: Any
    b: Any
    present_a: bool = True
    present_b: bool = True


@dataclass(frozen=True)
class MetricDelta:
    """A final metric on both sides; ``delta`` is ``b - a`` when both are numbers."""

    key: str
    a: float | None
    b: float | None
    delta: float | None


@dataclass(frozen=True)
class RunDiff:
    """The difference between run ``a`` and run ``b`` (or the working tree)."""

    a: str
    b: str
    params: list[ParamChange]
    data: tuple[str | None, str | None] | None  # None when both versions are equal
    metrics: list[MetricDelta]
    code: str  # a unified diff ("" when the code is the same, or cannot be compared)
    code_paths: list[str] | None  # the files the code diff was limited to (None: all)
    code_note: str = ""  # why there is no code diff, when there is none for a reason
    cause: str = ""  # same params, data and code but other metrics: the likely reason
    views: list[ViewChange] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """True when nothing differs (metrics aside)."""
        return not self.params and self.data is None and not self.code and not self.views


def run_side(
    record: Any,
    files: Iterable[str | Sequence[Any]] = (),
    root: Path | str | None = None,
    views: Iterable[Any] = (),
) -> RunSide:
    """A :class:`RunSide` from a stored run and its files.

    Args:
        record: anything with ``id``, ``params``, ``metrics``, ``data_version``,
            ``commit_before`` and ``commit_reason`` (the run store's ``RunRecord``);
            ``outputs``, ``host``, ``python`` and ``packages`` are used when present.
        files: the run's files, as paths or as ``(path, size, sha256)`` rows.
        root: the project root, to read what the run recorded about its seed and
            threads in its outputs (``seed.json``, ``setup.json``).
        views: the run's saved views (the run store's ``RunView`` rows).
    """
    paths = [f if isinstance(f, str) else str(f[0]) for f in files]
    metrics = {
        key: value
        for key, value in (getattr(record, "metrics", None) or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    seeded: dict[str, Any] = {}
    setup: dict[str, Any] = {}
    outputs = getattr(record, "outputs", None)
    if root is not None and outputs:
        seeded = _read_json(Path(root) / outputs / "seed.json")
        setup = _read_json(Path(root) / outputs / "setup.json")
    seed = seeded.get("seed", setup.get("seed"))
    threads = setup.get("threads", seeded.get("threads"))
    environment = {
        "host": str(getattr(record, "host", "") or ""),
        "python": str(getattr(record, "python", "") or ""),
    }
    packages = getattr(record, "packages", None)
    if isinstance(packages, Mapping):
        environment.update({str(k): str(v) for k, v in packages.items()})
    return RunSide(
        label=str(record.id),
        params=getattr(record, "params", None) or {},
        metrics=metrics,
        data_version=getattr(record, "data_version", None),
        before=getattr(record, "commit_before", None),
        files=paths,
        no_commit_reason=getattr(record, "commit_reason", None) or "",
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        threads=threads if isinstance(threads, int) and not isinstance(threads, bool) else None,
        environment={k: v for k, v in environment.items() if v},
        views={
            f"{v.dataset}@{v.view}": (
                v.query + (f" | boxes: {v.boxes}" if v.boxes else ""),
                v.ids_hash,
                v.count,
            )
            for v in views
        },
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[ParamChange]:
    left, right = _flatten(a), _flatten(b)
    changes = []
    for key in sorted(set(left) | set(right)):
        va, vb = left.get(key, _MISSING), right.get(key, _MISSING)
        if va is _MISSING or vb is _MISSING or va != vb:
            changes.append(
                ParamChange(
                    key,
                    None if va is _MISSING else va,
                    None if vb is _MISSING else vb,
                    va is not _MISSING,
                    vb is not _MISSING,
                )
            )
    return changes


def _metric_deltas(a: Mapping[str, float], b: Mapping[str, float]) -> list[MetricDelta]:
    deltas = []
    for key in [*a, *(k for k in b if k not in a)]:
        va, vb = a.get(key), b.get(key)
        both = isinstance(va, int | float) and isinstance(vb, int | float)
        delta = float(vb) - float(va) if both else None  # type: ignore[arg-type]
        if delta is not None and math.isnan(delta):
            delta = None
        deltas.append(MetricDelta(key, va, vb, delta))
    return deltas


def diff_runs(
    root: Path | str, a: RunSide, b: RunSide | None = None, all_files: bool = False
) -> RunDiff:
    """Compare run ``a`` with run ``b``, or with the working tree now when ``b`` is ``None``.

    Args:
        root: the project root (for the code diff).
        a, b: the runs; with ``b=None`` only the code is compared (params, data and
            metrics have nothing to compare against).
        all_files: diff the whole tree instead of the files the runs used.

    Raises:
        ProvenanceError: git fails on a recorded commit (e.g. the ref was deleted).
    """
    paths = None if all_files else sorted({*a.files, *(b.files if b else ())})
    note = ""
    code = ""
    if a.before is None:
        note = f"run {a.label} has no commit" + (
            f" ({a.no_commit_reason})" if a.no_commit_reason else ""
        )
    elif b is not None and b.before is None:
        note = f"run {b.label} has no commit" + (
            f" ({b.no_commit_reason})" if b.no_commit_reason else ""
        )
    else:
        try:
            code = diff_commits(root, a.before, b.before if b else None, paths)
        except ProvenanceError as exc:
            raise ProvenanceError(f"cannot diff the code of {a.label}: {exc}") from exc
    if b is None:
        return RunDiff(a.label, "working tree", [], None, [], code, paths, note)
    data = None if a.data_version == b.data_version else (a.data_version, b.data_version)
    params = _param_changes(a.params, b.params)
    metrics = _metric_deltas(a.metrics, b.metrics)
    views = [
        ViewChange(key, a.views.get(key), b.views.get(key))
        for key in sorted({*a.views, *b.views})
        if a.views.get(key) != b.views.get(key)
    ]
    cause = ""
    if not params and data is None and not views and not code and not note and _differ(metrics):
        cause = likely_cause(a, b)
    return RunDiff(a.label, b.label, params, data, metrics, code, paths, note, cause, views)


def _differ(metrics: Sequence[MetricDelta]) -> bool:
    for m in metrics:
        if m.a is None or m.b is None:
            return True
        if math.isnan(m.a) and math.isnan(m.b):
            continue
        if m.a != m.b:
            return True
    return False


def likely_cause(a: RunSide, b: RunSide) -> str:
    """Why two runs of the same params, data and code got different metrics (one line)."""
    unseeded = [side.label for side in (a, b) if side.seed is None]
    if unseeded:
        which = "neither run was" if len(unseeded) == 2 else f"run {unseeded[0]} was not"
        return (
            f"no seed: {which} seeded by the runner; set Experiment(seed=...) or "
            "[experiments] seed, and mlbook seeds random, NumPy and torch before the model hook"
        )
    if a.seed != b.seed:  # not a param (a seed from the config that changed)
        return f"different seeds: {a.seed} and {b.seed}"
    if a.threads is not None and b.threads is not None and a.threads != b.threads:
        return (
            f"different threads: torch used {a.threads} and {b.threads} CPU threads, which "
            "changes the order of float additions; fix them (mlbook.pytorch.setup(threads=...))"
        )
    changed = [
        f"{key} {a.environment.get(key, '(none)')} → {b.environment.get(key, '(none)')}"
        for key in sorted({*a.environment, *b.environment})
        if a.environment.get(key) != b.environment.get(key)
    ]
    if changed:
        shown = ", ".join(changed[:4]) + (
            f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        )
        return f"a different environment: {shown}"
    return (
        f"nondeterministic ops: both runs had seed {a.seed} and the same threads and "
        "environment; look in output.log for torch's warnings about operations without a "
        "deterministic implementation, DataLoader workers or GPU kernels"
    )
