"""Experiment commands: ``new``, ``ls``, ``run``, ``runs``, ``show``."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from mlbook.cli._options import format_option, quiet_option

if TYPE_CHECKING:
    from mlbook.experiments.runner import RunInfo

__all__ = ["ls", "new", "run", "runs", "show"]

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "crashed": "red",
    "interrupted": "yellow",
    "running": "cyan",
}
_BLOCKS = "▁▂▃▄▅▆▇█"


def _status(status: str) -> str:
    return f"[{_status_style(status)}]{status}[/]"


def _status_style(status: str) -> str:
    return _STATUS_STYLE.get(status, "white")


def _escape(text: str) -> str:
    """Text shown through rich markup as it is."""
    return text.replace("\\", "\\\\").replace("[", "\\[")


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "-"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f}m"


def _metrics_text(metrics: dict[str, Any], limit: int = 4) -> str:
    items = list(metrics.items())[:limit]
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


def sparkline(values: list[float], width: int = 40) -> str:
    """Values as a row of block characters (downsampled to ``width``).

    NaN shows as a space; ±inf as the top or bottom block.
    """
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width - 1)] + [values[-1]]
    finite = [v for v in values if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (high - low) or 1.0
    top = len(_BLOCKS) - 1

    def block(v: float) -> str:
        if math.isnan(v):
            return " "
        if math.isinf(v):
            return _BLOCKS[top if v > 0 else 0]
        return _BLOCKS[int((v - low) / span * top)]

    return "".join(map(block, values))


@click.command()
@click.argument("ident", metavar="ID")
@click.argument("title")
@click.option("--name", help="File name part (default: the title in snake case).")
def new(ident: str, title: str, name: str | None) -> None:
    """Write a new experiment script Models/<ID>_<name>.py from the template.

    Example:

    \b
        mlbook new E013 "wider CNN"
    """
    from mlbook.cli._render import console
    from mlbook.experiments.runner import new_experiment
    from mlbook.project import Project

    project = Project.find()
    path = new_experiment(project, ident, title, name=name)
    console.print(f"[green]created[/]  {project.relative(path)}")
    console.print(f"Next: edit it, then `mlbook run {ident} --mode test`")


@click.command(name="ls")
@format_option("json")
@click.pass_context
def ls(ctx: click.Context, output_format: str) -> None:
    """List the experiments in Models/ and their versions.

    Scripts are read without being imported: from their source, or (when their
    versions are computed) in a child process, cached. A plain script (no
    mlbook.Experiment) shows its argparse options. `mlbook --debug ls` says
    which scripts were imported and why. Exits 1 when a script cannot be read.

    Example:

    \b
        mlbook ls --format json
    """
    from mlbook.cli._render import print_json, print_table
    from mlbook.errors import MlbookError
    from mlbook.experiments.discovery import find_scripts, read_script
    from mlbook.project import Project

    project = Project.find()
    debug = bool(ctx.meta.get("mlbook.debug"))
    rows: list[dict[str, Any]] = []
    for script in find_scripts(project):
        where = project.relative(script.path)
        try:
            plan = read_script(project, script)
        except MlbookError as exc:  # one broken script must not hide the others
            rows.append({"id": script.id, "script": where, "error": str(exc)})
            continue
        if debug and plan.read != "static":
            how = "imported in a child process" + (" (cached)" if plan.read == "cache" else "")
            click.echo(f"note: {where}: {how}: {plan.why}", err=True)
        row: dict[str, Any] = {
            "id": script.id,
            "script": where,
            "kind": plan.kind,
            "title": plan.title,
            "dataset": plan.dataset,
            "hooks": list(plan.hooks),
            "versions": plan.versions,
        }
        if plan.kind == "plain":
            row["options"] = {
                o.dest: {"flags": list(o.flags), "type": o.type, "default": o.default}
                for o in plan.options
            }
        rows.append(row)
    if output_format == "json":
        print_json(rows)
    else:
        print_table(
            ["id", "script", "versions", "hooks"],
            [
                (
                    r["id"],
                    r["script"],
                    f"[red]error: {r['error']}[/]" if "error" in r else ", ".join(r["versions"]),
                    _options_text(r["options"])
                    if "options" in r
                    else ", ".join(r.get("hooks", [])),
                )
                for r in rows
            ],
        )
    if any("error" in r for r in rows):
        ctx.exit(1)


def _options_text(options: dict[str, dict[str, Any]]) -> str:
    """A plain script's options as its flags: ``plain: --lr --epochs data``."""
    shown = [
        next((f for f in o["flags"] if f.startswith("--")), o["flags"][0]) if o["flags"] else dest
        for dest, o in options.items()
    ]
    return "plain: " + " ".join(shown) if shown else "plain"


class _Live:
    """Progress of the running versions: a one-line status on a TTY, plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = _terminal(sys.stderr)
        self.active: dict[str, RunInfo] = {}
        self.status: Any = None
        self.last = 0.0

    @property
    def console(self) -> Any:
        """rich's console, imported once the first child is starting (rich takes 40 ms
        to import: the child's start-up hides it) and only for a terminal."""
        from mlbook.cli._render import err_console

        return err_console

    def __enter__(self) -> _Live:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def _line(self, info: RunInfo) -> str:
        step = f"step {info.step}" + (f"/{info.total}" if info.total else "")
        metrics = _metrics_text(info.latest)
        return f"{info.experiment}/{info.version} {step} {metrics} {_seconds(info.elapsed)}"

    def run_started(self, info: RunInfo) -> None:
        self.active[info.run_id] = info
        if self.tty and not self.quiet and self.status is None:
            self.status = self.console.status("starting")
            self.status.start()
        if not self.quiet and not self.tty:
            click.echo(f"{'started':<11} {info.experiment}/{info.version} {info.run_id}", err=True)
        self._refresh(force=True)

    def run_progress(self, info: RunInfo) -> None:
        self._refresh(force=False)

    def _refresh(self, force: bool) -> None:
        now = time.monotonic()
        if self.status is None or (not force and now - self.last < 0.1):
            return
        self.last = now
        text = " | ".join(self._line(i) for i in self.active.values()) or "starting"
        self.status.update(text)

    def run_finished(self, info: RunInfo) -> None:
        self.active.pop(info.run_id, None)
        self._refresh(force=True)
        if self.quiet:
            return
        head = f"{info.experiment}/{info.version}"
        text = f"{head} {info.run_id} {_seconds(info.elapsed)}"
        text += f" {_metrics_text(info.metrics)}" if info.metrics else ""
        last = info.error.strip().splitlines()[-1] if info.error else ""
        if self.tty:
            line = f"{_status(info.status)} {_escape(text)}"
            self.console.print(line + (f"\n    {_escape(last)}" if last else ""))
        else:
            click.echo(f"{info.status:<11} {text}", err=True)
            if last:
                click.echo(f"    {last}", err=True)


@click.command()
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--mode",
    type=click.Choice(["test", "run", "export"]),
    default="run",
    show_default=True,
    help="test: temporary outputs, nothing recorded, loops cut short.",
)
@click.option("--version", "-v", "versions", multiple=True, help="Only this version (repeat).")
@click.option("--skip-version", "skip", multiple=True, help="Not this version (repeat).")
@click.option("--jobs", "-j", type=int, help="Versions run at once (default: [runner] jobs).")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    help="Where versions run (default: [runner] backend); ray: one Ray task per version.",
)
@click.option(
    "--address",
    metavar="HOST:PORT",
    help="The Ray cluster for --backend ray (default: [ray] address; none: a local head).",
)
@click.option("--resume", metavar="RUN_ID", help="Continue a run from its checkpoints.")
@click.option(
    "--steps",
    metavar="N[,N...]",
    help="Steps each iterate() loop yields in test mode; 3,2: 3 epochs of 2 batches.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a param of every version (repeat); unknown keys are refused.",
)
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Cross every version with these values of a param (repeat).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse to run on a dataset that differs from its .dvc file (or is not checked out).",
)
@quiet_option
def run(
    ids: tuple[str, ...],
    mode: str,
    versions: tuple[str, ...],
    skip: tuple[str, ...],
    jobs: int | None,
    backend: str | None,
    address: str | None,
    resume: str | None,
    steps: str | None,
    sets: tuple[str, ...],
    grids: tuple[str, ...],
    strict: bool,
    quiet: bool,
) -> None:
    """Run experiments: each version in its own process, recorded in the run store.

    Without IDs, runs the experiments listed in mlbook.toml [experiments]
    (include, or all but exclude). A plain script (no mlbook.Experiment) runs
    as it is, with its argparse options as params. Exits 1 when a version
    failed, 130 on Ctrl-C.

    Example:

    \b
        mlbook run E012 --mode test && mlbook run E012 --version small -j 2
        mlbook run E005 --set epochs=3 --grid lr=0.1,0.01
        mlbook run E012 --backend ray --address 10.0.0.5:6379
    """
    from mlbook.errors import ExperimentError
    from mlbook.experiments.plain import split_values
    from mlbook.experiments.runner import run_experiments
    from mlbook.project import Project

    def pairs(option: str, given: tuple[str, ...]) -> dict[str, str]:
        found: dict[str, str] = {}
        for text in given:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise ExperimentError(f"{option} {text}: expected KEY=VALUE, e.g. {option} lr=0.1")
            found[key.strip()] = value
        return found

    step_counts: list[int] | None = None
    if steps is not None:
        try:
            step_counts = [int(part) for part in steps.split(",")]
        except ValueError:
            raise ExperimentError(
                f"--steps {steps}: expected whole numbers from 1 up, e.g. 2 or 3,2"
            ) from None
    grid = {key: split_values(value) for key, value in pairs("--grid", grids).items()}
    project = Project.find()
    with _Live(quiet) as live:
        result = run_experiments(
            project,
            ids,
            versions=versions,
            skip_versions=skip,
            mode=mode,
            jobs=jobs,
            resume=resume,
            test_steps=step_counts,
            sets=pairs("--set", sets),
            grid=grid,
            listener=live,
            strict_data=strict,
            backend=backend if backend or address is None else "ray",
            address=address,
        )
    counts: dict[str, int] = {}
    for info in result.runs:
        counts[info.status] = counts.get(info.status, 0) + 1
    where = " (test mode: nothing recorded)" if mode == "test" else ""
    stopped = "Aborted! (Ctrl-C or SIGTERM): no further versions started"
    if _terminal(sys.stdout):
        from mlbook.cli._render import console

        summary = ", ".join(f"{n} {_status(s)}" for s, n in counts.items()) or "nothing ran"
        console.print(f"{len(result.runs)} run(s): {summary}{where}")
        if result.interrupted:
            console.print(f"[yellow]{stopped}[/]")
    else:
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing ran"
        click.echo(f"{len(result.runs)} run(s): {summary}{where}")
        if result.interrupted:
            click.echo(stopped)
    raise SystemExit(result.exit_code)


def _terminal(stream: Any) -> bool:
    """True when ``stream`` is a terminal (or the environment forces one, as rich reads it)."""
    forced = any(os.environ.get(name) for name in ("FORCE_COLOR", "TTY_COMPATIBLE"))
    return forced or bool(getattr(stream, "isatty", lambda: False)())


@click.command()
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@click.option("--experiment", "-e", "experiments", multiple=True, help="Only this experiment.")
@click.option("--version", "-v", "versions", multiple=True, help="Only this version.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["running", "completed", "failed", "interrupted", "crashed"]),
    help="Only runs with this status.",
)
@click.option("--sort", help="Sort by a field (acc, created, params.lr); -acc: descending.")
@click.option("--limit", "-n", type=int, default=50, show_default=True, help="0: all.")
@format_option("json", "csv")
def runs(
    filters: tuple[str, ...],
    experiments: tuple[str, ...],
    versions: tuple[str, ...],
    statuses: tuple[str, ...],
    sort: str | None,
    limit: int,
    output_format: str,
) -> None:
    """List recorded runs, newest first, filtered by FILTER expressions.

    A FILTER is NAME OP VALUE: a final metric (acc>0.9), params.NAME, or a run
    field (status=failed). Quote it so the shell leaves > and < alone.

    Example:

    \b
        mlbook runs -e E012 'acc>0.9' --sort -acc --format csv
    """
    from mlbook.cli._render import Column, console, print_json, print_records
    from mlbook.experiments.query import runs as query_runs
    from mlbook.project import Project

    found = query_runs(
        Project.find(),
        experiment=list(experiments) or None,
        version=list(versions) or None,
        status=list(statuses) or None,
        filters=filters,
        sort=sort,
        limit=limit or None,
    )
    records = [r.to_dict() for r in found]
    if output_format == "json":
        print_json(records)
        return
    if output_format == "csv":
        params = sorted({k for r in records for k in r["params"]})
        metrics = sorted({k for r in records for k in r["metrics"]})
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        base = ["id", "experiment", "version", "mode", "status", "created", "duration"]
        writer.writerow(base + [f"params.{k}" for k in params] + [f"metrics.{k}" for k in metrics])
        for r in records:
            writer.writerow(
                [r[k] for k in base]
                + [r["params"].get(k, "") for k in params]
                + [r["metrics"].get(k, "") for k in metrics]
            )
        return
    if not records:
        narrowed = filters or experiments or versions or statuses
        console.print(
            "no runs match"
            + (" (check the metric names with `mlbook show RUN_ID`)" if filters else "")
            if narrowed
            else "no runs recorded yet: `mlbook run` records them"
        )
        return
    print_records(
        [
            Column("id", "id"),
            Column("experiment", "experiment"),
            Column("version", "version"),
            Column("status", "status", style=_status_style),
            Column("started", lambda r: _when(r["started"])),
            Column("time", lambda r: _seconds(r["duration"])),
            Column("metrics", lambda r: _metrics_text(r["metrics"])),
        ],
        records,
    )


@click.command()
@click.argument("run_id", metavar="RUN_ID")
@format_option("json")
def show(run_id: str, output_format: str) -> None:
    """Show one run: params, final metrics, metric series, files and error.

    A unique prefix of the run ID is enough.

    Example:

    \b
        mlbook show 20261125-110407-8b3a63
    """
    from mlbook.cli._render import Column, console, print_json, print_records
    from mlbook.cli.lineage import run_data_lines
    from mlbook.experiments.query import (
        get_run,
        metric_series,
        run_artifacts,
        run_attempts,
        run_files,
        run_views,
    )
    from mlbook.experiments.store import Store
    from mlbook.project import Project
    from mlbook.provenance.lineage import run_data

    project = Project.find()
    with Store.for_project(project, readonly=True) as store:
        record = get_run(store, run_id)
        series = metric_series(store, record)
        artifacts = run_artifacts(store, record.id)
        files = run_files(store, record.id)
        views = run_views(store, record.id)
        attempts = run_attempts(store, record.id)
    data = record.to_dict()
    data["attempts"] = [
        {"attempt": a.attempt, "host": a.host, "pid": a.pid, "started": a.started, "ended": a.ended}
        for a in attempts
    ]
    data["series"] = {k: [[p.step, p.value] for p in points] for k, points in series.items()}
    data["artifacts"] = [
        dict(zip(("path", "size", "sha256", "kind"), a, strict=True)) for a in artifacts
    ]
    data["files"] = [dict(zip(("path", "size", "sha256"), f, strict=True)) for f in files]
    datasets = run_data(project, record.id)  # with the steps behind each and what changed since
    data["datasets"] = [d.to_dict() for d in datasets]
    data["views"] = [v.to_dict() for v in views]
    if output_format == "json":
        print_json(data)
        return
    console.print(
        f"[bold]{record.id}[/]  {record.experiment}/{record.version}  {record.mode}  "
        f"{_status(record.status)}  started {_when(record.started)}  {_seconds(record.duration)}"
    )
    console.print(f"outputs: {record.outputs or '-'}   weights: {record.weights or '-'}")
    where = [f"{a.host or '?'}" + (f" (pid {a.pid})" if a.pid else "") for a in attempts]
    if len(where) > 1:
        shown = ", ".join(f"{n} on {w}" for n, w in enumerate(where, start=1))
        console.print(_escape(f"attempts: {shown}"))
    elif where and where[0].split(" (")[0] != record.host:
        console.print(_escape(f"ran on: {where[0]}  (runner on {record.host})"))
    else:
        console.print(_escape(f"host: {record.host}"))
    if record.resumed_from:
        console.print(f"resumed from: {record.resumed_from}")
    if record.commit_before or record.commit_after or record.commit_reason:
        console.print(
            f"commits: before {record.commit_before or '-'}  after {record.commit_after or '-'}"
            + (f"  ({record.commit_reason})" if record.commit_reason else "")
        )
    if record.data_version or record.python:
        packages = record.packages or {}
        shown = ", ".join(f"{name} {version}" for name, version in sorted(packages.items())[:8])
        more = f" (+{len(packages) - 8} more)" if len(packages) > 8 else ""
        console.print(
            f"data: {record.data_version or '-'}   python {record.python or '-'}"
            + (f"   packages: {shown}{more}" if shown else "")
        )
    for text, style in run_data_lines(datasets):
        console.print(f"[{style}]{_escape(text)}[/]" if style else _escape(text))
    for v in views:
        boxes = f", boxes: {v.boxes}" if v.boxes else ""
        console.print(
            _escape(
                f"view: {v.dataset} @ {v.view}  ({v.count} records, query: "
                f"{v.query or '(all)'}{boxes})  ids {v.ids_hash[:12]}  records "
                f"{v.records_hash[:12]}"
            )
        )
    print_records(
        [Column("param", "name"), Column("value", "value")],
        [{"name": k, "value": v} for k, v in sorted(data["params"].items())],
        title="params",
    )
    if data["metrics"]:
        print_records(
            [Column("metric", "name"), Column("value", "value")],
            [{"name": k, "value": v} for k, v in data["metrics"].items()],
            title="final metrics",
        )
    if data["series"]:
        print_records(
            [
                Column("series", "key"),
                Column("points", lambda r: len(r["points"]), justify="right"),
                Column("last", lambda r: r["points"][-1][1], justify="right"),
                Column("trend", lambda r: sparkline([v for _, v in r["points"]])),
            ],
            [{"key": k, "points": points} for k, points in data["series"].items()],
            title="metric series",
        )
    shown_files = [{**f, "kind": "code"} for f in data["files"]] + [
        a
        for a in data["artifacts"]
        if not a["kind"].endswith("-deleted")  # cleaned-up checkpoints stay in --format json
    ]
    if shown_files:
        print_records(
            [
                Column("path", "path"),
                Column("kind", "kind"),
                Column("size", "size", justify="right"),
                Column("sha256", lambda r: r["sha256"][:12]),
            ],
            shown_files,
            title="files",
        )
    if record.error:
        console.print("[red]error:[/]")
        click.echo(record.error)
