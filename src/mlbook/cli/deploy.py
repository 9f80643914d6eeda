"""Deployment commands: ``export``, ``exports``, ``key``, ``serve``."""

from __future__ import annotations

import math
import re

import click

from mlbook.cli._options import format_option, quiet_option

__all__ = ["export", "exports", "key", "serve"]


@click.command()
@click.argument("experiment")
@click.option("--version", "-v", "version", help="Only runs of this version (default: any).")
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    help="This run (an ID or a unique prefix; default: the best completed run).",
)
@click.option(
    "--metric",
    metavar="NAME",
    help="Pick the best run by this final metric (default: the script's, then mlbook.toml's).",
)
@click.option(
    "--goal",
    type=click.Choice(["max", "min"]),
    help="With --metric: the best run has the highest (max, default) or lowest (min) value.",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=str),
    help="Bundle directory (default: Deployment/exports/<ID>-<version>).",
)
@click.option("--onnx/--no-onnx", default=None, help="Also write model.onnx, checked.")
@click.option("--force", is_flag=True, help="Replace a bundle already at the destination.")
@click.option(
    "--current-code",
    is_flag=True,
    help="Export the code as it is now, even if files the run used changed since.",
)
@format_option("json")
@quiet_option
def export(
    experiment: str,
    version: str | None,
    run_id: str | None,
    metric: str | None,
    goal: str | None,
    dest: str | None,
    onnx: bool | None,
    force: bool,
    current_code: bool,
    output_format: str,
    quiet: bool,
) -> None:
    """Export the best run's model with its code as a verified, signed bundle.

    Without --run, the run is the best completed one by the selection metric
    (Experiment(metric="acc", goal="max") in the script, or [experiments] metric
    in mlbook.toml; the latest completed run when none is named), and the output
    says which and why. A bundle already at the destination is replaced only
    with --force, which prints the old and the new run.

    The bundle holds the script and every file under Models/ it imports, the
    weights, params.json, labels.json, manifest.json (sha256 of every file) and
    signature.json (the manifest signed with the project's key, see `mlbook key`).
    It is loaded and run once in a clean process before it is put in place.

    Example:

    \b
        mlbook export E012
        mlbook export E012 --version small --onnx --force
        mlbook export E012 --run 20261124-1616
    """
    from mlbook.cli._render import RichReporter, console, print_json
    from mlbook.deploy.bundle import export_run
    from mlbook.project import Project

    project = Project.find()
    result = export_run(
        project,
        experiment,
        version,
        run_id=run_id,
        dest=dest,
        onnx=onnx,
        force=force,
        current_code=current_code,
        metric=metric,
        goal=goal,
        reporter=RichReporter(quiet=quiet),
    )
    manifest = result.manifest
    selection = result.selection
    if output_format == "json":
        import dataclasses

        import msgspec

        print_json(
            {
                "path": str(result.path),
                "key": result.key,
                "public_key": str(result.public_key),
                "reason": selection.reason if selection else "",
                "replaced": dataclasses.asdict(result.replaced) if result.replaced else None,
                "manifest": msgspec.to_builtins(manifest),
            }
        )
        return
    where = project.relative(result.path)
    if selection is not None:
        from rich.markup import escape

        console.print(f"[green]run[/]       {manifest.run_id}: {escape(selection.reason)}")
    if result.replaced is not None:
        old = result.replaced
        console.print(
            f"[yellow]replaced[/]  run {old.run_id}{_metric_text(old.metric, old.value)} → run "
            f"{manifest.run_id}{_metric_text(old.metric, selection.value if selection else None)}"
        )
    console.print(
        f"[green]exported[/]  {where}  ({manifest.experiment}/{manifest.version} "
        f"run {manifest.run_id}, {len(manifest.files)} files, {result.seconds:.1f}s)"
    )
    if manifest.code_commit:
        console.print(
            f"[yellow]code[/]      from the run's snapshot {manifest.code_commit[:7]}: "
            "files it used have changed since the run"
        )
    check = manifest.verification
    if check is not None:
        what = f"predicted {check.output}" if check.predicted else "no @exp.sample: not predicted"
        console.print(f"[green]verified[/]  in a clean process: {what}")
    if manifest.onnx is not None:
        console.print(
            f"[green]onnx[/]      {manifest.onnx.file}: max abs diff vs PyTorch "
            f"{manifest.onnx.max_abs_diff:.2g}"
        )
    console.print(
        f"[green]signed[/]    with this project's key {result.key} "
        f"(public key: {project.relative(result.public_key)})"
    )


def _metric_text(metric: str | None, value: float | None) -> str:
    if metric is None:
        return ""
    return f" ({metric} {value:.4g})" if value is not None else f" (no {metric})"


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=str),
    help="Where to look (default: Deployment/exports/).",
)
@click.option("--verify", is_flag=True, help="Also load each bundle in a clean process.")
@format_option("json")
def exports(directory: str | None, verify: bool, output_format: str) -> None:
    """List export bundles with their run, metrics and signature status.

    Status: signed (by this project's key), trusted (by a key in MLBOOK_TRUSTED_KEYS),
    foreign (by a key not trusted), unsigned, tampered (signature or a file does not
    match), invalid (unreadable manifest, or --verify failed). Every file of each
    bundle is checked against its manifest; with --verify each signed bundle is also
    loaded and run on its recorded sample in a clean process.

    Example:

    \b
        mlbook exports --format json
    """
    from mlbook.cli._render import console, print_json, print_table
    from mlbook.deploy.listing import list_exports
    from mlbook.project import Project

    found = list_exports(None if directory else Project.find(), directory, verify=verify)
    if output_format == "json":
        print_json([info.to_dict() for info in found])
        return
    if not found:
        console.print("no exports yet; create one with `mlbook export ID --version NAME`")
        return
    style = {
        "signed": "green",
        "trusted": "green",
        "foreign": "yellow",
        "unsigned": "yellow",
        "tampered": "red",
        "invalid": "red",
    }
    rows = []
    for info in found:
        metrics = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in list(info.metrics.items())[:3]
        )
        status = f"[{style[info.status]}]{info.status}[/]"
        rows.append(
            (info.name, info.run_id, metrics, info.created, "yes" if info.onnx else "", status)
        )
    columns = ["export", "run", "metrics", "created", "onnx", "status"]
    if console.is_terminal:
        print_table(columns, rows)
    else:  # plain, never truncated, for pipes and logs
        cells = [columns] + [[re.sub(r"\[/?[a-z ]*\]", "", str(v)) for v in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
        for row in cells:
            click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for info in found:
        if info.problem:
            console.print(f"[red]{info.name}[/]: {info.problem}")


@click.command()
@click.option(
    "--export",
    "destination",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=str),
    help="Write the public key (PEM) to FILE, for deployment machines.",
)
@format_option("json")
def key(destination: str | None, output_format: str) -> None:
    """Show the project's bundle-signing key; export its public half.

    Every export is signed with this key (made on first use in .mlbook/keys/,
    git-ignored; the private half never leaves the project). mlbook.load trusts
    it for bundles inside the project; elsewhere, list the exported public key
    in MLBOOK_TRUSTED_KEYS.

    Example:

    \b
        mlbook key --export project.pub
        MLBOOK_TRUSTED_KEYS=project.pub python serve_model.py
    """
    from mlbook.cli._render import console, print_json
    from mlbook.deploy.signing import export_public_key, project_key
    from mlbook.project import Project

    project = Project.find()
    signing = project_key(project.root)
    public = signing.public
    written = export_public_key(project.root, destination) if destination else None
    if output_format == "json":
        print_json(
            {
                "key": public.fingerprint,
                "public_key": public.source,
                "exported": str(written) if written else None,
            }
        )
        return
    console.print(f"key       {public.fingerprint}")
    console.print(f"public    {project.relative(public.source)}")
    console.print(f"private   {project.relative(signing.path)} (keep it in the project)")
    if written is not None:
        console.print(f"[green]exported[/]  the public key to {written}")


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


@click.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on.",
)
@click.option(
    "--max-mb",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 1024, min_open=True),
    callback=_finite,
    help="Largest request body in MB.",
)
def serve(path: str, host: str, port: int, max_mb: float) -> None:
    """Serve an export bundle over HTTP (POST /predict, GET /health, GET /metadata).

    Needs the serve extra (FastAPI + uvicorn). Binds loopback unless --host says
    otherwise. The bundle must be signed by a trusted key (see `mlbook key`).

    Example:

    \b
        mlbook serve Deployment/exports/E012-small --port 8000
    """
    from mlbook.deploy.serve import serve as run_server

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}, reachable from other machines", err=True)
    run_server(path, host=host, port=port, max_bytes=int(max_mb * 1024 * 1024))
