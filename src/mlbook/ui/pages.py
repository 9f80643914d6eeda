"""The read-only pages: runs table, one run, its files, curves, compare, parallel coordinates.

Each handler parses the URL, makes one or two library calls
(:mod:`mlbook.experiments.query`, :mod:`mlbook.provenance.diff`) and renders a
template. The URL holds the whole state of a page, so a page can be bookmarked,
shared and reloaded.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from mlbook.errors import ExperimentError, ProvenanceError
from mlbook.experiments import query
from mlbook.provenance.journal import Entry, Step, read_journal
from mlbook.ui.app import render, state_of
from mlbook.ui.filters import FilterError, split_filters

__all__ = [
    "compare_page",
    "curves_page",
    "parallel_page",
    "run_file",
    "run_page",
    "runs_page",
]

BASE_COLUMNS = ("experiment", "version", "status", "created", "duration")
UI_COLUMNS = ("notes",)  # columns the UI fills itself (from the journal), not sortable
PAGE_SIZES = (25, 50, 100, 200)
MAX_PLOTTED_RUNS = 50
_NUMERIC_FIELDS = {"created", "started", "ended", "duration"}
_INLINE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".gif": "image/gif", ".webp": "image/webp"}  # fmt: skip
_TEXT_SUFFIXES = {".txt", ".log", ".json", ".jsonl", ".csv", ".tsv", ".md", ".py", ".yaml",
                  ".yml", ".toml", ".cfg", ".ini"}  # fmt: skip


def _list(request: Request, name: str) -> list[str]:
    """A list from repeated ``name=`` parameters and/or comma-separated values."""
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values.extend(part.strip() for part in raw.split(",") if part.strip())
    return list(dict.fromkeys(values))


def page_url(path: str, params: Mapping[str, Any], **changes: Any) -> str:
    """``path`` with ``params`` updated by ``changes`` (``None`` or ``""`` drops a parameter)."""
    merged = {**params, **changes}
    pairs = [(k, v) for k, v in merged.items() if v not in (None, "")]
    return f"{path}?{urlencode(pairs)}" if pairs else path


def column_info(name: str) -> dict[str, Any]:
    """How a column shows in the header: kind, label, sortable, numeric."""
    kind, _, rest = name.partition(".")
    if kind in ("params", "metrics") and rest:
        return {"name": name, "kind": "param" if kind == "params" else "final",
                "label": rest, "sortable": True, "numeric": kind == "metrics"}  # fmt: skip
    if kind in query.SUMMARY_STATS and rest:
        return {"name": name, "kind": kind, "label": rest, "sortable": True, "numeric": True}
    return {
        "name": name,
        "kind": "",
        "label": name.replace("_", " "),
        "sortable": name not in UI_COLUMNS,
        "numeric": name in _NUMERIC_FIELDS,
    }


def _journal(request: Request) -> list[Entry]:
    """The journal's entries; a broken journal shows as none (the journal page says why)."""
    try:
        return read_journal(state_of(request).project.journal_path)
    except ProvenanceError:
        return []


def runs_page(request: Request) -> Response:
    """The runs table: ``?q=FILTERS&cols=a,b&sort=-acc&after=CURSOR&n=50``."""
    project = state_of(request).project
    params = dict(request.query_params)
    text = params.get("q", "")
    choices = state_of(request).table_choices()
    columns = _list(request, "cols") or [
        *BASE_COLUMNS,
        *(f"metrics.{name}" for name in choices.metrics[:4]),
    ]
    size = int(params["n"]) if params.get("n", "").isdigit() else 50
    size = min(max(size, 1), max(PAGE_SIZES))
    context: dict[str, Any] = {
        "params": params,
        "q": text,
        "columns": [column_info(c) for c in columns],
        "choices": choices,
        "chosen": set(columns),
        "sort": params.get("sort") or "-created",
        "size": size,
        "sizes": PAGE_SIZES,
        "page": None,
        "error": None,
        "error_column": None,
        "notes": {},
        "link": lambda **changes: page_url("/", params, **changes),
    }
    try:
        filters = split_filters(text)
        page = query.run_table(
            project,
            columns=[c for c in columns if c not in UI_COLUMNS],
            filters=filters,
            sort=params.get("sort"),
            after=params.get("after"),
            limit=size,
        )
    except FilterError as exc:
        context.update(error=exc.problem, error_column=exc.column, error_length=exc.length)
        return render(request, "runs.html", status=400, **context)
    except ExperimentError as exc:
        context.update(error=str(exc))
        return render(request, "runs.html", status=400, **context)
    if "notes" in columns:
        context["notes"] = {e.id: e.notes[-1] for e in _journal(request) if e.notes}
    context.update(page=page, running=any(r.status == "running" for r in page.rows))
    return render(request, "runs.html", **context)


def _journal_step(entries: list[Entry], run_id: str) -> tuple[Entry, Step] | None:
    for entry in entries:
        for step in entry.steps:
            if step.run_id == run_id:
                return entry, step
    return None


def run_page(request: Request) -> Response:
    """One run: params, metrics (last/min/max), curves, files, commits, artifacts, error."""
    project = state_of(request).project
    with query.reading(project) as store:
        record = query.get_run(store, request.path_params["run_id"])
        summaries = query.metric_summaries(store, record)
        artifacts = query.run_artifacts(store, record.id)
        files = query.run_files(store, record.id)
    return render(
        request,
        "run.html",
        run=record,
        summaries=summaries,
        artifacts=[a for a in artifacts if not a.kind.endswith("-deleted")],
        files=files,
        step=_journal_step(_journal(request), record.id),
        packages=sorted((record.packages or {}).items()),
    )


def run_file(request: Request) -> Response:
    """A file a run wrote or used, by its recorded path; nothing outside the project."""
    project = state_of(request).project
    run_id, path = request.path_params["run_id"], request.path_params["path"]
    with query.reading(project) as store:
        record = query.get_run(store, run_id)
        recorded = {a.path for a in query.run_artifacts(store, record.id)}
        recorded |= {f.path for f in query.run_files(store, record.id)}
    root = project.root.resolve()
    target = (root / path).resolve()
    if Path(path).is_absolute() or ".." in Path(path).parts or not target.is_relative_to(root):
        raise HTTPException(400, f"{path!r} is outside the project; only its files are shown")
    if path not in recorded:
        raise HTTPException(404, f"run {record.id} recorded no file {path!r}")
    if not target.is_file():
        raise HTTPException(404, f"{path} is recorded but no longer on disk")
    suffix = target.suffix.lower()
    headers = {"Content-Security-Policy": "sandbox; default-src 'none'"}
    if suffix in _INLINE_TYPES:
        return FileResponse(target, media_type=_INLINE_TYPES[suffix], headers=headers)
    if suffix in _TEXT_SUFFIXES:
        return FileResponse(target, media_type="text/plain; charset=utf-8", headers=headers)
    kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(
        target,
        media_type=kind,
        filename=target.name,
        headers=headers,
        content_disposition_type="attachment",
    )


def _chosen_runs(request: Request) -> tuple[list[str], str, int]:
    """Run IDs from ``runs=`` (full IDs or unique prefixes), or those matching ``q=``.

    Returns the IDs, the filter text and how many runs the filter matched.
    """
    project = state_of(request).project
    wanted = _list(request, "runs")
    text = request.query_params.get("q", "")
    if wanted:
        with query.reading(project) as store:
            return [query.get_run(store, run_id).id for run_id in wanted], text, len(wanted)
    if "q" not in request.query_params:  # (an empty q= plots every run)
        return [], text, 0
    page = query.run_table(project, columns=[], filters=split_filters(text), limit=MAX_PLOTTED_RUNS)
    return [row.id for row in page.rows], text, page.total


def curves_page(request: Request) -> Response:
    """Curves of many runs: ``?runs=A,B`` or ``?q=FILTERS``, ``keys=``, ``x=``, ``logy=1``."""
    project = state_of(request).project
    params = dict(request.query_params)
    run_ids, text, matched = _chosen_runs(request)
    keys_available = query.metric_keys(project, run_ids)
    keys = [k for k in _list(request, "keys") if k in keys_available] or keys_available[:4]
    with query.reading(project) as store:
        labels = {
            r.id: f"{r.experiment}/{r.version} {r.id[-6:]}"
            for r in (query.get_run(store, run_id) for run_id in run_ids)
        }
    return render(
        request,
        "curves.html",
        params=params,
        runs=run_ids,
        labels=labels,
        q=text,
        matched=matched,
        limit=MAX_PLOTTED_RUNS,
        keys=keys,
        keys_available=keys_available,
        x=params.get("x", "step") if params.get("x") in ("step", "time") else "step",
        logy=params.get("logy") == "1",
        smooth=params.get("smooth", "0"),
        band=params.get("band", "1") != "0",
    )


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def compare_page(request: Request) -> Response:
    """Two or more runs side by side: params, metric deltas, data versions, code diffs.

    The oldest run is the baseline (with ``order=given``, the first in the URL); each
    other run's code diff is against it, limited to the files either run used (the
    same code as ``mlbook diff``).
    """
    from mlbook.provenance.diff import diff_runs, run_side

    project = state_of(request).project
    wanted = _list(request, "runs")
    if len(wanted) < 2:
        raise HTTPException(400, "compare needs two or more runs: tick them in the runs table")
    with query.reading(project) as store:
        records = [query.get_run(store, run_id) for run_id in wanted]
        if "order" not in request.query_params:  # the oldest run is the baseline
            records.sort(key=lambda r: (r.created, r.pk))
        sides = [run_side(r, query.run_files(store, r.id)) for r in records]
        summaries = [query.metric_summaries(store, r) for r in records]
    diffs: list[dict[str, Any]] = []
    for record, side in zip(records[1:], sides[1:], strict=True):
        try:
            result = diff_runs(project.root, sides[0], side)
            diffs.append({"run": record, "diff": result, "error": None})
        except ProvenanceError as exc:
            diffs.append({"run": record, "diff": None, "error": str(exc)})
    flat = [_flatten(r.params) for r in records]
    param_names = sorted({k for f in flat for k in f})
    param_rows = [
        {
            "name": k,
            "values": [f.get(k) for f in flat],
            "differs": len({repr(f.get(k)) for f in flat}) > 1,
        }
        for k in param_names
    ]
    metric_names = list(dict.fromkeys(k for r in records for k in r.metrics))
    metric_rows = []
    for name in metric_names:
        values = [r.metrics.get(name) for r in records]
        base = values[0]
        deltas = [
            v - base
            if isinstance(v, int | float)
            and isinstance(base, int | float)
            and v == v
            and base == base
            else None
            for v in values
        ]
        metric_rows.append({"name": name, "values": values, "deltas": deltas})
    series_names = sorted({k for s in summaries for k in s})
    return render(
        request,
        "compare.html",
        runs=records,
        param_rows=param_rows,
        metric_rows=metric_rows,
        series_names=series_names,
        summaries=summaries,
        data_differs=len({r.data_version for r in records}) > 1,
        diffs=diffs,
        ids=",".join(r.id for r in records),
    )


def parallel_page(request: Request) -> Response:
    """Parallel coordinates over params and one metric; brushing filters the table below."""
    params = dict(request.query_params)
    text = params.get("q", "")
    error = None
    try:
        split_filters(text)
    except FilterError as exc:
        error = str(exc)
    choices = state_of(request).table_choices()
    metric = params.get("metric") or (choices.metrics[0] if choices.metrics else "")
    return render(
        request,
        "parallel.html",
        status=400 if error else 200,
        q=text,
        error=error,
        metric=metric,
        metrics=choices.metrics,
        axes=_list(request, "axes"),
    )
