"""YOLO (Darknet) text labels, both ways: ``class cx cy w h`` normalised to the image size.

Read: ``obj.names`` (or ``classes.txt``) gives the classes; ``obj.data`` names the split
lists (``train = data/train.txt``; the ``data/`` prefix means the dataset folder); each
image's labels are in the ``.txt`` beside it or in ``obj_<split>_data/``. Without
``obj.data``, every image under the folder with a ``.txt`` beside it is read. Image sizes
come from the image headers (Pillow).

Write: ``obj.names``, ``obj.data``, ``<split>.txt`` lists and ``obj_<split>_data/``
with each image (a hard link or a copy) beside its ``<stem>.txt`` labels; records
need ``width`` and ``height``. Every path read from a list must stay inside the folder.
"""

from __future__ import annotations

import math
from pathlib import Path

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import IMAGE_SUFFIXES, Output, image_size
from mlbook.datasets.metadata import Box, ClassInfo, DatasetInfo, Record
from mlbook.datasets.problems import (
    ErrorPolicy,
    decode_text,
    name_problem,
    path_problem,
    read_bytes,
    short,
)
from mlbook.datasets.validate import box_problems
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["FILE_SUFFIX", "NAME", "detect", "read", "write"]

NAME = "yolo"
FILE_SUFFIX = None
_NAMES_FILES = ("obj.names", "classes.txt", "classes.names")


def detect(path: Path) -> bool:
    """True for a folder with ``obj.names``/``classes.txt`` (and no VOC/COCO layout)."""
    return path.is_dir() and any((path / n).is_file() for n in _NAMES_FILES)


def _text(path: Path, what: str) -> str:
    """A UTF-8 text file. Raises DatasetError (unreadable) or RecordError (not UTF-8)."""
    return decode_text(read_bytes(path, what), path)


def _names(path: Path) -> list[str]:
    for candidate in _NAMES_FILES:
        if (path / candidate).is_file():
            text = _text(path / candidate, "YOLO class list")
            return [line.strip() for line in text.splitlines() if line.strip()]
    raise DatasetError(f"{path}: no obj.names or classes.txt listing the YOLO classes")


#: An image to read: its path relative to the dataset folder, and where it was listed.
_Entry = tuple[str, Path | None, int | None]
#: A problem of one image's record: file, line, what.
_Problem = tuple[Path, int | None, str]


def _lists(path: Path, policy: ErrorPolicy) -> dict[str, list[_Entry]]:
    """split -> images, from obj.data and the list files it names."""
    data_file = path / "obj.data"
    if not data_file.is_file():
        return {}
    lists: dict[str, list[_Entry]] = {}
    for number, line in enumerate(_text(data_file, "YOLO obj.data").splitlines(), start=1):
        key, _, value = (part.strip() for part in line.partition("="))
        if key in ("classes", "names", "backup", "eval") or not value:
            continue
        relative = value.removeprefix("data/")
        problem = path_problem(relative)
        if problem is not None:
            policy.fail(data_file, number, key, problem)
            continue
        list_file = path / relative
        if not list_file.is_file():
            continue
        split = {"valid": "val"}.get(key, key)
        images: list[_Entry] = []
        try:
            text = _text(list_file, "YOLO image list")
        except RecordError as exc:
            policy.fail_error(exc)
            continue
        for entry_number, entry in enumerate(text.splitlines(), start=1):
            entry = entry.strip()
            if entry:
                images.append((entry.removeprefix("data/"), list_file, entry_number))
        lists[split] = images
    return lists


def _label_file(root: Path, image: str, split: str | None) -> Path:
    beside = (root / image).with_suffix(".txt")
    if beside.is_file() or split is None:
        return beside
    return root / f"obj_{split}_data" / f"{Path(image).stem}.txt"


def _snap(value: float, limit: int) -> float:
    """Undo the rounding of 6-decimal normalised values at the image edges."""
    if -0.01 < value < 0:
        return 0.0
    if limit < value < limit + 0.01:
        return float(limit)
    return value


def _read_labels(
    label_file: Path, names: list[str], width: int, height: int, problems: list[_Problem]
) -> list[Box]:
    boxes: list[Box] = []
    if not label_file.is_file():
        return boxes
    try:
        text = _text(label_file, "YOLO label file")
    except RecordError as exc:
        problems.append((label_file, exc.line, exc.problem))
        return boxes
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            problems.append((label_file, number, f"expected `class cx cy w h`, got {short(line)}"))
            continue
        try:
            index = int(parts[0])
            cx, cy, w, h = (float(p) for p in parts[1:])
        except ValueError:
            problems.append((label_file, number, f"not numbers: {short(line)}"))
            continue
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            problems.append((label_file, number, f"not finite numbers: {short(line)}"))
            continue
        if not 0 <= index < len(names):
            top = f"0..{len(names) - 1}" if names else "it is empty"
            problems.append((label_file, number, f"class {index} is not in obj.names ({top})"))
            continue
        x1, y1 = _snap((cx - w / 2) * width, width), _snap((cy - h / 2) * height, height)
        x2, y2 = _snap((cx + w / 2) * width, width), _snap((cy + h / 2) * height, height)
        found = box_problems(x1, y1, x2, y2, width, height)
        if found:
            problems.extend((label_file, number, problem) for _, problem in found)
            continue
        boxes.append(Box(name=names[index], x1=x1, y1=y1, x2=x2, y2=y2))
    return boxes


def read(
    path: Path, reporter: Reporter | None = None, policy: ErrorPolicy | None = None
) -> Dataset:
    """Read a YOLO folder; sizes come from the images, so they must be present."""
    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    names = _names(path)
    lists = _lists(path, policy)
    if not lists and not policy.fatal:
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        beside = [p for p in found if p.with_suffix(".txt").is_file()]
        lists = {"": [(p.relative_to(path).as_posix(), None, None) for p in beside]}
    total = sum(len(images) for images in lists.values())
    records: list[Record] = []
    with reporter.task("Reading YOLO", total=total) as task:
        for split, images in lists.items():
            for image, list_file, number in images:
                task.advance()
                record = _record(path, image, split, names, list_file, number, policy)
                if record is not None:
                    records.append(record)
    policy.finish(path)
    info = DatasetInfo(
        name=path.resolve().name,
        source="YOLO",
        classes=[ClassInfo(id=i, name=n) for i, n in enumerate(names)],
    )
    return Dataset(info, records, path)


def _record(
    root: Path,
    image: str,
    split: str,
    names: list[str],
    list_file: Path | None,
    number: int | None,
    policy: ErrorPolicy,
) -> Record | None:
    problem = path_problem(image)
    if problem is not None:
        policy.reject(list_file or root, number, [("", problem)])
        return None
    size = image_size(root / image)
    if size is None:
        where = list_file or root / image
        message = f"cannot read the size of {image!r}, which YOLO labels need"
        policy.reject(where, number, [("", message)])
        return None
    problems: list[_Problem] = []
    boxes = _read_labels(_label_file(root, image, split or None), names, *size, problems)
    if problems:
        for file, line, message in problems:
            policy.reject(file, line, [("", message)], key=("yolo", image))
        return None
    return Record(
        id=Path(image).stem,
        file=image,
        width=size[0],
        height=size[1],
        boxes=boxes,
        split=split or None,
    )


def _line(index: int, box: Box, width: int, height: int) -> str:
    cx = (box.x1 + box.x2) / 2 / width
    cy = (box.y1 + box.y2) / 2 / height
    w = (box.x2 - box.x1) / width
    h = (box.y2 - box.y1) / height
    return f"{index} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"


def write(dataset: Dataset, out: Output, reporter: Reporter | None = None) -> None:
    """Write the darknet layout: ``obj.names``, ``obj.data``, ``<split>.txt`` lists, and
    ``obj_<split>_data/`` holding each image (linked or copied) with its label file.

    Raises:
        BadRecordsError: records without ``width``/``height``, with classes not in the
        dataset, or two images with one name in a split.
    """
    reporter = reporter or NullReporter()
    names = dataset.classes
    index_of = {name: i for i, name in enumerate(names)}
    records = list(dataset)
    policy = ErrorPolicy()
    owners: dict[str, str] = {}
    for number, record in enumerate(records, start=1):
        found: list[tuple[str, str]] = []
        if record.width is None or record.height is None:
            found.append(("width", "YOLO needs the image size (width and height)"))
        found += [
            (f"boxes[{i}].name", f"class {box.name!r} is not in the dataset's classes")
            for i, box in enumerate(record.boxes)
            if box.name not in index_of
        ]
        split = record.split or "train"
        problem = name_problem(split)
        if problem is not None:
            found.append(("split", f"{problem} (YOLO names folders after it)"))
        label = f"obj_{split}_data/{Path(record.file).stem}"
        owner = owners.setdefault(label, record.id)
        if owner != record.id:
            found.append(("file", f"{label}.txt is also the label file of record {owner!r}"))
        policy.reject(f"{out.target} (YOLO)", None, found, number)
    policy.finish(out.target)
    lists: dict[str, list[str]] = {}
    with reporter.task("Writing YOLO", total=len(records)) as task:
        for record in records:
            width, height = record.width or 1, record.height or 1
            split = record.split or "train"
            folder = f"obj_{split}_data"
            image = Path(record.file).name
            lines = [_line(index_of[box.name], box, width, height) for box in record.boxes]
            out.write(f"{folder}/{Path(image).stem}.txt", "".join(lines).encode())
            out.place(dataset.root, record.file, f"{folder}/{image}")
            lists.setdefault(split, []).append(f"data/{folder}/{image}")
            task.advance()
    out.write("obj.names", "".join(f"{n}\n" for n in names).encode())
    data = [f"classes = {len(names)}\n", "names = data/obj.names\n"]
    for split, images in lists.items():
        key = {"val": "valid"}.get(split, split)
        data.append(f"{key} = data/{split}.txt\n")
        out.write(f"{split}.txt", "".join(f"{i}\n" for i in images).encode())
    data.append("backup = backup/\n")
    out.write("obj.data", "".join(data).encode())
