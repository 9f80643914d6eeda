"""Pascal VOC XML detection annotations, both ways.

Read: ``Annotations/*.xml`` with images in ``JPEGImages/`` (VOC, labelme2voc, CVAT and
Datumaro), or a folder of ``.xml`` files beside their images (LabelImg). Splits come
from ``ImageSets/Main/<split>.txt`` (any split name, CVAT's ``default`` too; per-class
``<class>_<split>.txt`` lists are skipped; images listed there without an XML file are
kept, with no boxes). The class order comes from ``labelmap.txt`` (CVAT, Datumaro) or
``class_names.txt`` (labelme2voc) when there is one. Coordinates are kept exactly as
written (VOC's 1-based pixel corners). ``pose``, ``truncated``, ``difficult``,
``occluded``, parts, actions and CVAT's ``<attributes>`` go to the box attributes and
are written back; empty tags (``<truncated/>``, ``<pose/>``, as labelme2voc writes
them) are left out; a missing ``<size>`` or a size of 0 gives no size. XML goes through
defusedxml: a file with a DOCTYPE, entities or external references is refused before
anything expands.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import Output, image_size, join_inside
from mlbook.datasets.metadata import Box, ClassInfo, Record
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

NAME = "voc"
FILE_SUFFIX = None
_FLAGS = ("truncated", "difficult", "occluded")
_SPLITS = ("train", "val", "test", "trainval")


def _xml_files(path: Path) -> list[Path]:
    """``Annotations/*.xml``, else the folder's own ``*.xml`` (LabelImg)."""
    annotations = sorted((path / "Annotations").glob("*.xml"))
    return annotations or sorted(p for p in path.glob("*.xml") if _is_voc(p))


def _is_voc(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b"<annotation" in head


def detect(path: Path) -> bool:
    """True for a folder with ``Annotations/*.xml``, or with VOC ``.xml`` files in it."""
    return path.is_dir() and bool(_xml_files(path))


class _Problems:
    """The ``(field, problem)`` pairs of one XML file."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def number(self, text: str | None, field: str) -> float | None:
        """A finite number, or ``None`` (and a problem) when it is not one."""
        try:
            value = float(text if text is not None else "")
        except ValueError:
            self.found.append((field, f"not a number ({short(text)})"))
            return None
        if not math.isfinite(value):
            self.found.append((field, f"not a finite number ({short(text)})"))
            return None
        return value

    def integer(self, text: str | None, field: str) -> int | None:
        """An optional whole number: empty or missing gives ``None``."""
        if text is None or not text.strip():
            return None
        value = self.number(text, field)
        if value is None:
            return None
        if not value.is_integer():
            self.found.append((field, f"not a whole number ({short(text)})"))
            return None
        return int(value)

    def box(
        self, element: ET.Element, where: str, size: tuple[int | None, int | None]
    ) -> tuple[float, float, float, float] | None:
        bndbox = element.find("bndbox")
        if bndbox is None:
            self.found.append((f"{where}.bndbox", "missing"))
            return None
        values = [
            self.number(bndbox.findtext(tag), f"{where}.bndbox.{tag}")
            for tag in ("xmin", "ymin", "xmax", "ymax")
        ]
        if any(v is None for v in values):
            return None
        x1, y1, x2, y2 = (float(v or 0) for v in values)
        before = len(self.found)
        for _, problem in box_problems(x1, y1, x2, y2, *size):
            self.found.append((f"{where}.bndbox", problem))
        return (x1, y1, x2, y2) if len(self.found) == before else None


def _parse(xml_path: Path) -> ET.Element:
    """The root element of a VOC file, parsed without DTDs or entities.

    Raises:
        RecordError: bad XML, or XML that declares a DOCTYPE or entities.
    """
    data = read_bytes(xml_path, "VOC annotation file")
    try:
        root: ET.Element = SafeET.fromstring(data, forbid_dtd=True)
    except ET.ParseError as exc:
        line, column = exc.position
        raise RecordError(xml_path, line, "", f"bad XML at column {column}: {exc.msg}") from None
    except defusedxml.DefusedXmlException:
        raise RecordError(
            xml_path,
            None,
            "",
            "XML with a DOCTYPE, entities or external references is refused (they can "
            "expand without bound or read other files); remove the <!DOCTYPE ...> part",
        ) from None
    if root.tag != "annotation":
        raise RecordError(xml_path, None, "", f"not a VOC annotation (root <{short(root.tag)}>)")
    return root


def _read_xml(xml_path: Path, images: str, policy: ErrorPolicy) -> Record | None:
    try:
        tree = _parse(xml_path)
    except RecordError as exc:
        policy.reject_error(exc)
        return None
    check = _Problems()
    filename = (tree.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
    file = join_inside(images, filename)
    problem = path_problem(file)
    if problem is not None:
        check.found.append(("filename", problem))
    size = tree.find("size")
    width = check.integer(size.findtext("width"), "size.width") if size is not None else None
    height = check.integer(size.findtext("height"), "size.height") if size is not None else None
    for name, value in (("width", width), ("height", height)):
        if value is not None and value < 0:
            check.found.append((f"size.{name}", f"must be positive ({value})"))
    width, height = width or None, height or None  # 0 means unknown (VOC tools write it)
    boxes: list[Box] = []
    for index, obj in enumerate(tree.findall("object")):
        where = f"object[{index}]"
        label = obj.findtext("name")
        if not label:
            check.found.append((f"{where}.name", "missing"))
        corners = check.box(obj, where, (width, height))
        attributes: dict[str, Any] = {}
        pose = (obj.findtext("pose") or "").strip()
        if pose:
            attributes["pose"] = pose
        for flag in _FLAGS:
            value = check.integer(obj.findtext(flag), f"{where}.{flag}")
            if value is not None:
                attributes[flag] = value
        parts = []
        for part_index, part in enumerate(obj.findall("part")):
            part_box = check.box(part, f"{where}.part[{part_index}]", (width, height))
            if part_box is not None:
                px1, py1, px2, py2 = part_box
                parts.append(
                    {"name": part.findtext("name"), "x1": px1, "y1": py1, "x2": px2, "y2": py2}
                )
        if parts:
            attributes["parts"] = parts
        actions = obj.find("actions")
        if actions is not None:
            attributes["actions"] = {
                a.tag: check.integer(a.text, f"{where}.actions.{a.tag}") or 0 for a in actions
            }
        extra = {
            (item.findtext("name") or "").strip(): item.findtext("value") or ""
            for item in obj.iterfind("attributes/attribute")
        }
        if extra:
            attributes["attributes"] = {k: v for k, v in extra.items() if k}
        if label and corners is not None:
            x1, y1, x2, y2 = corners
            boxes.append(Box(name=label, x1=x1, y1=y1, x2=x2, y2=y2, attributes=attributes))
    if policy.reject(xml_path, None, check.found):
        return None
    return Record(id=xml_path.stem, file=file, width=width, height=height, boxes=boxes)


def _split_names(main: Path) -> list[str]:
    """The split lists of ``ImageSets/Main``: every ``<split>.txt`` except the per-class
    ``<class>_<split>.txt`` lists (and ``trainval`` when ``train`` or ``val`` is there)."""
    stems = sorted(p.stem for p in main.glob("*.txt")) if main.is_dir() else []
    known = set(stems)
    names = [s for s in stems if s.rpartition("_")[2] not in known or "_" not in s]
    if "trainval" in names and ("train" in names or "val" in names):
        names.remove("trainval")
    order = {name: index for index, name in enumerate(_SPLITS)}
    return sorted(names, key=lambda name: (order.get(name, len(order)), name))


def _splits(path: Path, policy: ErrorPolicy) -> dict[str, str]:
    """image id -> split, from ``ImageSets/Main/<split>.txt`` (first token per line)."""
    splits: dict[str, str] = {}
    main = path / "ImageSets" / "Main"
    names = _split_names(main)
    for split in names:
        list_file = main / f"{split}.txt"
        try:
            text = decode_text(read_bytes(list_file, "VOC image set"), list_file)
        except RecordError as exc:
            policy.fail_error(exc)
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                continue
            problem = name_problem(tokens[0])
            if problem is not None:
                policy.fail(list_file, number, "", f"image id {problem}")
                continue
            splits.setdefault(tokens[0], split)
    return splits


def _class_list(path: Path, policy: ErrorPolicy) -> list[str]:
    """Class names in order from ``labelmap.txt`` (``name:color:parts:actions`` lines)
    or ``class_names.txt`` (one per line), else ``[]``."""
    for name, separator in (("labelmap.txt", ":"), ("class_names.txt", None)):
        list_file = path / name
        if not list_file.is_file():
            continue
        try:
            text = decode_text(read_bytes(list_file, "VOC class list"), list_file)
        except RecordError as exc:
            policy.fail_error(exc)
            return []
        names: list[str] = []
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                label = line.split(separator)[0].strip() if separator else line.strip()
                if label and label not in names:
                    names.append(label)
        return names
    return []


def read(
    path: Path, reporter: Reporter | None = None, policy: ErrorPolicy | None = None
) -> Dataset:
    """Read a VOC folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``), or a
    folder of VOC ``.xml`` files beside their images (LabelImg)."""
    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    xml_files = _xml_files(path)
    if not xml_files:
        raise DatasetError(f"{path}: no Annotations/*.xml; is this a Pascal VOC folder?")
    images_folder = "JPEGImages" if xml_files[0].parent.name == "Annotations" else ""
    splits = _splits(path, policy)
    listed = _class_list(path, policy)
    records: list[Record] = []
    with reporter.task("Reading VOC", total=len(xml_files)) as task:
        for xml_path in xml_files:
            task.advance()
            record = _read_xml(xml_path, images_folder, policy)
            if record is not None:
                record.split = splits.get(record.id)
                records.append(record)
    seen = {xml_path.stem for xml_path in xml_files}
    images_dir = path / "JPEGImages"
    images: dict[str, str] = {}
    if any(image_id not in seen for image_id in splits) and images_dir.is_dir():
        for image in sorted(images_dir.iterdir()):
            images.setdefault(image.stem, image.name)
    for image_id, split in splits.items():
        if image_id in seen or image_id not in images:
            continue
        size = image_size(images_dir / images[image_id])
        records.append(
            Record(
                id=image_id,
                file=f"JPEGImages/{images[image_id]}",
                width=size[0] if size else None,
                height=size[1] if size else None,
                split=split,
            )
        )
    policy.finish(path)
    name = path.resolve().name
    dataset = Dataset.from_records(records, name=name, root=path, source="Pascal VOC")
    if listed:
        found = [name for name in dataset.classes if name not in listed]
        classes = [ClassInfo(id=i, name=n) for i, n in enumerate([*listed, *found])]
        dataset.info.classes = classes
    return dataset


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _bndbox(parent: ET.Element, x1: float, y1: float, x2: float, y2: float) -> None:
    bndbox = ET.SubElement(parent, "bndbox")
    for tag, value in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
        ET.SubElement(bndbox, tag).text = _fmt(value)


def _xml_of(record: Record) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = Path(record.file or "").name
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
        extra = box.attributes.get("attributes")
        if isinstance(extra, dict) and extra:
            attributes = ET.SubElement(obj, "attributes")
            for key, value in extra.items():
                item = ET.SubElement(attributes, "attribute")
                ET.SubElement(item, "name").text = str(key)
                ET.SubElement(item, "value").text = str(value)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def write(dataset: Dataset, out: Output, reporter: Reporter | None = None) -> None:
    """Write ``Annotations/<id>.xml``, ``ImageSets/Main/<split>.txt`` and the images in
    ``JPEGImages/`` (``filename`` is each record's base name).

    Raises:
        BadRecordsError: record ids that cannot be file names, or two records whose
        images share a base name.
    """
    reporter = reporter or NullReporter()
    records = list(dataset)
    policy = ErrorPolicy()
    owners: dict[str, str] = {}
    for number, record in enumerate(records, start=1):
        found = []
        if record.file is None:
            found.append(("file", "VOC annotates images; this record has no image file"))
        for value, what in ((record.id, "id"), (record.split, "split")):
            problem = name_problem(value) if value is not None else None
            if problem is not None:
                found.append((what, f"{problem} (VOC names files after it)"))
        image = Path(record.file or record.id).name
        owner = owners.setdefault(image, record.id)
        if owner != record.id:
            found.append(("file", f"JPEGImages/{image} is also the image of record {owner!r}"))
        policy.reject(f"{out.target} (VOC)", None, found, number)
    policy.finish(out.target)
    splits: dict[str, list[str]] = {}
    with reporter.task("Writing VOC", total=len(records)) as task:
        for record in records:
            file = record.file or ""
            out.write(f"Annotations/{record.id}.xml", _xml_of(record))
            out.place(dataset.root, file, f"JPEGImages/{Path(file).name}")
            if record.split is not None:
                splits.setdefault(record.split, []).append(record.id)
            task.advance()
    for split, ids in splits.items():
        out.write(f"ImageSets/Main/{split}.txt", "".join(f"{i}\n" for i in ids).encode())
