"""COCO instances (object detection) JSON, both ways.

Import: ``bbox`` ``[x, y, w, h]`` becomes corners; categories keep their ids as the
class encoding (``supercategory`` kept in the class attributes); every image is kept,
also those without annotations; each box keeps its ``segmentation`` (polygons or RLE),
``iscrowd``, and the annotation ``id`` and ``area`` (in ``attributes``). The file's
``info`` and ``licenses`` travel in the dataset attributes so an export gives them back.

Layouts read: one ``instances_<split>.json`` file, a directory holding
``annotations/instances_*.json`` (one split per file), or Roboflow's
``<split>/_annotations.coco.json`` with the images beside. Images are looked up in
``images/<split>/``, ``<split>/``, ``images/`` or beside the annotations; a
``file_name`` may name a subfolder (``cam1/0001.jpg``). The folder each file's images
were found in is kept in the dataset attributes (``coco.image_dirs``), so that an export
gives every ``file_name`` back as it was.

Export: ``DST.json`` with the images in ``images/`` beside it, or
``DST/annotations/instances_<split>.json`` with the images in ``DST/images/<split>/``;
subfolders are kept in ``file_name`` and on disk.
"""

from __future__ import annotations

import io
import math
import posixpath
import re
from pathlib import Path
from typing import Any

import msgspec

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import Output, join_inside
from mlbook.datasets.metadata import Box, ClassInfo, DatasetInfo, Record, no_gc
from mlbook.datasets.problems import (
    ErrorPolicy,
    decode_json,
    name_problem,
    path_problem,
    read_bytes,
)
from mlbook.datasets.validate import box_problems, plain_path, segmentation_problem
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["FILE_SUFFIX", "NAME", "detect", "read", "render_masks", "write"]

NAME = "coco"
#: A target ending in this is one annotation file; anything else is a folder.
FILE_SUFFIX = ".json"

_IMAGE_EXTRAS = ("license", "coco_url", "flickr_url", "date_captured")


class _Image(msgspec.Struct, gc=False):
    id: int
    file_name: str
    width: int | None = None
    height: int | None = None
    license: Any = None
    coco_url: Any = None
    flickr_url: Any = None
    date_captured: Any = None


class _Annotation(msgspec.Struct, gc=False):
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0
    segmentation: list[list[float]] | dict[str, Any] | None = None
    area: float | None = None
    attributes: dict[str, Any] | None = None


class _Category(msgspec.Struct):
    id: int
    name: str
    supercategory: str | None = None


class _File(msgspec.Struct):
    images: list[_Image]
    annotations: list[_Annotation] = []
    categories: list[_Category] = []
    info: dict[str, Any] | None = None
    licenses: list[Any] | None = None


_DECODER = msgspec.json.Decoder(_File)


_ROBOFLOW_FILE = "_annotations.coco.json"


def _annotation_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "annotations" if (path / "annotations").is_dir() else path
    found = sorted(folder.glob("instances_*.json")) or sorted(folder.glob("*.json"))
    return found or sorted(path.glob(f"*/{_ROBOFLOW_FILE}"))


def detect(path: Path) -> bool:
    """True when ``path`` is a COCO instances file or a folder of them."""
    files = _annotation_files(path)
    if not files:
        return False
    try:
        with open(files[0], "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b'"images"' in head or b'"annotations"' in head or b'"categories"' in head


def _split_of(path: Path) -> str | None:
    if path.name == _ROBOFLOW_FILE:
        return path.parent.name if name_problem(path.parent.name) is None else None
    match = re.match(r"instances_([A-Za-z]+)", path.stem)
    return match.group(1) if match else None


def _image_dir(root: Path, json_path: Path, split: str | None, first: str | None) -> Path:
    names = [split, f"{split}2017", f"{split}2014"] if split else []
    candidates = [root / "images" / n for n in names] + [root / n for n in names]
    candidates += [root / "images", root, json_path.parent]
    if first is not None and path_problem(first) is None:
        for candidate in candidates:
            if (candidate / first).exists():
                return candidate
    for candidate in candidates:
        if candidate.is_dir() and candidate != json_path.parent:
            return candidate
    return json_path.parent


def read(
    path: Path, reporter: Reporter | None = None, policy: ErrorPolicy | None = None
) -> Dataset:
    """Read COCO instances from a file or a folder of ``instances_<split>.json`` files.

    Every bad image and annotation goes to ``policy`` (an image is left out with its
    annotations); a file that is not COCO JSON, or categories that clash, fail.

    Raises:
        DatasetError: nothing to read, an unreadable file; BadRecordsError: the problems.
    """
    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    files = _annotation_files(path)
    if not files:
        raise DatasetError(f"{path}: no COCO annotation file (annotations/instances_*.json)")
    root = path.parent.parent if path.is_file() and path.parent.name == "annotations" else path
    if path.is_file() and path.parent.name != "annotations":
        root = path.parent
    image_dirs: dict[str, str] = {}
    classes: dict[int, ClassInfo] = {}
    class_files: dict[int, Path] = {}
    records: list[Record] = []
    attributes: dict[str, Any] = {}
    with reporter.task("Reading COCO", total=len(files)) as task:
        for json_path in files:
            task.advance()
            split = _split_of(json_path) if len(files) > 1 or path.is_dir() else _split_of(path)
            try:
                parsed = _decode(json_path)
            except RecordError as exc:
                policy.fail_error(exc)
                continue
            if parsed.info is not None and "info" not in attributes:
                attributes["info"] = parsed.info
            if parsed.licenses is not None and "licenses" not in attributes:
                attributes["licenses"] = parsed.licenses
            _categories(parsed, json_path, classes, class_files, policy)
            first = parsed.images[0].file_name if parsed.images else None
            image_dir = _image_dir(root, json_path, split, first)
            prefix = image_dir.relative_to(root).as_posix() if image_dir != root else ""
            prefix = "" if prefix == "." else prefix.rstrip("/")
            image_dirs.setdefault(split or "", prefix)
            with no_gc():
                records.extend(_records(parsed, json_path, split, prefix, classes, policy))
    policy.finish(path)
    attributes["image_dirs"] = image_dirs
    info = DatasetInfo(
        name=root.resolve().name,
        source=f"COCO instances: {', '.join(p.name for p in files)}",
        classes=sorted(classes.values(), key=lambda c: c.id),
        attributes={"coco": attributes},
    )
    return Dataset(info, records, root)


def _decode(json_path: Path) -> _File:
    """The parsed file (its bytes are freed before the records are built).

    Raises:
        DatasetError: unreadable; RecordError: not COCO instances JSON.
    """
    data = read_bytes(json_path, "COCO annotation file")
    with no_gc():
        return decode_json(data, json_path, _File, "COCO instances")


def _categories(
    parsed: _File,
    json_path: Path,
    classes: dict[int, ClassInfo],
    class_files: dict[int, Path],
    policy: ErrorPolicy,
) -> None:
    """Add the file's categories to ``classes``; clashing ids or names are fatal."""
    here: dict[int, int] = {}
    names = {info.name: cid for cid, info in classes.items()}
    for index, category in enumerate(parsed.categories):
        where = f"categories[{index}]"
        if category.id in here:
            policy.fail(
                json_path,
                None,
                f"{where}.id",
                f"duplicate category id {category.id} (first at categories[{here[category.id]}]); "
                "give each category its own id",
            )
            continue
        here[category.id] = index
        known = classes.get(category.id)
        if known is not None:
            if known.name != category.name:
                policy.fail(
                    json_path,
                    None,
                    f"{where}.name",
                    f"category {category.id} is {category.name!r} here but {known.name!r} in "
                    f"{class_files[category.id].name}",
                )
            continue
        if category.name in names:
            policy.fail(
                json_path,
                None,
                f"{where}.name",
                f"duplicate category name {category.name!r} (ids {names[category.name]} and "
                f"{category.id}); give each category its own name",
            )
            continue
        extra = (
            {"supercategory": category.supercategory} if category.supercategory is not None else {}
        )
        classes[category.id] = ClassInfo(id=category.id, name=category.name, attributes=extra)
        class_files[category.id] = json_path
        names[category.name] = category.id


def _records(
    parsed: _File,
    json_path: Path,
    split: str | None,
    prefix: str,
    classes: dict[int, ClassInfo],
    policy: ErrorPolicy,
) -> list[Record]:
    """The file's records; every bad image or annotation to ``policy`` (this loop is the
    import's hot path: the checks take a fast test first, details only on failure)."""
    by_id: dict[int, tuple[list[Box], float, float]] = {}
    first_at: dict[int, int] = {}
    bad: set[int] = set()

    def reject(image_id: int | None, field: str, message: str) -> None:
        key = (json_path, image_id) if image_id is not None else None
        policy.reject(json_path, None, [(field, message)], key=key)
        if image_id is not None:
            bad.add(image_id)

    records: list[Record] = []
    inf = math.inf
    for index, image in enumerate(parsed.images):
        if image.id in first_at:
            message = f"duplicate image id {image.id} (first at images[{first_at[image.id]}])"
            reject(image.id, f"images[{index}].id", f"{message}; give each image its own id")
            continue
        first_at[image.id] = index
        boxes: list[Box] = []
        width, height = image.width, image.height
        for name, value in (("width", width), ("height", height)):
            if value is not None and value <= 0:
                reject(image.id, f"images[{index}].{name}", f"must be positive ({value})")
        by_id[image.id] = (
            boxes,
            width if width is not None and width > 0 else inf,
            height if height is not None and height > 0 else inf,
        )
        name = image.file_name
        file = f"{prefix}/{name}" if prefix else name
        if not plain_path(name):
            file = join_inside(prefix, name)
            problem = path_problem(file)
            if problem is not None:
                reject(image.id, f"images[{index}].file_name", problem)
        extras = {k: getattr(image, k) for k in _IMAGE_EXTRAS if getattr(image, k) is not None}
        records.append(
            Record(
                id=str(image.id),
                file=file,
                width=width,
                height=height,
                boxes=boxes,
                split=split,
                attributes=extras,
            )
        )
    names = {cid: info.name for cid, info in classes.items()}
    for index, ann in enumerate(parsed.annotations):
        image_id = ann.image_id
        owner = by_id.get(image_id)
        if owner is None:
            reject(None, f"annotations[{index}].image_id", f"no image has id {image_id}")
            continue
        category = names.get(ann.category_id)
        if category is None:
            message = f"no category has id {ann.category_id}"
            reject(image_id, f"annotations[{index}].category_id", message)
            continue
        boxes_of, wide, high = owner
        x, y, w, h = ann.bbox
        x2, y2 = x + w, y + h
        if not (0 <= x < x2 <= wide and x2 < inf and 0 <= y < y2 <= high and y2 < inf):
            known_w = int(wide) if wide < inf else None
            known_h = int(high) if high < inf else None
            for _, problem in box_problems(x, y, x2, y2, known_w, known_h):
                reject(image_id, f"annotations[{index}].bbox", problem)
        segmentation = ann.segmentation
        if segmentation and not (
            type(segmentation) is list
            and len(segmentation) == 1
            and len(segmentation[0]) >= 6
            and not len(segmentation[0]) % 2
        ):
            known_w = int(wide) if wide < inf else None
            known_h = int(high) if high < inf else None
            problem = segmentation_problem(segmentation, known_w, known_h)
            if problem is not None:
                reject(image_id, f"annotations[{index}].segmentation", problem)
        extra: dict[str, Any] = dict(ann.attributes) if ann.attributes else {}
        extra["id"] = ann.id
        if ann.area is not None:
            extra["area"] = ann.area
        boxes_of.append(
            Box(
                name=category,
                x1=x,
                y1=y,
                x2=x2,
                y2=y2,
                iscrowd=bool(ann.iscrowd),
                segmentation=segmentation,
                attributes=extra,
            )
        )
    if bad:
        return [r for r in records if int(r.id) not in bad]
    return records


def _file_names(dataset: Dataset, records: list[Record], split: str) -> list[str]:
    """Each record's ``file_name``: its ``file`` inside the folder the COCO reader found
    this split's images in (``coco.image_dirs``), else inside the records' deepest
    common folder; subfolders below it are kept."""
    files = [record.file or "" for record in records]
    coco = dataset.info.attributes.get("coco")
    dirs = coco.get("image_dirs") if isinstance(coco, dict) else None
    known = dirs.get(split) if isinstance(dirs, dict) else None
    if isinstance(known, str) and all(f.startswith(f"{known}/") or not known for f in files):
        prefix = known
    else:
        folders = [posixpath.dirname(f) for f in files]
        prefix = posixpath.commonpath(folders) if folders and all(folders) else ""
    return [f.removeprefix(f"{prefix}/") if prefix else f for f in files]


def _coco_document(
    dataset: Dataset, records: list[Record], file_names: list[str]
) -> dict[str, Any]:
    class_ids = {c.name: c.id for c in dataset.info.classes}
    numeric = all(r.id.isdigit() for r in records) and len({r.id for r in records}) == len(records)
    box_ids = [b.attributes.get("id") for r in records for b in r.boxes]
    keep_box_ids = all(isinstance(i, int) for i in box_ids) and len(set(box_ids)) == len(box_ids)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    next_box = 1
    for index, (record, file_name) in enumerate(zip(records, file_names, strict=True), start=1):
        image_id = int(record.id) if numeric else index
        image: dict[str, Any] = {"id": image_id, "file_name": file_name}
        if record.width is not None:
            image["width"] = record.width
        if record.height is not None:
            image["height"] = record.height
        image.update({k: record.attributes[k] for k in _IMAGE_EXTRAS if k in record.attributes})
        images.append(image)
        for box in record.boxes:
            if box.name not in class_ids:
                raise DatasetError(
                    f"record {record.id!r}: box class {box.name!r} is not in dataset.json; "
                    "add it to the classes or run `mlbook data validate`"
                )
            extra = dict(box.attributes)
            ann_id = extra.pop("id") if keep_box_ids else next_box
            next_box += 1
            width, height = box.x2 - box.x1, box.y2 - box.y1
            area = extra.pop("area", None)
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": class_ids[box.name],
                "segmentation": box.segmentation if box.segmentation is not None else [],
                "area": area if area is not None else width * height,
                "bbox": [box.x1, box.y1, width, height],
                "iscrowd": int(box.iscrowd),
            }
            if not keep_box_ids:
                extra.pop("id", None)
            if extra:
                ann["attributes"] = extra
            annotations.append(ann)
    categories = []
    for info in sorted(dataset.info.classes, key=lambda c: c.id):
        category: dict[str, Any] = {"id": info.id, "name": info.name}
        if "supercategory" in info.attributes:
            category["supercategory"] = info.attributes["supercategory"]
        categories.append(category)
    coco = dataset.info.attributes.get("coco", {})
    document: dict[str, Any] = {}
    if "info" in coco:
        document["info"] = coco["info"]
    if "licenses" in coco:
        document["licenses"] = coco["licenses"]
    document.update({"images": images, "annotations": annotations, "categories": categories})
    return document


def write(dataset: Dataset, out: Output, reporter: Reporter | None = None) -> None:
    """Write COCO instances: one file when the target ends in ``.json`` (images in
    ``images/`` beside it), else one ``annotations/instances_<split>.json`` per split
    in the target folder (images in ``images/<split>/``).

    ``file_name`` keeps the subfolders of each image below its split's image folder;
    the images come along (see :class:`~mlbook.datasets.formats._common.Output`).

    Raises:
        BadRecordsError: records without an image file; DatasetError: a split that
        cannot name a file, a box class missing from the classes.
    """
    reporter = reporter or NullReporter()
    records = list(dataset)
    policy = ErrorPolicy()
    for number, record in enumerate(records, start=1):
        if record.file is None:
            message = "COCO annotates images; this record has no image file"
            policy.reject(f"{out.target} (COCO)", None, [("file", message)], number)
    policy.finish(out.target)
    groups: dict[str, tuple[str, str, list[Record]]] = {}
    if out.file is not None:
        splits = {record.split or "" for record in records}
        split = splits.pop() if len(splits) == 1 else ""
        groups[out.file] = (split, "images", records)
    else:
        by_split: dict[str, list[Record]] = {}
        for record in records:
            by_split.setdefault(record.split or "default", []).append(record)
        for split in by_split:
            problem = name_problem(split)
            if problem is not None:
                raise DatasetError(f"split {split!r} {problem}")
        for split, group in sorted(by_split.items()):
            key = "" if split == "default" and all(r.split is None for r in group) else split
            groups[f"annotations/instances_{split}.json"] = (key, f"images/{split}", group)
    encoder = msgspec.json.Encoder()
    with reporter.task("Writing COCO", total=len(records)) as task:
        for relative, (split, folder, group) in groups.items():
            file_names = _file_names(dataset, group, split)
            for record, file_name in zip(group, file_names, strict=True):
                out.place(dataset.root, record.file or "", f"{folder}/{file_name}")
                task.advance()
            out.write(relative, encoder.encode(_coco_document(dataset, group, file_names)))


def render_masks(
    dataset: Dataset, out: Output, out_dir: str = "masks", reporter: Reporter | None = None
) -> int:
    """Render one class-id mask PNG per record from the boxes' segmentations (polygons
    or RLE) into ``<out_dir>/<id>.png`` of ``out`` and set each record's ``mask``.

    Pixel value = class id (0 = background); crowd regions are drawn first, objects on top.
    Polygons are clipped to the image; RLE must be well-formed (the readers check it).
    Needs pycocotools, numpy and Pillow (extra ``coco``). Returns the number of masks.
    """
    try:
        import numpy as np
        from PIL import Image
        from pycocotools import mask as mask_utils
    except ImportError:
        raise DatasetError(
            "rendering masks needs pycocotools, numpy and Pillow; "
            "install them with `pip install mlbook[coco]`"
        ) from None
    reporter = reporter or NullReporter()
    class_ids = {c.name: c.id for c in dataset.info.classes}
    if max(class_ids.values(), default=0) > 255:
        raise DatasetError("class ids above 255 do not fit an 8-bit mask")
    count = 0
    records = list(dataset)
    with reporter.task("Rendering masks", total=len(records)) as task:
        for record in records:
            task.advance()
            if record.width is None or record.height is None:
                continue
            height, width = record.height, record.width
            canvas = np.zeros((height, width), dtype=np.uint8)
            drawn = False
            for box in sorted(record.boxes, key=lambda b: not b.iscrowd):  # crowds first
                segmentation = box.segmentation
                if not segmentation or segmentation_problem(segmentation, width, height):
                    continue
                if isinstance(segmentation, list):
                    limits = np.array([width, height], dtype=np.float64)
                    polygons = [
                        np.clip(np.asarray(p, dtype=np.float64).reshape(-1, 2), 0, limits)
                        .ravel()
                        .tolist()
                        for p in segmentation
                    ]
                    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
                elif isinstance(segmentation.get("counts"), list):
                    rle = mask_utils.frPyObjects(segmentation, height, width)
                else:
                    rle = segmentation
                pixels = mask_utils.decode(rle).astype(bool)
                canvas[pixels] = class_ids[box.name]
                drawn = True
            if not drawn:
                continue
            problem = name_problem(record.id)
            if problem is not None:
                raise DatasetError(f"record id {record.id!r} {problem} (it names its mask file)")
            relative = f"{out_dir}/{record.id}.png"
            buffer = io.BytesIO()
            Image.fromarray(canvas).save(buffer, format="PNG")
            out.write(relative, buffer.getvalue())
            record.mask = relative
            count += 1
    return count
