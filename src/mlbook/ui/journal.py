"""The journal page (with its three writes) and the exports page.

Every write goes through :mod:`mlbook.provenance.journal`, the code the CLI uses
(``mlbook note``, ``mlbook log --status``), so mlbook's owned blocks stay intact
and hand-written text is never lost. A conclusion is saved only if the text on
disk is still the one the page showed (its digest travels with the form); if
someone changed it meanwhile, the page says so and keeps the typed text.

A form posted by htmx gets the entry's fragment back; a plain form post is
redirected to the journal page (303), so the page works without JavaScript.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mlbook.errors import ProvenanceError
from mlbook.provenance import journal
from mlbook.ui.app import check_csrf, render, state_of

__all__ = ["add_journal_note", "change_status", "edit_conclusions", "exports_page", "journal_page"]

_MAX_TEXT = 100_000


def journal_page(request: Request) -> Response:
    """Every experiment: status, steps, conclusions (editable) and notes."""
    path = state_of(request).project.journal_path
    try:
        entries = journal.read_journal(path)
    except ProvenanceError as exc:
        return render(request, "journal.html", entries=[], problem=str(exc))
    return render(request, "journal.html", entries=entries, problem=None)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    values = {key: str(value) for key, value in form.items() if isinstance(value, str)}
    check_csrf(request, values.get("csrf"))
    return values


def _entry_response(request: Request, exp_id: str, status: int = 200, **extra: Any) -> Response:
    """The entry's fragment (htmx) or a redirect to it (plain form)."""
    if request.headers.get("hx-request") != "true":
        if status != 200:
            return render(request, "error.html", status=status, message=extra.get("error", ""))
        return RedirectResponse(f"/journal#{exp_id}", status_code=303)
    entries = journal.read_journal(state_of(request).project.journal_path)
    entry = next((e for e in entries if e.id == exp_id), None)
    if entry is None:
        return render(request, "error.html", status=404, message=f"no journal entry {exp_id}")
    context = {"error": None, "draft": None, "editing": False, "saved": None, **extra}
    return render(request, "_entry.html", status=status, entry=entry, **context)


async def edit_conclusions(request: Request) -> Response:
    """``POST conclusions=TEXT based_on=DIGEST``: replace the entry's conclusions."""
    return await run_in_threadpool(_save_conclusions, request, await _form(request))


def _save_conclusions(request: Request, form: dict[str, str]) -> Response:
    exp_id = request.path_params["exp_id"]
    text = form.get("conclusions", "")[:_MAX_TEXT]
    try:
        journal.set_conclusions(
            state_of(request).project.journal_path,
            exp_id,
            text,
            based_on=form.get("based_on") or None,
        )
    except ProvenanceError as exc:
        return _entry_response(request, exp_id, 409, error=str(exc), draft=text, editing=True)
    return _entry_response(request, exp_id, saved="conclusions saved")


async def add_journal_note(request: Request) -> Response:
    """``POST note=TEXT``: a dated note with the current commit, as ``mlbook note`` writes it."""
    return await run_in_threadpool(_add_note, request, await _form(request))


def _add_note(request: Request, form: dict[str, str]) -> Response:
    from mlbook.provenance.git import current_commit

    exp_id = request.path_params["exp_id"]
    project = state_of(request).project
    try:
        journal.add_note(
            project.journal_path,
            exp_id,
            form.get("note", "")[:_MAX_TEXT],
            current_commit(project.root),
        )
    except ProvenanceError as exc:
        return _entry_response(request, exp_id, 400, error=str(exc))
    return _entry_response(request, exp_id, saved="note added")


async def change_status(request: Request) -> Response:
    """``POST status=todo|in-progress|done``, as ``mlbook log ID --status``."""
    return await run_in_threadpool(_set_status, request, await _form(request))


def _set_status(request: Request, form: dict[str, str]) -> Response:
    exp_id = request.path_params["exp_id"]
    try:
        journal.set_status(state_of(request).project.journal_path, exp_id, form.get("status", ""))
    except ProvenanceError as exc:
        return _entry_response(request, exp_id, 400, error=str(exc))
    return _entry_response(request, exp_id, saved="status saved")


def exports_page(request: Request) -> Response:
    """The bundles in the exports directory with their runs, metrics and verification."""
    from mlbook.deploy.listing import list_exports

    project = state_of(request).project
    return render(request, "exports.html", exports=list_exports(project))
