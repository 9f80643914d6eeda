"""Transfer commands: ``pack``, ``unpack``, ``pull``, ``push``, ``import mlflow``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mlbook.cli._options import format_option, quiet_option

if TYPE_CHECKING:
    from mlbook.transfer.unpack import UnpackResult

__all__ = ["import_group", "pack", "pull", "push", "unpack"]

F = TypeVar("F", bound=Callable[..., Any])


def _selection_options(func: F) -> F:
    """``[RUN_ID | FILTER]...``, ``-e/--experiment`` and ``--outputs``, spelled once."""
    func = click.option(
        "--outputs",
        type=click.Choice(["none", "small", "all"]),
        default="small",
        show_default=True,
        help="Output files to take along (small: under 10 MB each).",
    )(func)
    func = click.option(
        "--experiment", "-e", "experiments", multiple=True, help="Only runs of this experiment."
    )(func)
    return click.argument("selectors", nargs=-1, metavar="[RUN_ID | FILTER]...")(func)


def _remote_options(func: F) -> F:
    """``--force``, ``--remote-mlbook`` and ``--ssh`` for pull and push."""
    func = click.option(
        "--ssh", "ssh", default="ssh", show_default=True, metavar="PROGRAM", help="The ssh client."
    )(func)
    func = click.option(
        "--remote-mlbook",
        default="mlbook",
        show_default=True,
        metavar="COMMAND",
        help="How to run mlbook on the host (e.g. ~/proj/.venv/bin/mlbook).",
    )(func)
    return click.option(
        "--force", is_flag=True, help="Accept runs of another project (another root commit)."
    )(func)


@click.command()
@_selection_options
@click.option(
    "--output", "-o", required=True, metavar="FILE", help="The pack to write; - for stdout."
)
@format_option("json")
@quiet_option
def pack(
    selectors: tuple[str, ...],
    experiments: tuple[str, ...],
    outputs: str,
    output: str,
    output_format: str,
    quiet: bool,
) -> None:
    """Pack finished runs into one signed file: rows, metric series, commits, outputs.

    Runs are named by ID (a unique prefix is enough), by experiment, or by
    FILTER expressions as in `mlbook runs`; with none, every finished run.

    Example:

    \b
        mlbook pack -e E012 'acc>0.9' -o good.mlbook
    """
    from mlbook.cli._render import RichReporter, console, err_console, print_json
    from mlbook.project import Project
    from mlbook.transfer.pack import pack_runs

    to_stdout = output == "-"
    result = pack_runs(
        Project.find(),
        selectors,
        experiments=experiments,
        output=sys.stdout.buffer if to_stdout else Path(output),
        outputs=outputs,  # type: ignore[arg-type]
        reporter=RichReporter(quiet=quiet),
    )
    if output_format == "json" and not to_stdout:
        print_json(result.to_dict())
        return
    if quiet and to_stdout:
        return
    show = err_console if to_stdout else console
    large = f", {result.large} output file(s) of 10 MB or more left out" if result.large else ""
    show.print(
        f"packed {len(result.runs)} run(s), {result.outputs} output file(s){large}, "
        f"{result.refs} commit ref(s) into {result.path} ({_size(result.size)})",
        markup=False,
    )
    for run_id, why in result.skipped:
        show.print(f"left out {run_id}: {why}", markup=False)


@click.command()
@click.argument("pack_file", metavar="PACK")
@click.option("--force", is_flag=True, help="Accept a pack of another project.")
@click.option("--trust", is_flag=True, help="Accept an unsigned pack or an untrusted key.")
@click.option(
    "--trust-key",
    "trust_keys",
    multiple=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A public key to trust (from `mlbook key --export FILE`).",
)
@format_option("json")
@quiet_option
def unpack(
    pack_file: str,
    force: bool,
    trust: bool,
    trust_keys: tuple[Path, ...],
    output_format: str,
    quiet: bool,
) -> None:
    """Unpack a pack into this project: all or nothing; runs already here are skipped.

    PACK is a file, or - for standard input. A run here with the same ID and
    other content refuses the whole pack. The pack must be signed by a key
    this project trusts: its own, one in MLBOOK_TRUSTED_KEYS, or --trust-key.

    Example:

    \b
        mlbook unpack runs.mlbook --trust-key cluster.pub
    """
    from mlbook.cli._render import RichReporter
    from mlbook.project import Project
    from mlbook.transfer.unpack import unpack as unpack_runs

    result = unpack_runs(
        Project.find(),
        pack_file,
        force=force,
        trust=trust,
        trusted_keys=list(trust_keys) or None,
        reporter=RichReporter(quiet=quiet),
    )
    _show_unpacked(result, output_format)


def _show_unpacked(result: UnpackResult, output_format: str) -> None:
    from mlbook.cli._render import console, print_json

    if output_format == "json":
        print_json(result.to_dict())
        return
    signer = f", signed by {result.signer}" if result.signer else ", unsigned"
    if not result.added:
        console.print(
            f"nothing to add: the {len(result.present)} run(s) of {result.source} are here already",
            markup=False,
        )
        return
    present = f"; {len(result.present)} already here" if result.present else ""
    console.print(
        f"added {len(result.added)} run(s) from {result.source} (project "
        f"{result.project}{signer}): {result.outputs} output file(s), {result.refs} commit "
        f"ref(s){present}",
        markup=False,
    )


@click.command()
@click.argument("remote", metavar="HOST:PATH")
@_selection_options
@_remote_options
@format_option("json")
@quiet_option
def pull(
    remote: str,
    selectors: tuple[str, ...],
    experiments: tuple[str, ...],
    outputs: str,
    force: bool,
    remote_mlbook: str,
    ssh: str,
    output_format: str,
    quiet: bool,
) -> None:
    """Pull runs from another clone: pack them there (over ssh), unpack them here.

    HOST:PATH names the clone on a host (the system ssh is used); a plain path
    names a clone on this machine. Runs are chosen as for `mlbook pack`.

    Example:

    \b
        mlbook pull cluster:work/digits -e E012 --outputs all
    """
    from mlbook.cli._render import RichReporter
    from mlbook.project import Project
    from mlbook.transfer.remote import pull as pull_runs

    result = pull_runs(
        Project.find(),
        remote,
        selectors,
        experiments=experiments,
        outputs=outputs,  # type: ignore[arg-type]
        force=force,
        remote_mlbook=remote_mlbook,
        ssh=ssh,
        reporter=RichReporter(quiet=quiet),
    )
    _show_unpacked(result, output_format)


@click.command()
@click.argument("remote", metavar="HOST:PATH")
@_selection_options
@_remote_options
@format_option("json")
@quiet_option
def push(
    remote: str,
    selectors: tuple[str, ...],
    experiments: tuple[str, ...],
    outputs: str,
    force: bool,
    remote_mlbook: str,
    ssh: str,
    output_format: str,
    quiet: bool,
) -> None:
    """Push runs to another clone: pack them here, unpack them there (over ssh).

    Example:

    \b
        mlbook push laptop:code/digits 20261125-110407-8b3a63
    """
    from mlbook.cli._render import RichReporter
    from mlbook.project import Project
    from mlbook.transfer.remote import push as push_runs

    result = push_runs(
        Project.find(),
        remote,
        selectors,
        experiments=experiments,
        outputs=outputs,  # type: ignore[arg-type]
        force=force,
        remote_mlbook=remote_mlbook,
        ssh=ssh,
        reporter=RichReporter(quiet=quiet),
    )
    _show_unpacked(result, output_format)


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


@click.group("import")
def import_group() -> None:
    """Import runs recorded by another tool (MLflow)."""


@import_group.command("mlflow", short_help="Import the runs of an MLflow tracking store.")
@click.argument("tracking_uri", required=False, metavar="[TRACKING_URI]")
@click.option(
    "--experiment", "-e", "experiments", multiple=True, metavar="NAME", help="Only this one."
)
@click.option("--as", "as_id", metavar="ID", help="Put the runs into this experiment (E020).")
@click.option("--no-artifacts", is_flag=True, help="Leave the runs' artifacts behind.")
@format_option("json")
@quiet_option
def import_mlflow(
    tracking_uri: str | None,
    experiments: tuple[str, ...],
    as_id: str | None,
    no_artifacts: bool,
    output_format: str,
    quiet: bool,
) -> None:
    """Import the runs of an MLflow tracking store (needs `pip install 'mlbook[mlflow]'`).

    TRACKING_URI is sqlite:///mlflow.db, a file store (./mlruns) or a path to
    either; default: MLflow's own default. Each MLflow experiment goes to a new
    experiment ID (or --as ID); importing again adds only new runs.

    Example:

    \b
        mlbook import mlflow sqlite:///mlflow.db --experiment digits --as E020
    """
    from mlbook.cli._render import Column, RichReporter, console, print_json, print_records
    from mlbook.project import Project
    from mlbook.transfer.mlflow_import import import_mlflow as import_runs

    result = import_runs(
        Project.find(),
        tracking_uri,
        experiments=experiments,
        as_id=as_id,
        artifacts=not no_artifacts,
        reporter=RichReporter(quiet=quiet),
    )
    if output_format == "json":
        print_json(result.to_dict())
        return
    mapped = ", ".join(f"{name!r} -> {ident}" for name, ident in result.experiments.items())
    console.print(
        f"imported {len(result.added)} run(s) from {result.uri}"
        + (f" ({mapped})" if mapped else "")
        + f", {result.artifacts} artifact file(s)"
        + (f"; {len(result.present)} imported before" if result.present else ""),
        markup=False,
    )
    if result.unmapped:
        print_records(
            [Column("MLflow run", "run"), Column("not carried over", "what"), Column("why", "why")],
            result.to_dict()["unmapped"],
            title="not carried over",
        )
