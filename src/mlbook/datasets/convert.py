"""Read any supported format, write any supported format: ``convert`` and its halves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import ImageMode, Output
from mlbook.datasets.problems import ErrorPolicy
from mlbook.datasets.registry import detect_format, get_format
from mlbook.errors import DatasetError
from mlbook.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from mlbook.datasets.formats.yolo import YoloLayout

__all__ = ["NOTHING_WRITTEN", "OutputFactory", "convert", "read_dataset", "write_dataset"]

#: Makes the :class:`Output` a writer writes through; tests pass a failing subclass.
OutputFactory = Callable[..., Output]

#: The hint a failed conversion gives (``ErrorPolicy.hint``).
NOTHING_WRITTEN = "nothing was written; fix them, or convert the good records with --on-error skip"


def read_dataset(
    path: Path | str,
    fmt: str | None = None,
    reporter: Reporter | None = None,
    policy: ErrorPolicy | None = None,
    *,
    label: str | None = None,
) -> Dataset:
    """Read the dataset at ``path`` in format ``fmt`` (detected when ``None``).

    Args:
        policy: what to do with bad records (default: fail, listing every problem);
            under ``ErrorPolicy("skip")`` they are left out and counted.
        label: CSV only: read a table of numbers, one record per row, this column
            being the label and the other numeric columns the features.

    Raises:
        DatasetError: unknown or undetectable format, an unreadable file, ``label``
        with another format; BadRecordsError: the bad records, when the policy fails.
    """
    source = Path(path)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or directory")
    name = fmt or detect_format(source)
    module: Any = get_format(name)
    options: dict[str, Any] = {}
    if label is not None:
        if name != "csv":
            raise DatasetError(
                f"--label reads a CSV table of numbers; {source} is {name} (use --from csv)"
            )
        options["label"] = label
    dataset: Dataset = module.read(
        source, reporter=reporter or NullReporter(), policy=policy or ErrorPolicy(), **options
    )
    return dataset


def write_dataset(
    dataset: Dataset,
    path: Path | str,
    fmt: str = "mlbook",
    reporter: Reporter | None = None,
    images: ImageMode = "link",
    output: OutputFactory = Output,
    *,
    yolo_layout: YoloLayout = "ultralytics",
) -> Path:
    """Write ``dataset`` to ``path`` in format ``fmt``, all or nothing.

    Every file goes to a staging directory first and is moved into place only when
    the writer has finished. Every writer brings the images along into ``path`` as
    hard links (``images="copy"``: copies; ``"keep"``: annotations only), so that
    no record points outside it.

    Args:
        output: makes the :class:`~mlbook.datasets.formats._common.Output` (a seam for
            tests that need a write to fail).
        yolo_layout: ``"ultralytics"`` (``data.yaml``, ``images/<split>/``,
            ``labels/<split>/``) or ``"darknet"`` (``obj.names``, ``obj.data``).

    Raises:
        DatasetError: unknown format, one that cannot be written, a failed write (the
        target is left as it was); BadRecordsError: records the format cannot hold.
    """
    return _write(
        dataset, Path(path), fmt, reporter or NullReporter(), images, output, False, yolo_layout
    )


def _write(
    dataset: Dataset,
    target: Path,
    fmt: str,
    reporter: Reporter,
    images: ImageMode,
    output: OutputFactory,
    masks: bool = False,
    yolo_layout: YoloLayout = "ultralytics",
) -> Path:
    module: Any = get_format(fmt, for_writing=True)
    options: dict[str, Any] = {}
    if fmt == "yolo":
        options["layout"] = yolo_layout
    suffix = module.FILE_SUFFIX
    single = suffix is not None and target.suffix.lower() == suffix
    with output(target, single_file=single, images=images) as out:
        out.embedded.update(dataset.embedded)
        if masks:
            from mlbook.datasets.formats.coco import render_masks

            render_masks(dataset, out, reporter=reporter)
        module.write(dataset, out, reporter=reporter, **options)
    if fmt == "mlbook":
        dataset.root = target
    return target


def convert(
    src: Path | str,
    dst: Path | str,
    src_format: str | None = None,
    dst_format: str = "mlbook",
    masks: bool = False,
    name: str | None = None,
    reporter: Reporter | None = None,
    policy: ErrorPolicy | None = None,
    images: ImageMode = "link",
    output: OutputFactory = Output,
    *,
    label: str | None = None,
    yolo_layout: YoloLayout = "ultralytics",
) -> Dataset:
    """Convert the dataset at ``src`` into ``dst``.

    Args:
        src: a file or directory in ``src_format`` (detected when ``None``).
        dst: the output; for ``mlbook``, the dataset directory.
        dst_format: ``mlbook`` (default), ``coco``, ``voc``, ``yolo`` or ``csv``.
        masks: COCO to mlbook only: render one mask PNG per image from the
            segmentations into ``dst/masks/`` and set each record's ``mask``.
        name: the dataset name (default: the output directory's name).
        policy: what to do with bad records: ``ErrorPolicy()`` (default) lists them all
            and writes nothing; ``ErrorPolicy("skip")`` writes the good ones and keeps
            what it left out in ``policy.problems`` and ``policy.skipped``.
        images: ``"link"`` (default: hard links, copies where the filesystem cannot
            link), ``"copy"``, or ``"keep"`` (annotations only): how the images come
            into ``dst``.
        output: see :func:`write_dataset`.
        label: see :func:`read_dataset` (a CSV table of numbers).
        yolo_layout: see :func:`write_dataset`.

    Returns:
        The converted dataset (for ``mlbook`` output, opened at ``dst``).

    Raises:
        DatasetError: unknown formats, a failed write (nothing half-written);
        BadRecordsError: the bad records, when the policy fails.
    """
    import msgspec

    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    if not policy.hint:
        policy.hint = NOTHING_WRITTEN
    source_name = src_format or detect_format(Path(src))
    if masks and (source_name != "coco" or dst_format != "mlbook"):
        raise DatasetError("--masks works for COCO to mlbook conversions only")
    target = Path(dst)
    with reporter.task(f"Converting {source_name} to {dst_format}", total=None):
        dataset = read_dataset(src, source_name, reporter=reporter, policy=policy, label=label)
        if dst_format == "mlbook":
            new_name = name or target.resolve().name
            dataset.info = msgspec.structs.replace(dataset.info, name=new_name)
        _write(dataset, target, dst_format, reporter, images, output, masks, yolo_layout)
    return dataset
