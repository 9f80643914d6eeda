"""Saved views: a named query kept with the dataset (``views/<name>.json``).

A view stores its query text, its box filter, the ids that matched and the hash of
``records.jsonl`` when it was saved. Opening it runs the query again on the records
as they are now; when they changed since the view was saved, :class:`ViewUse` says how
many ids are gone and how many were added (a warning, not an error). What a run
records of a view (:meth:`ViewUse.to_record`) is its name, query, the records hash and
a hash of the ids it trained on.
"""

from __future__ import annotations

import hashlib
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mlbook._fs import atomic_write_bytes
from mlbook.datasets.index._build import ensure_index
from mlbook.datasets.index._query import Query
from mlbook.errors import MlbookWarning, QueryError

if TYPE_CHECKING:
    from mlbook.datasets.dataset import Dataset
    from mlbook.progress import Reporter

__all__ = [
    "VIEWS_DIR",
    "SavedView",
    "ViewUse",
    "ids_hash",
    "list_views",
    "load_view",
    "open_view",
    "save_view",
    "view_path",
]

VIEWS_DIR = "views"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class SavedView(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """The content of ``views/<name>.json``."""

    name: str
    query: str
    boxes: str | None = None
    records_hash: str
    count: int
    saved: str
    ids: list[str]


_DECODER = msgspec.json.Decoder(SavedView)


def ids_hash(ids: list[str]) -> str:
    """sha256 of the ids, one per line, in order (what a run records of its selection)."""
    digest = hashlib.sha256()
    for item in ids:
        digest.update(item.encode("utf-8") + b"\n")
    return digest.hexdigest()


def view_path(root: Path | str, name: str) -> Path:
    """``<root>/views/<name>.json``, the name checked so the file stays in ``views/``.

    Raises:
        QueryError: a name with other characters than letters, digits, ``_ . -``.
    """
    if not _NAME.match(name):
        raise QueryError(
            f"view name {name!r}: use letters, digits, '_', '.' and '-' (starting with a "
            "letter or digit, at most 100 characters)"
        )
    return Path(root) / VIEWS_DIR / f"{name}.json"


def save_view(
    root: Path | str,
    name: str,
    query: str | Query,
    boxes: str | None = None,
    *,
    reporter: Reporter | None = None,
) -> SavedView:
    """Run ``query`` (text or a :class:`Query`) and save it as the view ``name``
    (replacing one of that name).

    Raises:
        QueryError: a bad name or query.
    """
    root = Path(root)
    path = view_path(root, name)
    built = query if isinstance(query, Query) else Query(root, query, boxes, reporter=reporter)
    state = ensure_index(root, reporter=reporter)
    with built.index() as index:
        ids = index.ids(built)
    view = SavedView(
        name=name,
        query=built.text,
        boxes=built.boxes_text,
        records_hash=state.hash or "",
        count=len(ids),
        saved=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        ids=ids,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, msgspec.json.format(msgspec.json.encode(view)) + b"\n")
    return view


def load_view(root: Path | str, name: str) -> SavedView:
    """Read ``views/<name>.json``.

    Raises:
        QueryError: no such view (the message lists the dataset's views), or a file
        that is not a view.
    """
    path = view_path(root, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        have = list_views(root)
        hint = f"; views: {', '.join(have)}" if have else "; save one with `mlbook data view save`"
        raise QueryError(f"{Path(root)}: no view {name!r}{hint}") from None
    except OSError as exc:
        raise QueryError(f"{path}: cannot read the view: {exc.strerror}") from exc
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise QueryError(f"{path}: not a saved view ({exc}); save it again") from exc


def list_views(root: Path | str) -> list[str]:
    """Names of the saved views of a dataset, sorted."""
    folder = Path(root) / VIEWS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if _NAME.match(p.stem))


@dataclass(frozen=True)
class ViewUse:
    """A view opened now: the saved view, the ids it matches now, what changed."""

    view: SavedView
    root: Path
    records_hash: str
    ids: list[str]
    gone: int
    added: int

    @property
    def changed(self) -> bool:
        """True when the ids differ from those saved."""
        return bool(self.gone or self.added)

    def to_record(self) -> dict[str, Any]:
        """What a run records of the view it trained on."""
        return {
            "view": self.view.name,
            "query": self.view.query,
            "boxes": self.view.boxes,
            "records_hash": self.records_hash,
            "ids_hash": ids_hash(self.ids),
            "count": len(self.ids),
        }

    def warning(self) -> str | None:
        """The warning line when the view's records changed since it was saved."""
        if not self.changed:
            return None
        return (
            f"view {self.view.name!r} of {self.root}: the records changed since it was saved "
            f"({self.gone} id(s) gone, {self.added} added; {len(self.ids)} now); "
            f"save it again to accept: mlbook data view save {self.root} {self.view.name} "
            "'<query>'"
        )


def open_view(
    root: Path | str, name: str, *, source: Dataset | None = None, warn: bool = True
) -> tuple[Query, ViewUse]:
    """The query of view ``name`` and how it stands against the records now; warns
    (:class:`~mlbook.errors.MlbookWarning`) when ids are gone or added."""
    root = Path(root)
    view = load_view(root, name)
    query = Query(root, view.query, view.boxes, source=source)
    state = ensure_index(root)
    if state.hash == view.records_hash:
        ids = view.ids
        gone = added = 0
    else:
        with query.index() as index:
            ids = index.ids(query)
        before, now = set(view.ids), set(ids)
        gone, added = len(before - now), len(now - before)
    use = ViewUse(view, root, state.hash or "", ids, gone, added)
    message = use.warning()
    if warn and message:
        warnings.warn(message, MlbookWarning, stacklevel=2)
    return query, use
