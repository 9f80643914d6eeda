"""Run the UI: bind a socket (loopback by default), print the address, serve with uvicorn."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlbook.errors import ProjectError

if TYPE_CHECKING:
    from mlbook.project import Project

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        ProjectError: the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio then sets TCP_NODELAY on each connection (without it, a
    # small response waits ~40 ms for the client's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = "; pick another with --port (0: any free port)" if port else ""
        raise ProjectError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    project: Project,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the UI of ``project`` until interrupted.

    Args:
        project: the project whose runs, journal and exports are shown.
        host: the address to bind; a loopback address keeps the UI on this machine.
        port: the port (0: a free one).
        announce: called with the URL once the socket listens.
    """
    import uvicorn

    from mlbook.ui.app import LOOPBACK_HOSTS, create_app

    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    loopback = host in LOOPBACK_HOSTS or host.startswith("127.")
    app = create_app(project, allowed_hosts=(*LOOPBACK_HOSTS, host) if loopback else None)
    announce(f"http://{shown}:{actual}/")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
