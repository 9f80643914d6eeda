"""Dataset commands: ``mlbook data validate | convert | stats | split`` (and the index's
``query | index | view | sql`` from :mod:`mlbook.cli.index`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlbook.cli._options import format_option, quiet_option

if TYPE_CHECKING:
    from mlbook.datasets.formats._common import ImageMode
    from mlbook.datasets.formats.yolo import YoloLayout
    from mlbook.datasets.problems import OnError

__all__ = ["data"]

_READ = ["mlbook", "coco", "voc", "yolo", "labelme", "csv"]
_WRITE = ["mlbook", "coco", "voc", "yolo", "labelme", "csv"]


@click.group()
def data() -> None:
    """Datasets: validate, convert, describe and split them.

    A dataset is a directory with dataset.json (name, classes and their ids) and
    records.jsonl (one image per line). See docs/datasets.md for the format.
    """


@data.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-files", is_flag=True, help="Do not check that image and mask files exist.")
@format_option("json")
@quiet_option
def validate(path: Path, no_files: bool, output_format: str, quiet: bool) -> None:
    """Check PATH and report every problem, one per line.

    PATH is a dataset directory or a records file. Problems read
    `file:line: field: what is wrong (value)`: bad JSON, wrong types, unknown classes,
    boxes with x1 >= x2 or outside the image, malformed segmentations, counts that
    disagree with the boxes, duplicate ids, paths that leave the dataset directory,
    missing image or mask files. Exit code 1 when anything is wrong.

    Example:

    \b
        mlbook data validate Datasets/digits --format json
    """
    from mlbook.cli._render import RichReporter, console, print_json
    from mlbook.datasets.validate import validate_dataset

    report = validate_dataset(path, check_files=not no_files, reporter=RichReporter(quiet=quiet))
    if output_format == "json":
        print_json(report.to_dict())
    else:
        for problem in report.problems:
            click.echo(str(problem))
        if report.ok:
            console.print(f"[green]valid[/]: {report.records} records, no problems")
        else:
            console.print(
                f"[red]{len(report.problems)} problem(s)[/] in {report.path} "
                f"({report.records} records parsed)"
            )
    if not report.ok:
        raise SystemExit(1)


@data.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--from",
    "src_format",
    type=click.Choice(_READ),
    help="Format of SRC (default: detected).",
)
@click.option(
    "--to",
    "dst_format",
    type=click.Choice(_WRITE),
    default="mlbook",
    show_default=True,
    help="Format of DST.",
)
@click.option("--masks", is_flag=True, help="COCO only: render a mask PNG per image.")
@click.option("--name", help="Dataset name (default: DST's directory name).")
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="Bad records: list them all and write nothing, or leave them out and say how many.",
)
@click.option(
    "--images",
    type=click.Choice(["link", "copy", "keep"]),
    default="link",
    show_default=True,
    help="How images come into DST: hard links (copies across filesystems), copies, "
    "or not at all (keep: annotations only).",
)
@click.option(
    "--yolo-layout",
    type=click.Choice(["ultralytics", "darknet"]),
    default="ultralytics",
    show_default=True,
    help="With --to yolo: data.yaml + images/ + labels/, or obj.names + obj.data.",
)
@click.option(
    "--label",
    metavar="COLUMN",
    help="With --from csv: SRC is a table of numbers; COLUMN is the label, the other "
    "numeric columns the features.",
)
@quiet_option
def convert(
    src: Path,
    dst: Path,
    src_format: str | None,
    dst_format: str,
    masks: bool,
    name: str | None,
    on_error: OnError,
    images: ImageMode,
    yolo_layout: YoloLayout,
    label: str | None,
    quiet: bool,
) -> None:
    """Convert the dataset SRC into DST.

    Reads and writes COCO instances, Pascal VOC, YOLO (Ultralytics and darknet),
    LabelMe, CSV and mlbook. Every bad record is listed (file, line or element,
    field); with --on-error skip the good ones are converted and the rest counted. The
    images come along into DST, so no record points outside it. DST is built beside
    its final place and moved in at the end: a failure, a full disk included, leaves
    nothing half-written.

    Example:

    \b
        mlbook data convert annotations/instances_val2017.json Datasets/coco --from coco
        mlbook data convert yolo/data.yaml Datasets/parts --from yolo
        mlbook data convert Datasets/parts parts_yolo --to yolo --images copy
        mlbook data convert iris.csv Datasets/iris --from csv --label species
    """
    from mlbook.cli._render import RichReporter, console
    from mlbook.datasets.convert import convert as run_convert
    from mlbook.datasets.problems import ErrorPolicy

    policy = ErrorPolicy(on_error)
    dataset = run_convert(
        src,
        dst,
        src_format=src_format,
        dst_format=dst_format,
        masks=masks,
        name=name,
        reporter=RichReporter(quiet=quiet),
        policy=policy,
        images=images,
        label=label,
        yolo_layout=yolo_layout,
    )
    boxes = sum(len(r.boxes) for r in dataset)
    console.print(
        f"converted {len(dataset)} records, {boxes} boxes, {len(dataset.classes)} classes "
        f"-> {dst} ({dst_format})"
    )
    if policy.problems:
        click.echo(
            f"warning: skipped {policy.skipped} bad record(s) of {src} "
            f"({len(policy.problems)} problem(s)):",
            err=True,
        )
        for problem in policy.problems[: policy.shown]:
            click.echo(f"  {problem}", err=True)
        if len(policy.problems) > policy.shown:
            click.echo(f"  ... and {len(policy.problems) - policy.shown} more", err=True)


@data.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--from",
    "src_format",
    type=click.Choice(_READ),
    help="Format of PATH (default: detected).",
)
@click.option("--plot", type=click.Path(path_type=Path), help="Also draw the statistics to a PNG.")
@click.option("--view", "view_name", metavar="NAME", help="Only the records of a saved view.")
@click.option("--query", "query_text", metavar="QUERY", help="Only the records matching QUERY.")
@format_option("json")
def stats(
    path: Path,
    src_format: str | None,
    plot: Path | None,
    view_name: str | None,
    query_text: str | None,
    output_format: str,
) -> None:
    """Describe PATH: images per split, boxes and labels per class, box sizes.

    Also box aspect ratios and images without annotations; PATH may be in any
    readable format. With --view or --query (mlbook datasets), only the records
    they select (through the dataset's index).

    Example:

    \b
        mlbook data stats Datasets/coco --plot coco.png
        mlbook data stats Datasets/coco --view small_cars --plot small_cars.png
    """
    from mlbook.cli._render import console, print_json, print_table
    from mlbook.datasets.convert import read_dataset
    from mlbook.datasets.stats import compute_stats, plot_stats

    if view_name is not None or query_text is not None:
        from mlbook.datasets.index import Query, open_view

        if view_name is not None and query_text is not None:
            raise click.UsageError("give --view or --query, not both")
        if view_name is not None:
            selected, _ = open_view(path, view_name)
        else:
            selected = Query(path, query_text)
        result = compute_stats(selected.dataset())
    else:
        result = compute_stats(read_dataset(path, src_format))
    if plot is not None:
        plot_stats(result, plot)
    if output_format == "json":
        print_json(result.to_dict())
        return
    console.print(
        f"[bold]{result.name}[/]: {result.records} images, {result.boxes} boxes "
        f"({result.crowd_boxes} crowd), {result.without_annotations} without annotations"
    )
    right = {"images": "right", "boxes": "right", "labels": "right", "count": "right"}
    print_table(("split", "images"), result.images_per_split.items(), "Images per split", right)
    rows = [
        (name, images, result.boxes_per_class.get(name, 0), result.labels_per_class.get(name, 0))
        for name, images in result.images_per_class.items()
    ]
    print_table(("class", "images", "boxes", "labels"), rows, "Per class", right)
    if result.boxes:
        print_table(("sqrt(area) px", "count"), result.box_sizes.items(), "Box sizes", right)
        print_table(("width/height", "count"), result.box_aspects.items(), "Box aspects", right)
    if plot is not None:
        console.print(f"plot: {plot}")


@data.command()
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--ratios",
    default="train=0.8,val=0.1,test=0.1",
    show_default=True,
    help="Split names and weights.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--stratify", is_flag=True, help="Keep each label's share in every split.")
@click.option("--keep-existing", is_flag=True, help="Only assign records without a split.")
def split(path: Path, ratios: str, seed: int, stratify: bool, keep_existing: bool) -> None:
    """Assign a split to each record of PATH, deterministically.

    The same records, ratios and seed always give the same splits. The dataset is
    rewritten in place (atomically).

    Example:

    \b
        mlbook data split Datasets/digits --ratios train=0.7,val=0.15,test=0.15 --stratify
    """
    from mlbook.cli._render import print_table
    from mlbook.datasets.dataset import open_dataset
    from mlbook.datasets.split import assign_splits, parse_ratios

    wanted = parse_ratios(ratios)
    dataset = assign_splits(
        open_dataset(path),
        wanted,
        seed=seed,
        stratify=stratify,
        keep_existing=keep_existing,
    )
    dataset.save(path)
    counts: dict[str, int] = {}
    for record in dataset:
        counts[record.split or "(none)"] = counts.get(record.split or "(none)", 0) + 1
    print_table(
        ("split", "images"),
        sorted(counts.items()),
        f"Splits of {dataset.name}",
        {"images": "right"},
    )
    click.echo(f"wrote the splits of {len(dataset)} records to {path}")
    for name in wanted:
        if not counts.get(name):
            click.echo(f"warning: split {name!r} got no records (too few to share out)", err=True)


for _command in __import__("mlbook.cli.lineage", fromlist=["COMMANDS"]).COMMANDS:
    data.add_command(_command)  # process, lineage, restore (cli/lineage.py)
for _command in __import__("mlbook.cli.index", fromlist=["COMMANDS"]).COMMANDS:
    data.add_command(_command)  # query, index, view, sql (cli/index.py)
