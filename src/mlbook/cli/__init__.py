"""The ``mlbook`` command line: a thin layer over the library.

Sub-commands are registered by import path and loaded on first use, so
``mlbook --help`` imports no command module (and no rich, numpy or torch).
Library errors (:class:`mlbook.errors.MlbookError`) print as one line
``error: ...`` and exit 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import importlib
from typing import Any

import click

from mlbook._version import __version__

__all__ = ["COMMANDS", "cli", "main"]

# name -> (section, "module:attribute", short help). Keep in the order shown by --help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("Project", "mlbook.cli.project:init", "Create a project, or adopt a directory."),
    "check": (
        "Project",
        "mlbook.cli.project:check",
        "Check that each area keeps to its boundaries.",
    ),
    "data": (
        "Data",
        "mlbook.cli.datasets:data",
        "Datasets: validate, convert, split; versions, lineage, restore.",
    ),
    "new": ("Experiments", "mlbook.cli.experiments:new", "Write a new experiment script."),
    "ls": ("Experiments", "mlbook.cli.experiments:ls", "List experiments and their versions."),
    "run": ("Experiments", "mlbook.cli.experiments:run", "Run experiments (test, run, export)."),
    "runs": ("Experiments", "mlbook.cli.experiments:runs", "List and filter recorded runs."),
    "show": ("Experiments", "mlbook.cli.experiments:show", "Show one run in detail."),
    "log": ("Journal", "mlbook.cli.provenance:log", "Show the experiment journal; set a status."),
    "note": ("Journal", "mlbook.cli.provenance:note", "Add a dated note to an experiment."),
    "diff": ("Journal", "mlbook.cli.provenance:diff", "What differs between two runs."),
    "checkout": ("Journal", "mlbook.cli.provenance:checkout", "Write a run's code to a directory."),
    "ui": (
        "Journal",
        "mlbook.cli.ui:ui",
        "Browse runs, curves, diffs and the journal in a browser.",
    ),
    "export": ("Deployment", "mlbook.cli.deploy:export", "Export a run as a verified bundle."),
    "exports": ("Deployment", "mlbook.cli.deploy:exports", "List export bundles and their status."),
    "key": ("Deployment", "mlbook.cli.deploy:key", "Show or export the bundle-signing key."),
    "serve": ("Deployment", "mlbook.cli.deploy:serve", "Serve an export bundle over HTTP."),
    "pack": ("Transfer", "mlbook.cli.transfer:pack", "Pack runs into one signed file."),
    "unpack": ("Transfer", "mlbook.cli.transfer:unpack", "Unpack a pack's runs into this project."),
    "pull": ("Transfer", "mlbook.cli.transfer:pull", "Pull runs from another clone (ssh)."),
    "push": ("Transfer", "mlbook.cli.transfer:push", "Push runs to another clone (ssh)."),
    "import": ("Transfer", "mlbook.cli.transfer:import_group", "Import runs from MLflow."),
}

_DEBUG_KEY = "mlbook.debug"


class UserError(click.ClickException):
    """A library error shown as one line: ``error: <message>``."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    """A group whose commands are imported only when they run (or show their help)."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *sorted(set(self.commands) - set(self.lazy))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in self.lazy:
            return None
        module_name, _, attribute = self.lazy[cmd_name][1].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name][1]} is not a click command")
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        width = max(map(len, self.lazy), default=0)
        for name, (section, _, short) in self.lazy.items():
            sections.setdefault(section, []).append((name.ljust(width), short))
        for section, rows in sections.items():
            with formatter.section(section):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        import warnings

        from mlbook.errors import MlbookError, MlbookWarning

        warnings.simplefilter("always", MlbookWarning)
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except MlbookError as exc:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            raise UserError(str(exc)) from exc


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Warnings as one line on stderr: ``warning: <message>``."""
    click.echo(f"warning: {message}", err=True)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", "-V", prog_name="mlbook")
@click.option(
    "-C",
    "project_dir",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=str),
    help="Run as if started in DIR.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, project_dir: str | None, debug: bool) -> None:
    """mlbook: ML projects with boundaries, a run log that never forgets, and exports
    that carry their code.

    Start with `mlbook init NAME`, then see `mlbook COMMAND --help`.
    """
    ctx.meta[_DEBUG_KEY] = debug
    if project_dir is not None:
        import os

        try:
            os.chdir(project_dir)
        except OSError as exc:
            raise click.BadParameter(f"cannot enter {project_dir}: {exc.strerror}") from exc


def main() -> None:
    """Entry point of the ``mlbook`` console script."""
    try:
        cli(prog_name="mlbook")
    finally:
        # the interpreter's last collection walks every object the imported modules
        # made (30 ms of each command's time, `mlbook run` included); what is left
        # at exit is not garbage worth collecting
        gc.freeze()
