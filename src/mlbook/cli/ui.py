"""``mlbook ui``: the web UI over the run store, the journal and the exports."""

from __future__ import annotations

import click

__all__ = ["ui"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8765, show_default=True, type=int, help="Port to listen on (0: any free)."
)
def ui(host: str, port: int) -> None:
    """Browse runs, curves, comparisons, the journal and exports in a web browser.

    Reads the run store read-only (a running `mlbook run` is never blocked) and
    binds 127.0.0.1 unless --host says otherwise. Needs the ui extra
    (`pip install 'mlbook[ui]'`). Stop it with Ctrl-C.

    Example:

    \b
        mlbook ui
        mlbook ui --port 9000
    """
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from mlbook.errors import ProjectError

        raise ProjectError(
            f"mlbook ui needs the ui extra ({exc.name} is missing); "
            "install it with `pip install 'mlbook[ui]'`"
        ) from exc
    from mlbook.project import Project
    from mlbook.ui.server import serve

    project = Project.find()
    if host not in _LOOPBACK and not host.startswith("127."):
        click.echo(
            f"warning: listening on {host}: anyone who can reach this machine can read the runs"
            " and edit the journal",
            err=True,
        )

    def announce(url: str) -> None:
        where = "this machine only" if host in _LOOPBACK or host.startswith("127.") else host
        click.echo(f"mlbook ui for {project.root} on {url} ({where}; Ctrl-C stops it)")

    try:
        serve(project, host=host, port=port, announce=announce)
    except KeyboardInterrupt:  # uvicorn stops cleanly, then passes Ctrl-C on
        click.echo("mlbook ui stopped")
