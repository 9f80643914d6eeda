"""YOLO (Darknet) text labels, both ways: ``class cx cy w h`` normalised to the image size.

Read: ``obj.names`` (or ``classes.txt``) gives the classes; ``obj.data`` names the split
lists (``train = data/train.txt``; the ``data/`` prefix means the dataset folder); each
image's labels are in the ``.txt`` beside it or in ``obj_<split>_data/``. Without
``obj.data``, every image under the folder with a ``.txt`` beside it is read. Image sizes
come from the image headers (Pillow).

Write: ``obj.names``, ``obj.data``, ``<split>.txt`` lists and
``obj_<split>_data/<stem>.txt`` labels; records need ``width`` and ``height``.
"""

from __future__ import annotations

from pathlib import Path

from mlbook._fs import atomic_write_bytes
from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import IMAGE_SUFFIXES, image_size, relative_to, staged_dir
from mlbook.datasets.metadata import Box, ClassInfo, DatasetInfo, Record
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["NAME", "detect", "read", "write"]

NAME = "yolo"
_NAMES_FILES = ("obj.names", "classes.txt", "classes.names")


def detect(path: Path) -> bool:
    """True for a folder with ``obj.names``/``classes.txt`` (and no VOC/COCO layout)."""
    return path.is_dir() and any((path / n).is_file() for n in _NAMES_FILES)


def _names(path: Path) -> list[str]:
    for candidate in _NAMES_FILES:
        if (path / candidate).is_file():
            text = (path / candidate).read_text(encoding="utf-8")
            return [line.strip() for line in text.splitlines() if line.strip()]
    raise DatasetError(f"{path}: no obj.names or classes.txt listing the YOLO classes")


def _lists(path: Path) -> dict[str, list[Path]]:
    """split -> image paths, from obj.data."""
    data_file = path / "obj.data"
    if not data_file.is_file():
        return {}
    lists: dict[str, list[Path]] = {}
    for line in data_file.read_text(encoding="utf-8").splitlines():
        key, _, value = (part.strip() for part in line.partition("="))
        if key in ("classes", "names", "backup", "eval") or not value:
            continue
        list_file = path / value.removeprefix("data/")
        if not list_file.is_file():
            continue
        split = {"valid": "val"}.get(key, key)
        images = []
        for entry in list_file.read_text(encoding="utf-8").split():
            entry = entry.strip()
            images.append(path / entry.removeprefix("data/"))
        lists[split] = images
    return lists


def _label_file(root: Path, image: Path, split: str | None) -> Path:
    beside = image.with_suffix(".txt")
    if beside.is_file() or split is None:
        return beside
    return root / f"obj_{split}_data" / f"{image.stem}.txt"


def _snap(value: float, limit: int) -> float:
    """Undo the rounding of 6-decimal normalised values at the image edges."""
    if -0.01 < value < 0:
        return 0.0
    if limit < value < limit + 0.01:
        return float(limit)
    return value


def _read_labels(label_file: Path, names: list[str], width: int, height: int) -> list[Box]:
    boxes: list[Box] = []
    if not label_file.is_file():
        return boxes
    for number, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise RecordError(label_file, number, "", f"expected `class cx cy w h`, got {line!r}")
        try:
            index = int(parts[0])
            cx, cy, w, h = (float(p) for p in parts[1:])
        except ValueError:
            raise RecordError(label_file, number, "", f"not numbers: {line!r}") from None
        if not 0 <= index < len(names):
            raise RecordError(
                label_file,
                number,
                "class",
                f"index {index} is not in obj.names (0..{len(names) - 1})",
            )
        boxes.append(
            Box(
                name=names[index],
                x1=_snap((cx - w / 2) * width, width),
                y1=_snap((cy - h / 2) * height, height),
                x2=_snap((cx + w / 2) * width, width),
                y2=_snap((cy + h / 2) * height, height),
            )
        )
    return boxes


def read(path: Path, reporter: Reporter | None = None) -> Dataset:
    """Read a YOLO folder; sizes come from the images, so they must be present."""
    reporter = reporter or NullReporter()
    names = _names(path)
    lists = _lists(path)
    if not lists:
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        lists = {"": [p for p in found if p.with_suffix(".txt").is_file()]}
    total = sum(len(images) for images in lists.values())
    records: list[Record] = []
    with reporter.task("Reading YOLO", total=total) as task:
        for split, images in lists.items():
            for image in images:
                size = image_size(image)
                if size is None:
                    raise RecordError(
                        image, None, "", "cannot read the image size, which YOLO labels need"
                    )
                boxes = _read_labels(_label_file(path, image, split or None), names, *size)
                records.append(
                    Record(
                        id=image.stem,
                        file=relative_to(image, path),
                        width=size[0],
                        height=size[1],
                        boxes=boxes,
                        split=split or None,
                    )
                )
                task.advance()
    info = DatasetInfo(
        name=path.resolve().name,
        source="YOLO",
        classes=[ClassInfo(id=i, name=n) for i, n in enumerate(names)],
    )
    return Dataset(info, records, path)


def _line(index: int, box: Box, width: int, height: int) -> str:
    cx = (box.x1 + box.x2) / 2 / width
    cy = (box.y1 + box.y2) / 2 / height
    w = (box.x2 - box.x1) / width
    h = (box.y2 - box.y1) / height
    return f"{index} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"


def write(dataset: Dataset, path: Path, reporter: Reporter | None = None) -> Path:
    """Write the YOLO layout under ``path`` (images are not copied; the lists point at them)."""
    reporter = reporter or NullReporter()
    names = dataset.classes
    index_of = {name: i for i, name in enumerate(names)}
    records = list(dataset)
    lists: dict[str, list[str]] = {}
    with staged_dir(path) as stage, reporter.task("Writing YOLO", total=len(records)) as task:
        for record in records:
            if record.width is None or record.height is None:
                raise RecordError(
                    "records.jsonl", None, f"{record.id}.width", "YOLO needs the image size"
                )
            split = record.split or "train"
            lines = []
            for box in record.boxes:
                if box.name not in index_of:
                    raise DatasetError(f"record {record.id!r}: class {box.name!r} not in classes")
                lines.append(_line(index_of[box.name], box, record.width, record.height))
            label = stage / f"obj_{split}_data" / f"{Path(record.file).stem}.txt"
            atomic_write_bytes(label, "".join(lines).encode())
            image = dataset.path_of(record.file) if dataset.root is not None else Path(record.file)
            lists.setdefault(split, []).append(relative_to(image, path))
            task.advance()
        atomic_write_bytes(stage / "obj.names", "".join(f"{n}\n" for n in names).encode())
        data = [f"classes = {len(names)}\n", "names = data/obj.names\n"]
        for split, images in lists.items():
            key = {"val": "valid"}.get(split, split)
            data.append(f"{key} = data/{split}.txt\n")
            atomic_write_bytes(stage / f"{split}.txt", "".join(f"{i}\n" for i in images).encode())
        data.append("backup = backup/\n")
        atomic_write_bytes(stage / "obj.data", "".join(data).encode())
    return path
