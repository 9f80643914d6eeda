"""The web app of ``mlbook ui``: routes, templates, and the guards every request passes.

Guards:

- the ``Host`` header must name this machine (``127.0.0.1``, ``localhost``,
  ``[::1]``) unless the server was bound to another address, so a web page
  elsewhere cannot read the runs through DNS rebinding;
- every response forbids framing and scripts from elsewhere (a
  Content-Security-Policy without inline scripts), and Jinja escapes all text;
- a write (journal edits) needs the per-session token of the page (CSRF): a
  random session cookie (``SameSite=Strict``) and an HMAC of it in the form or
  the ``X-CSRF-Token`` header;
- the store is only ever read, through :func:`mlbook.experiments.query.reading`.

A library error (a bad filter, an unknown run) renders as a page with its one
line and status 400 or 404, never a 500.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from mlbook._version import __version__
from mlbook.errors import MlbookError
from mlbook.experiments import query
from mlbook.experiments.query import TableChoices
from mlbook.experiments.store import STORE_FILE
from mlbook.project import Project
from mlbook.provenance.journal import digest

__all__ = ["LOOPBACK_HOSTS", "UiState", "create_app", "render"]

HERE = Path(__file__).resolve().parent
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SESSION_COOKIE = "mlbook_session"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass
class UiState:
    """What every request needs: the project, the CSRF secret, the template environment."""

    project: Project
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    templates: jinja2.Environment = field(init=False)
    _choices: tuple[tuple[tuple[int, int], ...], TableChoices] | None = None

    def __post_init__(self) -> None:
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            number=format_number, when=format_time, seconds=format_seconds, short=short_id
        )
        self.templates.globals["digest"] = digest
        for name in self.templates.list_templates():  # compiled now, not on a first request
            self.templates.get_template(name)

    def table_choices(self) -> TableChoices:
        """The store's param, metric and series names, cached until the store changes.

        The key is the size and mtime of the store file and its write-ahead log, so a
        running run (which writes the log) is seen at once.
        """
        store = self.project.state_dir / STORE_FILE
        key = tuple(
            (stat.st_mtime_ns, stat.st_size)
            for stat in (_stat(store), _stat(store.with_name(store.name + "-wal")))
        )
        if self._choices is None or self._choices[0] != key:
            self._choices = (key, query.table_choices(self.project))
        return self._choices[1]

    def csrf_token(self, session: str) -> str:
        """The form token of a session."""
        return hmac.new(self.secret, session.encode(), sha256).hexdigest()


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        return os.stat_result((0,) * 10)


def state_of(request: Request) -> UiState:
    """The app's :class:`UiState`."""
    state: UiState = request.app.state.ui
    return state


def session_of(request: Request) -> str:
    """The session ID (the cookie, or a new one that :func:`render` will set)."""
    session = request.cookies.get(SESSION_COOKIE, "")
    if len(session) != 43:  # token_urlsafe(32)
        session = request.scope.setdefault("mlbook.new_session", secrets.token_urlsafe(32))
    return session


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse a write without the page's token (403)."""
    session = request.cookies.get(SESSION_COOKIE, "")
    token = sent or request.headers.get("x-csrf-token", "")
    expected = state_of(request).csrf_token(session) if session else ""
    if not session or not hmac.compare_digest(token, expected):
        raise HTTPException(
            403,
            "this form has expired (the page is older than the server, or cookies are off);"
            " reload the page and try again",
        )


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the common context (project, CSRF token, path)."""
    ui = state_of(request)
    session = session_of(request)
    html = ui.templates.get_template(template).render(
        request=request,
        project=ui.project,
        version=__version__,
        csrf=ui.csrf_token(session),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if session != request.cookies.get(SESSION_COOKIE):
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict")
    return response


# ---------------------------------------------------------------- formatting filters


def format_number(value: Any) -> str:
    """4 significant digits for floats, ints as they are, ``-`` for nothing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    return str(value)


def format_time(value: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS``."""
    if value is None:
        return "-"
    return _dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def format_seconds(value: float | None) -> str:
    """A duration: ``850 ms``, ``12.3 s``, ``4m 05s``, ``2h 03m``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def short_id(value: str) -> str:
    """A run ID without its date part (``20261125-110407-8b3a63`` -> ``110407-8b3a63``)."""
    return value[9:] if len(value) > 16 and value[8] == "-" else value


# ---------------------------------------------------------------- middleware and errors


def _host_name(host: str) -> str:
    """The name in a ``Host`` header: ``[::1]:8000`` -> ``::1``, ``a:80`` -> ``a``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0]


class HostGuard:
    """Answer 400 to a request whose ``Host`` is not one of ``allowed`` (None: any)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed is None else {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = _host_name(host)
            if name not in self.allowed:
                response = Response(
                    f"host {host!r} is not allowed: open the UI as http://127.0.0.1 or "
                    "localhost, or start it with --host",
                    status_code=400,
                    media_type="text/plain",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Add the Content-Security-Policy and friends to every response, and ``Server-Timing``
    (milliseconds from the request to the response's headers; the benchmark reads it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                names = {name.lower() for name, _ in headers}
                took = (time.perf_counter() - started) * 1000
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"server-timing", f"app;dur={took:.1f}".encode()),
                ]
                headers.extend(item for item in extra if item[0] not in names)
            await send(message)

        await self.app(scope, receive, sending)


async def _library_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MlbookError)
    status = 404 if str(exc).startswith("no run ") else 400
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=status)
    return render(request, "error.html", status=status, message=str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return render(request, "error.html", status=exc.status_code, message=exc.detail)


Handler = Callable[[Request], Awaitable[Response] | Response]


def create_app(
    project: Project | Path | str,
    *,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
) -> ASGIApp:
    """The ASGI app of ``mlbook ui`` for ``project``.

    Args:
        project: the project (or its root directory).
        allowed_hosts: host names the ``Host`` header may carry (``None``: any).
    """
    from mlbook.ui import api, journal, pages

    if not isinstance(project, Project):
        project = Project.find(project)
    routes = [
        Route("/", pages.runs_page),
        Route("/runs/{run_id}", pages.run_page),
        Route("/runs/{run_id}/files/{path:path}", pages.run_file),
        Route("/curves", pages.curves_page),
        Route("/compare", pages.compare_page),
        Route("/parallel", pages.parallel_page),
        Route("/journal", journal.journal_page),
        Route("/journal/{exp_id}/conclusions", journal.edit_conclusions, methods=["POST"]),
        Route("/journal/{exp_id}/notes", journal.add_journal_note, methods=["POST"]),
        Route("/journal/{exp_id}/status", journal.change_status, methods=["POST"]),
        Route("/exports", journal.exports_page),
        Route("/api/curves", api.curves_data),
        Route("/api/parallel", api.parallel_data),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={MlbookError: _library_error, HTTPException: _http_error},
    )
    app.state.ui = UiState(project)
    return HostGuard(SecurityHeaders(app), allowed_hosts)
