"""Project commands: ``mlbook init`` and ``mlbook check``."""

from __future__ import annotations

from pathlib import Path

import click

from mlbook.cli._options import format_option, quiet_option

__all__ = ["check", "init"]


@click.command()
@click.argument("path", type=click.Path(path_type=Path), metavar="NAME")
@click.option("--name", help="Project name for mlbook.toml (default: the directory name).")
@click.option(
    "--example",
    type=click.Choice(["digits"]),
    help="Also write an example project: digits = a PyTorch CNN and MLP on "
    "scikit-learn's handwritten digits, from data preparation to deployment.",
)
def init(path: Path, name: str | None, example: str | None) -> None:
    """Create the project NAME (a new directory), or adopt a directory with `mlbook init .`

    Lays out mlbook.toml, EXPERIMENT_LOG.md, NOTES.md, Datasets/, Models/common/,
    Deployment/ and Data_processing/, a .gitignore, and runs `git init` unless the
    directory is already in a git repository. Files that exist are never overwritten.

    Example:

    \b
        mlbook init demo && cd demo && mlbook check

        mlbook init demo --example digits && cd demo && python Data_processing/prepare_digits.py
    """
    from mlbook.cli._render import console
    from mlbook.scaffold import init_project

    result = init_project(path, name=name, example=example)
    root = result.project.root
    verb = "Adopted" if result.kept else "Created"
    console.print(f"{verb} project [bold]{result.project.name}[/] at {root}")
    for created in result.created:
        console.print(f"  [green]created[/]  {created.relative_to(root).as_posix()}")
    for kept in result.kept:
        console.print(f"  [yellow]kept[/]     {kept.relative_to(root).as_posix()} (already there)")
    console.print(f"git: {result.git}")
    here = Path.cwd().resolve() == root
    if example == "digits":
        prefix = "" if here else f"cd {path} && "
        console.print(
            f"Next: {prefix}python Data_processing/prepare_digits.py && mlbook check "
            "&& mlbook run --mode test && mlbook run"
        )
    elif not here:
        console.print(f"Next: cd {path} && mlbook check")
    else:
        console.print("Next: mlbook check")


@click.command()
@format_option("json")
@quiet_option
def check(output_format: str, quiet: bool) -> None:
    """Check that each area's code keeps to its boundaries.

    Training code (Models/) may use only Datasets/ and Models/; deployment code only
    Datasets/ and Deployment/; data processing only Datasets/ and Data_processing/.
    Imports and path literals that cross are reported as `path:line: rule: detail`;
    the exit code is 1 when there is any.

    Example:

    \b
        mlbook check --format json
    """
    from mlbook.boundaries import check_project
    from mlbook.cli._render import RichReporter, console, print_json
    from mlbook.project import Project

    project = Project.find()
    report = check_project(project, reporter=RichReporter(quiet=quiet))
    if output_format == "json":
        print_json(
            {
                "ok": report.ok,
                "files": report.files,
                "violations": [
                    {"path": v.path, "line": v.line, "rule": v.rule, "detail": v.detail}
                    for v in report.violations
                ],
            }
        )
    else:
        for violation in report.violations:
            click.echo(str(violation))
        if report.ok:
            console.print(
                f"[green]clean[/]: {report.files} Python files checked, no boundary crossed"
            )
        else:
            files = len({v.path for v in report.violations})
            console.print(
                f"[red]{len(report.violations)} violation(s)[/] in {files} file(s) "
                f"({report.files} Python files checked)"
            )
    if not report.ok:
        raise SystemExit(1)
