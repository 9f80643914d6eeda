"""Data versions and lineage: ``mlbook data process | lineage | restore``.

Registered in the ``data`` group (:mod:`mlbook.cli.datasets`); the work is in
:mod:`mlbook.provenance.lineage` and :mod:`mlbook.provenance.restore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mlbook.cli._options import format_option

if TYPE_CHECKING:
    from mlbook.experiments.query import RunDataset
    from mlbook.provenance.lineage import Lineage, RunData, Step

__all__ = ["COMMANDS", "lineage", "process", "restore", "run_data_lines"]


def _short(value: str | None) -> str:
    if not value:
        return "-"
    kind, _, rest = value.partition(":")
    return f"{kind}:{rest[:12]}" if rest else value


def _files(count: int | None) -> str:
    return "" if count is None else f" ({count:,} files)"


@click.command()
@click.argument("script", type=click.Path(dir_okay=False))
@click.option("--in", "inputs", multiple=True, metavar="PATH", help="An input dataset (repeat).")
@click.option("--out", "output", required=True, metavar="PATH", help="The output dataset.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def process(script: str, inputs: tuple[str, ...], output: str, args: tuple[str, ...]) -> None:
    """Run a Data_processing/ script as a recorded step that makes a dataset version.

    The script gets ARGS (after --), then --in PATH for each input and --out TMP: a new
    directory renamed to the output only when the script succeeds, so a failing
    script leaves the previous dataset in place. It runs in its own process and may
    touch only Datasets/ and Data_processing/. The step (script hash and commit,
    params, input and output hashes, duration, status, output) is kept in the run
    store; `mlbook data lineage` shows it. Exit code 1 when the script fails.

    Example:

    \b
        mlbook data process Data_processing/clean.py --in Datasets/raw --out Datasets/cars
        mlbook data process Data_processing/clean.py --out Datasets/cars -- --min-size 10
    """
    from mlbook.errors import DatasetError
    from mlbook.project import Project
    from mlbook.provenance.lineage import process_data

    project = Project.find()
    result = process_data(project, script, inputs, output, args, echo=click.echo)
    if not result.ok:
        raise DatasetError(
            f"{project.relative(script)} {result.status} ({result.last_line()}); "
            f"{result.output} is as it was; step {result.step_id} keeps the output"
        )
    record = result.record
    assert record is not None
    click.echo(
        f"step {result.step_id}: {record.path} {record.short}{_files(record.nfiles)}"
        + (f" [{record.state}]" if record.state not in ("clean", "untracked") else "")
    )


def _step_text(step: Step) -> str:
    if step.kind == "dvc":
        where = (step.commit or "")[:7] or "not committed"
        return f"dvc.lock stage {step.id.rpartition(':')[2]}: {step.command} @ {where}"
    took = "" if step.duration is None else f" in {step.duration:.1f}s"
    return f"{step.label} (step {step.id}{took})"


def _print_lineage(found: Lineage, indent: str = "") -> None:
    click.echo(f"{indent}{found.path}")
    if not found.versions:
        click.echo(f"{indent}  no recorded version (no step made it, no run used it)")
    for version in found.versions:
        mark = "  <- now" if version.current else ""
        click.echo(f"{indent}  {version.short}{mark}")
        for step in version.steps:
            click.echo(f"{indent}    made by {_step_text(step)}")
            for path, value in dict(reversed(step.inputs)).items():  # first hash of each
                click.echo(f"{indent}      from {path} {_short(value)}")
        if version.runs:
            shown = ", ".join(r.run_id + (f" [{r.state}]" if r.dirty else "") for r in version.runs)
            click.echo(f"{indent}    used by {shown}")
        for upstream in version.upstream:
            if any(v.steps for v in upstream.versions):  # only inputs some step made
                _print_lineage(upstream, indent + "      ")
    for step in found.failed:
        click.echo(f"{indent}  failed: {_step_text(step)} ({step.status})")


@click.command()
@click.argument("dataset", type=click.Path())
@format_option("json")
def lineage(dataset: str, output_format: str) -> None:
    """Show how DATASET was made: script@commit -> version -> runs that trained on it.

    Versions come from `mlbook data process` steps, from dvc.lock stages that run a
    Data_processing/ script, and from the runs that recorded the dataset; the
    working copy now is marked. A dvc.yaml stage that runs a script missing from
    its own deps is warned about (DVC cannot see changes to it).

    Example:

    \b
        mlbook data lineage Datasets/cars
    """
    from mlbook.cli._render import print_json
    from mlbook.project import Project
    from mlbook.provenance.lineage import lineage as find_lineage

    found = find_lineage(Project.find(), dataset)
    if output_format == "json":
        print_json(found.to_dict())
    else:
        _print_lineage(found)
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command()
@click.argument("run_id", metavar="RUN_ID")
@click.argument("dataset", required=False)
@format_option("json")
def restore(run_id: str, dataset: str | None, output_format: str) -> None:
    """Bring back the data run RUN_ID used (every dataset it recorded, or DATASET).

    DVC-tracked data: the .dvc file (or dvc.lock) of the run's before commit, then
    `dvc checkout`. Other datasets: the files the before commit holds, from git.
    Refuses to overwrite changes that neither DVC nor git holds.

    Example:

    \b
        mlbook data restore 20261125-110407-8b3a63 Datasets/digits
    """
    from mlbook.cli._render import print_json
    from mlbook.project import Project
    from mlbook.provenance.restore import restore_data

    restored = restore_data(Project.find(), run_id, dataset)
    if output_format == "json":
        print_json([r.to_dict() for r in restored])
        return
    for item in restored:
        how = {"dvc": "with dvc checkout", "git": "from git", "same": "unchanged"}[item.how]
        note = f"; {item.note}" if item.note and item.how != "dvc" else ""
        click.echo(f"{item.path} {_short(item.hash)}{_files(item.nfiles)} {how}{note}")


def _record_text(record: RunDataset) -> str:
    state = "" if record.state in ("clean", "untracked") else f" [{record.state}"
    if record.state == "modified":
        state += f"; {record.source} says {_short(record.recorded)}"
    state += "]" if state else ""
    where = f" {record.source}" if record.source and record.state == "clean" else ""
    return f"{record.path} {record.short}{_files(record.nfiles)}{where}{state}"


def run_data_lines(found: list[RunData]) -> list[tuple[str, str]]:
    """Lines for ``mlbook show``: (text, style) per dataset, its steps and staleness."""
    lines: list[tuple[str, str]] = []
    for item in found:
        lines.append((f"data: {_record_text(item.record)}", ""))
        for step in item.steps:
            lines.append((f"  made by {_step_text(step)}", ""))
        if item.changed:
            now = _short(item.now) if item.now else "missing"
            lines.append(
                (f"  warning: {item.record.path} changed since this run (now {now})", "yellow")
            )
    return lines


COMMANDS = (process, lineage, restore)
