"""Pascal VOC XML detection annotations, both ways.

Read: ``Annotations/*.xml``, images in ``JPEGImages/``, splits from
``ImageSets/Main/<split>.txt`` (images listed there without an XML file are kept, with
no boxes). Coordinates are kept exactly as written (VOC's 1-based pixel corners).
``pose``, ``truncated``, ``difficult``, ``occluded``, parts and actions go to the box
attributes and are written back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from mlbook._fs import atomic_write_bytes
from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import image_size, staged_dir
from mlbook.datasets.metadata import Box, Record
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["NAME", "detect", "read", "write"]

NAME = "voc"
_FLAGS = ("truncated", "difficult", "occluded")
_SPLITS = ("train", "val", "test", "trainval")


def detect(path: Path) -> bool:
    """True for a folder with ``Annotations/*.xml``."""
    return path.is_dir() and any((path / "Annotations").glob("*.xml"))


def _number(text: str | None, path: Path, field: str) -> float:
    try:
        return float(text if text is not None else "")
    except ValueError:
        raise RecordError(path, None, field, f"not a number ({text!r})") from None


def _box_of(element: ET.Element, path: Path, where: str) -> tuple[float, float, float, float]:
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise RecordError(path, None, f"{where}.bndbox", "missing")
    return (
        _number(bndbox.findtext("xmin"), path, f"{where}.bndbox.xmin"),
        _number(bndbox.findtext("ymin"), path, f"{where}.bndbox.ymin"),
        _number(bndbox.findtext("xmax"), path, f"{where}.bndbox.xmax"),
        _number(bndbox.findtext("ymax"), path, f"{where}.bndbox.ymax"),
    )


def _read_xml(path: Path, root: Path) -> Record:
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise RecordError(path, line, "", f"bad XML at column {column}: {exc.msg}") from exc
    filename = tree.findtext("filename") or f"{path.stem}.jpg"
    size = tree.find("size")
    width = int(float(size.findtext("width") or 0)) if size is not None else 0
    height = int(float(size.findtext("height") or 0)) if size is not None else 0
    boxes: list[Box] = []
    for index, obj in enumerate(tree.findall("object")):
        where = f"object[{index}]"
        name = obj.findtext("name")
        if not name:
            raise RecordError(path, None, f"{where}.name", "missing")
        x1, y1, x2, y2 = _box_of(obj, path, where)
        attributes: dict[str, Any] = {}
        if obj.findtext("pose") is not None:
            attributes["pose"] = obj.findtext("pose")
        for flag in _FLAGS:
            value = obj.findtext(flag)
            if value is not None:
                attributes[flag] = int(float(value))
        parts = []
        for part_index, part in enumerate(obj.findall("part")):
            px1, py1, px2, py2 = _box_of(part, path, f"{where}.part[{part_index}]")
            parts.append(
                {"name": part.findtext("name"), "x1": px1, "y1": py1, "x2": px2, "y2": py2}
            )
        if parts:
            attributes["parts"] = parts
        actions = obj.find("actions")
        if actions is not None:
            attributes["actions"] = {a.tag: int(float(a.text or 0)) for a in actions}
        boxes.append(Box(name=name, x1=x1, y1=y1, x2=x2, y2=y2, attributes=attributes))
    return Record(
        id=path.stem,
        file=f"JPEGImages/{filename}",
        width=width or None,
        height=height or None,
        boxes=boxes,
    )


def read(path: Path, reporter: Reporter | None = None) -> Dataset:
    """Read a VOC folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``)."""
    reporter = reporter or NullReporter()
    xml_files = sorted((path / "Annotations").glob("*.xml"))
    if not xml_files:
        raise DatasetError(f"{path}: no Annotations/*.xml; is this a Pascal VOC folder?")
    splits: dict[str, str] = {}
    main = path / "ImageSets" / "Main"
    names = [s for s in _SPLITS if (main / f"{s}.txt").exists()]
    if "trainval" in names and ("train" in names or "val" in names):
        names.remove("trainval")
    for split in names:
        for line in (main / f"{split}.txt").read_text().split():
            splits.setdefault(line.strip(), split)
    records: list[Record] = []
    with reporter.task("Reading VOC", total=len(xml_files)) as task:
        for xml_path in xml_files:
            record = _read_xml(xml_path, path)
            record.split = splits.get(record.id)
            records.append(record)
            task.advance()
    seen = {r.id for r in records}
    for image_id, split in splits.items():
        if image_id in seen:
            continue
        image = next(iter(sorted((path / "JPEGImages").glob(f"{image_id}.*"))), None)
        if image is None:
            continue
        size = image_size(image)
        records.append(
            Record(
                id=image_id,
                file=f"JPEGImages/{image.name}",
                width=size[0] if size else None,
                height=size[1] if size else None,
                split=split,
            )
        )
    return Dataset.from_records(records, name=path.resolve().name, root=path, source="Pascal VOC")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _bndbox(parent: ET.Element, x1: float, y1: float, x2: float, y2: float) -> None:
    bndbox = ET.SubElement(parent, "bndbox")
    for tag, value in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
        ET.SubElement(bndbox, tag).text = _fmt(value)


def _xml_of(record: Record) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = Path(record.file).name
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(record.width or 0)
    ET.SubElement(size, "height").text = str(record.height or 0)
    ET.SubElement(size, "depth").text = "3"
    for box in record.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.name
        if "pose" in box.attributes:
            ET.SubElement(obj, "pose").text = str(box.attributes["pose"])
        for flag in _FLAGS:
            if flag in box.attributes:
                ET.SubElement(obj, flag).text = str(int(box.attributes[flag]))
        _bndbox(obj, box.x1, box.y1, box.x2, box.y2)
        for part in box.attributes.get("parts", []):
            element = ET.SubElement(obj, "part")
            ET.SubElement(element, "name").text = str(part.get("name"))
            _bndbox(element, part["x1"], part["y1"], part["x2"], part["y2"])
        if "actions" in box.attributes:
            actions = ET.SubElement(obj, "actions")
            for action, value in box.attributes["actions"].items():
                ET.SubElement(actions, action).text = str(value)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write(dataset: Dataset, path: Path, reporter: Reporter | None = None) -> Path:
    """Write ``Annotations/<id>.xml`` and ``ImageSets/Main/<split>.txt`` under ``path``
    (images are not copied; ``filename`` is each record's base name)."""
    reporter = reporter or NullReporter()
    records = list(dataset)
    splits: dict[str, list[str]] = {}
    with staged_dir(path) as stage, reporter.task("Writing VOC", total=len(records)) as task:
        for record in records:
            atomic_write_bytes(stage / "Annotations" / f"{record.id}.xml", _xml_of(record))
            if record.split is not None:
                splits.setdefault(record.split, []).append(record.id)
            task.advance()
        for split, ids in splits.items():
            text = "".join(f"{i}\n" for i in ids)
            atomic_write_bytes(stage / "ImageSets" / "Main" / f"{split}.txt", text.encode())
    return path
