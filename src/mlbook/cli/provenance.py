"""Journal commands: ``mlbook log``, ``mlbook note``, ``mlbook checkout`` and ``mlbook diff``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlbook.cli._options import format_option

if TYPE_CHECKING:
    from mlbook.provenance.diff import RunDiff, ViewChange

__all__ = ["checkout", "diff", "log", "note", "print_run_diff"]


@click.command()
@click.argument("exp_id", required=False, metavar="[EXP_ID]")
@click.option(
    "--status",
    metavar="STATUS",
    help="Set the status of EXP_ID: todo, in-progress or done.",
)
@format_option("json")
def log(exp_id: str | None, status: str | None, output_format: str) -> None:
    """Show the experiment journal (EXPERIMENT_LOG.md) as a table, or one experiment's steps.

    With EXP_ID, lists that experiment's steps (version, run, status, metrics,
    commits before → after); with --status, changes its status instead.

    Example:

    \b
        mlbook log
        mlbook log E012
        mlbook log E012 --status done
    """
    from mlbook.cli._render import Column, console, print_json, print_records
    from mlbook.project import Project
    from mlbook.provenance.journal import best_metric, read_journal, set_status

    project = Project.find()
    path = project.journal_path
    from mlbook.provenance.observer import settle_journal

    settle_journal(project)  # steps of runs that crashed since
    if status is not None:
        if exp_id is None:
            raise click.UsageError("--status needs an EXP_ID, e.g. `mlbook log E012 --status done`")
        written = set_status(path, exp_id, status)
        console.print(f"{exp_id}: status {written}")
        return
    entries = read_journal(path)
    if exp_id is not None:
        entries = [e for e in entries if e.id == exp_id]
        if not entries:
            from mlbook.errors import ProvenanceError

            raise ProvenanceError(
                f"{path}: no entry for {exp_id}; create it with `mlbook new {exp_id} TITLE`"
            )
    records = [e.to_dict() for e in entries]
    if output_format == "json":
        print_json(records)
        return
    if exp_id is not None:
        [entry] = records
        console.print(f"[{entry['id']}] {entry['title']}", style="bold", markup=False, end="")
        console.print(f" · {entry['status']}", markup=False)
        print_records(
            [
                Column("#", "number", justify="right"),
                Column("version", "version"),
                Column("run", "run_id"),
                Column("status", "status"),
                Column("metrics", _step_metrics),
                Column("commits", _step_commits),
            ],
            entry["steps"],
        )
        for line in entry["notes"]:
            console.print(f"  note {line}", markup=False)
        return
    if not records:
        console.print(f"no experiments in {project.relative(path)} yet; add one with `mlbook new`")
        return
    for record, entry_object in zip(records, entries, strict=True):
        record["best"] = best_metric(entry_object)
    print_records(
        [
            Column("id", "id"),
            Column("title", "title"),
            Column("status", "status"),
            Column("steps", _steps_done, justify="right"),
            Column("best", lambda r: f"{r['best'][0]} {r['best'][1]:.4g}" if r["best"] else None),
        ],
        records,
    )


def _step_metrics(step: Mapping[str, Any]) -> str | None:
    return " ".join(f"{k} {v:.4g}" for k, v in step["metrics"].items()) or None


def _step_commits(step: Mapping[str, Any]) -> str | None:
    if not (step["before"] or step["after"]):
        return None
    return f"{step['before'] or '?'} → {step['after'] or '?'}"


def _steps_done(entry: Mapping[str, Any]) -> str:
    return f"{sum(s['done'] for s in entry['steps'])}/{len(entry['steps'])}"


@click.command()
@click.argument("exp_id")
@click.argument("text")
def note(exp_id: str, text: str) -> None:
    """Add a dated note, with the current commit, to experiment EXP_ID in the journal.

    Example:

    \b
        mlbook note E012 "wider is not better past 64 channels"
    """
    from mlbook.cli._render import console
    from mlbook.project import Project
    from mlbook.provenance.git import current_commit
    from mlbook.provenance.journal import add_note

    project = Project.find()
    written = add_note(project.journal_path, exp_id, text, current_commit(project.root))
    console.print(f"{exp_id}: noted {written}", markup=False)


@click.command()
@click.argument("target", metavar="RUN_OR_COMMIT")
@click.argument("dest", type=click.Path(path_type=Path), metavar="DIR")
@click.option("--after", is_flag=True, help="For a run: its code after the run (with results).")
@click.option(
    "--missing-ok",
    is_flag=True,
    help="Write the rest when pointed files' bytes are gone (their pointers stay).",
)
def checkout(target: str, dest: Path, after: bool, missing_ok: bool) -> None:
    """Write the project's code as of a run (its ID or a unique prefix), a commit or a ref into DIR.

    For a run, the snapshot taken before the run, or after it with --after (the
    run's outputs included). Files recorded as pointers (over [git] max_file_size)
    get their bytes back from the project while it still has them; when some are
    gone, nothing is written unless --missing-ok. DIR must be new or empty; the
    project's own files (working tree, branch, index) are not touched.

    Example:

    \b
        mlbook checkout 20261124-1616-ab12 /tmp/e012-small
        mlbook checkout 20261124-1616 --after /tmp/e012-small-results
    """
    from mlbook.cli._render import console
    from mlbook.project import Project
    from mlbook.provenance.checkout import checkout_run

    project = Project.find()
    done = checkout_run(project, target, dest, after=after, missing_ok=missing_ok)
    console.print(f"wrote {target} ({done.commit[:7]}) to {done.path}", markup=False)
    if done.restored:
        console.print(f"restored {len(done.restored)} large file(s) from the project", markup=False)
    for path in done.missing:
        click.echo(f"warning: {path}: its bytes are gone; its pointer is in its place", err=True)


def view_change_text(change: ViewChange) -> str:
    """One line for a saved view that differs between two runs."""
    if change.a is None or change.b is None:
        which = "only in the second run" if change.a is None else "only in the first run"
        return f"view {change.key}: {which}"
    parts = []
    if change.a[0] != change.b[0]:
        parts.append(f"query {change.a[0]!r} → {change.b[0]!r}")
    if change.a[1] != change.b[1]:
        parts.append(
            f"records {change.a[2]} → {change.b[2]} (ids {change.a[1][:12]} → {change.b[1][:12]})"
        )
    return f"view {change.key}: " + "; ".join(parts)


def print_run_diff(result: RunDiff, color: bool | None = None) -> None:
    """Print a :class:`~mlbook.provenance.diff.RunDiff`: params, data, metrics, then code.

    Colours follow the terminal (``color=None``); ``False`` prints plain text.
    """
    from rich.text import Text

    from mlbook.cli._render import console, print_table

    def say(text: str, style: str = "") -> None:
        console.print(Text(text, style=style if color is not False else ""))

    say(f"{result.a} → {result.b}", "bold")
    if result.params:
        print_table(
            ["param", result.a, result.b],
            [
                (
                    c.key,
                    repr(c.a) if c.present_a else "(missing)",
                    repr(c.b) if c.present_b else "(missing)",
                )
                for c in result.params
            ],
        )
    elif result.b != "working tree":
        say("params: same")
    if result.data is not None:
        say(f"data: {result.data[0] or '(none)'} → {result.data[1] or '(none)'}", "yellow")
    elif result.b != "working tree":
        say("data: same")
    for change in result.views:
        say(view_change_text(change), "yellow")
    if result.metrics:
        print_table(
            ["metric", result.a, result.b, "delta"],
            [
                (m.key, m.a, m.b, f"{m.delta:+.4g}" if m.delta is not None else None)
                for m in result.metrics
            ],
            justify={result.a: "right", result.b: "right", "delta": "right"},
        )
    if result.code_note:
        say(f"code: {result.code_note}", "yellow")
    elif not result.code:
        scope = "the files the runs used" if result.code_paths is not None else "the tree"
        say(f"code: no change in {scope}")
    else:
        for line in result.code.splitlines():
            style = ""
            if line.startswith(("+++", "---", "diff --git", "index ")):
                style = "bold"
            elif line.startswith("@@"):
                style = "cyan"
            elif line.startswith("+"):
                style = "green"
            elif line.startswith("-"):
                style = "red"
            say(line, style)
    if result.cause:
        say(f"same params, data and code, different metrics: likely {result.cause}", "yellow")


@click.command()
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="[RUN_B]", required=False)
@click.option("--all", "all_files", is_flag=True, help="Diff the whole tree, not only used files.")
@click.option("--no-color", is_flag=True, help="Plain text, even in a terminal.")
def diff(run_a: str, run_b: str | None, all_files: bool, no_color: bool) -> None:
    """Show what differs between two runs (IDs or unique prefixes): params, data, metrics, code.

    The code diff is between the runs' `before` commits, limited to the files either
    run used (--all: the whole tree). With one run, compares it with the working
    tree now. When params, data and code are the same but the metrics are not, the
    last line names the likely cause (no seed, threads, environment, nondeterministic ops).

    Example:

    \b
        mlbook diff 20261124-1616-ab12 20261124-1700-cd34
        mlbook diff 20261124-1616-ab12 --all
    """
    from mlbook.experiments.query import get_run, run_files, run_views
    from mlbook.experiments.store import Store
    from mlbook.project import Project
    from mlbook.provenance.diff import diff_runs, run_side

    project = Project.find()
    with Store.for_project(project, readonly=True) as store:
        a = get_run(store, run_a)
        side_a = run_side(a, run_files(store, a.id), project.root, run_views(store, a.id))
        side_b = None
        if run_b is not None:
            b = get_run(store, run_b)
            side_b = run_side(b, run_files(store, b.id), project.root, run_views(store, b.id))
    result = diff_runs(project.root, side_a, side_b, all_files=all_files)
    print_run_diff(result, color=False if no_color else None)
    _print_data_changes(project, a.id, b.id if run_b is not None else None)


def _print_data_changes(project: Any, run_a: str, run_b: str | None) -> None:
    """Each dataset that differs (two runs), or changed since the run (one run): stale data."""
    from mlbook.provenance.lineage import compare_data

    if run_b is not None:
        for change in compare_data(project, run_a, run_b):
            states = f" ({change.state_a or '-'} -> {change.state_b or '-'})"
            click.echo(
                f"data {change.path}: {change.a or '(none)'} -> {change.b or '(none)'}{states}"
            )
    for run in (run_a, run_b) if run_b is not None else (run_a,):
        for change in compare_data(project, run):
            now = change.b or "missing"
            click.echo(f"warning: {change.path} changed since run {run}: {change.a} -> now {now}")
