"""Dataset index commands: ``mlbook data query | index | view | sql``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlbook.cli._options import quiet_option

if TYPE_CHECKING:
    from mlbook.datasets.index import IndexRow

__all__ = ["COMMANDS"]

_PATH = click.Path(path_type=Path, file_okay=False)


def _labels(row: IndexRow) -> str:
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in row.labels.items())


@click.command()
@click.argument("path", type=_PATH)
@click.argument("query", required=False, default="")
@click.option("--boxes", metavar="COND", help="Keep only the boxes that pass COND (box fields).")
@click.option("--view", "view_name", metavar="NAME", help="Query a saved view instead.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv", "ids"]),
    default="table",
    show_default=True,
    help="Output format (json: the whole records, read from records.jsonl).",
)
@click.option("--count", "count_only", is_flag=True, help="Print only how many records match.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Records shown (0: all).",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many first.")
@click.option(
    "--sql",
    "sql",
    metavar="STATEMENT",
    help="Run a read-only SQL statement on the index instead (tables: records, "
    "boxes, labels, record_labels).",
)
@click.option("--no-rebuild", is_flag=True, help="Fail instead of rebuilding a stale index.")
@quiet_option
def query(
    path: Path,
    query: str,
    boxes: str | None,
    view_name: str | None,
    output_format: str,
    count_only: bool,
    limit: int,
    offset: int,
    sql: str | None,
    no_rebuild: bool,
    quiet: bool,
) -> None:
    """Records of the dataset PATH that match QUERY (all records without one).

    QUERY is a condition over the records: fields (id, file, split, width, height,
    aspect, boxes, labels, min_box_side, max_box_side, attr.NAME), has(LABEL),
    count(LABEL) OP N and box(COND), joined with and, or, not and parentheses;
    OP is one of = != < <= > >= and ~ (glob). The index (.mlbook/index/) is built on
    first use and rebuilt when records.jsonl changes. See docs/dataset-index.md.

    Example:

    \b
        mlbook data query Datasets/coco 'split = train and count(car) >= 2
            and not has(person) and min_box_side < 32'
        mlbook data query Datasets/coco 'has(dog)' --boxes 'label = dog and area < 1024'
        mlbook data query Datasets/coco --sql 'SELECT split, count(*) FROM records GROUP BY split'
    """
    from mlbook.cli._render import RichReporter, console, print_table
    from mlbook.datasets.index import DatasetIndex, Query, open_view

    reporter = RichReporter(quiet=quiet)
    if view_name is not None:
        if query or boxes:
            raise click.UsageError("give either QUERY/--boxes or --view, not both")
        built, _ = open_view(path, view_name)
    else:
        built = Query(path, query, boxes)
    with DatasetIndex.open(path, rebuild=not no_rebuild, reporter=reporter) as index:
        if sql is not None:
            result = index.sql(sql)
            _print_result(result.columns, result.rows, output_format)
            return
        if count_only:
            click.echo(index.count(built))
            return
        shown = None if limit == 0 else limit
        if output_format == "ids":
            ids = index.ids(built, None if shown is None else shown + offset)[offset:]
            click.echo("\n".join(ids)) if ids else None
            return
        if output_format == "json":
            import msgspec

            found = index.records(built, None if shown is None else shown + offset)[offset:]
            sys.stdout.write(msgspec.json.encode([msgspec.to_builtins(r) for r in found]).decode())
            sys.stdout.write("\n")
            return
        rows = index.rows(built, shown, offset)
        if output_format == "csv":
            _csv(
                ["id", "file", "split", "width", "height", "boxes", "labels"],
                [(r.id, r.file, r.split, r.width, r.height, r.boxes, _labels(r)) for r in rows],
            )
            return
        total = index.count(built)
    print_table(
        ("id", "file", "split", "size", "boxes", "labels"),
        [
            (
                r.id,
                r.file,
                r.split,
                f"{r.width}x{r.height}" if r.width is not None else None,
                r.boxes,
                _labels(r),
            )
            for r in rows
        ],
        None,
        {"boxes": "right"},
    )
    more = f" (showing {offset + 1}-{offset + len(rows)})" if len(rows) < total else ""
    console.print(f"{total} record(s) match{more}")


def _print_result(columns: list[str], rows: list[tuple[Any, ...]], output_format: str) -> None:
    """SQL results as JSON objects, CSV, or a table."""
    from mlbook.cli._render import print_json, print_table

    if output_format == "json":
        print_json([dict(zip(columns, row, strict=True)) for row in rows])
    elif output_format == "csv":
        _csv(columns, rows)
    else:
        print_table(columns, rows)


def _csv(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)


@click.command()
@click.argument("path", type=_PATH)
@click.option("--status", is_flag=True, help="Only say whether the index is fresh.")
@quiet_option
def index(path: Path, status: bool, quiet: bool) -> None:
    """Build the index of the dataset PATH (when missing or stale), or show its state.

    The index is derived from records.jsonl and kept in the project's .mlbook/index/
    (git-ignored); deleting it is always safe.

    Example:

    \b
        mlbook data index Datasets/coco --status
    """
    from mlbook.cli._render import RichReporter
    from mlbook.datasets.index import ensure_index, index_state

    state = index_state(path)
    if not status:
        before = state.state
        state = ensure_index(path, reporter=RichReporter(quiet=quiet))
        if before != "fresh":
            click.echo(f"built {state.path} ({before} before)")
            return
    why = f" ({state.why})" if state.why else ""
    click.echo(f"{state.state}{why}: {state.path}")
    if not state.fresh and status:
        raise SystemExit(1)


@click.group()
def view() -> None:
    """Saved views: named queries kept with the dataset (views/NAME.json)."""


@view.command("save")
@click.argument("path", type=_PATH)
@click.argument("name")
@click.argument("query", default="")
@click.option("--boxes", metavar="COND", help="Keep only the boxes that pass COND.")
@quiet_option
def view_save(path: Path, name: str, query: str, boxes: str | None, quiet: bool) -> None:
    """Save QUERY as the view NAME of the dataset PATH (its ids and the records hash too).

    Experiments train on it with Experiment(dataset=..., view=NAME) or
    run.data("train", view=NAME); runs record the view, its query and hash.

    Example:

    \b
        mlbook data view save Datasets/coco small_cars 'has(car) and min_box_side < 32'
    """
    from mlbook.cli._render import RichReporter
    from mlbook.datasets.index import save_view
    from mlbook.datasets.index._views import view_path

    saved = save_view(path, name, query, boxes, reporter=RichReporter(quiet=quiet))
    click.echo(f"saved view {name!r}: {saved.count} record(s) -> {view_path(path, name)}")


@view.command("list")
@click.argument("path", type=_PATH)
def view_list(path: Path) -> None:
    """List the saved views of the dataset PATH.

    Example:

    \b
        mlbook data view list Datasets/coco
    """
    from mlbook.cli._render import print_table
    from mlbook.datasets.index import list_views, load_view

    views = [load_view(path, name) for name in list_views(path)]
    if not views:
        click.echo(f"no saved views in {path}")
        return
    print_table(
        ("view", "records", "query", "boxes", "saved"),
        [(v.name, v.count, v.query or "(all)", v.boxes, v.saved) for v in views],
        None,
        {"records": "right"},
    )


@view.command("show")
@click.argument("path", type=_PATH)
@click.argument("name")
def view_show(path: Path, name: str) -> None:
    """Show the view NAME and whether its records changed since it was saved.

    Example:

    \b
        mlbook data view show Datasets/coco small_cars
    """
    from mlbook.datasets.index import open_view

    _, use = open_view(path, name, warn=False)
    saved = use.view
    click.echo(f"view {saved.name}: {saved.query or '(all records)'}")
    if saved.boxes:
        click.echo(f"boxes: {saved.boxes}")
    click.echo(f"saved {saved.saved}: {saved.count} record(s), records {saved.records_hash[:12]}")
    if use.changed:
        click.echo(
            f"now: {len(use.ids)} record(s); {use.gone} id(s) gone, {use.added} added "
            f"(records {use.records_hash[:12]})"
        )
    else:
        click.echo("unchanged")


@click.command("sql")
@click.argument("path", type=_PATH)
@click.argument("statement")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def sql_command(path: Path, statement: str, output_format: str) -> None:
    """Ad-hoc SQL on the index of PATH with DuckDB (extra: mlbook[duckdb]), read-only.

    The index's tables are attached read-only as the schema `idx` and are also on the
    search path: records, boxes, labels, record_labels.

    Example:

    \b
        mlbook data sql Datasets/coco 'SELECT split, avg(nboxes) FROM records GROUP BY split'
    """
    from mlbook.datasets.index.duck import duckdb_sql

    result = duckdb_sql(path, statement)
    _print_result(result.columns, result.rows, output_format)


COMMANDS = (query, index, view, sql_command)
