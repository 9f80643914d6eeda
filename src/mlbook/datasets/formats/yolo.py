"""YOLO text labels, both ways, in the Ultralytics and the darknet layouts.

Ultralytics (what most YOLO users have): ``data.yaml`` (``names`` as a list or an
``index: name`` mapping, optional ``nc``, ``path``, ``train``/``val``/``test`` as
folders, ``.txt`` image lists or images, one or a list of them), images under
``images/<split>/`` and each image's labels in the same place under ``labels/``. Label
lines are boxes, segments (polygons, read as their box with the polygon kept as the
segmentation) or, with ``kpt_shape``, poses (keypoints kept in the box attributes).
Paths in ``data.yaml`` are read as Ultralytics reads them (``../train/images`` that
does not exist is ``train/images``); an absolute one is looked for inside the folder
by its last parts; a split folder that is not there is looked for where Ultralytics and
Roboflow put it (``images/<split>``, ``<split>/images``, ``valid`` for ``val``);
nothing outside the folder is ever read.

Darknet (what CVAT exports as "YOLO 1.1"): ``obj.names`` (or ``classes.txt``),
``obj.data`` naming the ``<split>.txt`` image lists (``data/`` means the folder), and
each image's labels beside it. Without ``obj.data``, every image with a label file
(beside it, or under ``labels/``) is read, its split taken from ``images/<split>/``.

Image sizes come from the image headers (Pillow). Write: ``layout="ultralytics"`` (the
default) or ``"darknet"``; records need ``width`` and ``height``, and their images come
along (``images/<split>/`` or ``obj_<split>_data/``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import IMAGE_SUFFIXES, Output, image_size, join_inside
from mlbook.datasets.formats._yolo import (
    LineProblem,
    label_lines,
    label_path,
    parse_labels,
    read_data_yaml,
    text_of,
    yaml_text,
)
from mlbook.datasets.metadata import ClassInfo, DatasetInfo, Record
from mlbook.datasets.problems import ErrorPolicy, name_problem, path_problem, short
from mlbook.errors import DatasetError, RecordError
from mlbook.progress import NullReporter, Reporter

__all__ = ["FILE_SUFFIX", "LAYOUTS", "NAME", "YoloLayout", "detect", "read", "write"]

NAME = "yolo"
FILE_SUFFIX = None
#: How ``write`` lays the dataset out.
YoloLayout = Literal["ultralytics", "darknet"]
LAYOUTS: tuple[YoloLayout, ...] = ("ultralytics", "darknet")
_NAMES_FILES = ("obj.names", "classes.txt", "classes.names")
_YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")
_YAML_SUFFIXES = (".yaml", ".yml")


def _looks_like_data_yaml(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return b"names" in head or b"nc:" in head


def _data_yaml(folder: Path) -> Path | None:
    """The Ultralytics dataset YAML of ``folder``: ``data.yaml`` or ``dataset.yaml``,
    else the one ``*.yaml`` listing ``names``."""
    for name in _YAML_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = [
        p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in _YAML_SUFFIXES and p.is_file() and _looks_like_data_yaml(p)
    ]
    return found[0] if len(found) == 1 else None


def detect(path: Path) -> bool:
    """True for a ``data.yaml`` (or a folder with one) or a folder with ``obj.names``."""
    if path.is_file():
        return path.suffix.lower() in _YAML_SUFFIXES and _looks_like_data_yaml(path)
    if not path.is_dir():
        return False
    return any((path / n).is_file() for n in _NAMES_FILES) or _data_yaml(path) is not None


#: An image to read: its path relative to the dataset folder, and where it was listed.
_Entry = tuple[str, Path | None, int | None]


def read(
    path: Path, reporter: Reporter | None = None, policy: ErrorPolicy | None = None
) -> Dataset:
    """Read a YOLO dataset: a ``data.yaml`` or its folder (Ultralytics), or a folder with
    ``obj.names`` (darknet). Sizes come from the images, so they must be present."""
    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    yaml_file = path if path.is_file() else _data_yaml(path)
    root = path.parent if path.is_file() else path
    keypoints: tuple[int, int] | None = None
    extra: dict[str, object] = {}
    names: dict[int, str] = {}
    lists: dict[str, list[_Entry]] = {}
    if yaml_file is not None:
        try:
            spec = read_data_yaml(yaml_file)
        except RecordError as exc:
            policy.fail_error(exc)  # fatal: finish() below raises
        else:
            names, keypoints, extra = spec.names, spec.keypoints, spec.extra
            lists = _ultralytics_lists(root, spec.base, spec.splits, yaml_file, policy)
    else:
        names = dict(enumerate(_darknet_names(root)))
        lists = _darknet_lists(root, policy)
        if not lists and not policy.fatal:
            lists = _found_images(root)
    total = sum(len(images) for images in lists.values())
    ids = _record_ids([image for images in lists.values() for image, _, _ in images])
    records: list[Record] = []
    listed: dict[str, str] = {}
    with reporter.task("Reading YOLO", total=total) as task:
        for split, images in lists.items():
            for image, list_file, number in images:
                task.advance()
                first = listed.setdefault(image, split)
                if first != split:
                    message = f"{image!r} is listed in split {first!r} and in {split!r}"
                    policy.reject(list_file or root, number, [("", message)])
                    continue
                record = _record(
                    root, image, ids[image], split, names, (list_file, number), policy, keypoints
                )
                if record is not None:
                    records.append(record)
    policy.finish(path)
    info = DatasetInfo(
        name=root.resolve().name,
        source="YOLO (Ultralytics)" if yaml_file is not None else "YOLO",
        classes=[ClassInfo(id=i, name=n) for i, n in sorted(names.items())],
        attributes={"yolo": extra} if extra else {},
    )
    return Dataset(info, records, root)


def _record_ids(images: list[str]) -> dict[str, str]:
    """image -> record id: the file's stem, or its path without the suffix when two
    images share a stem (``images/train/1.jpg`` and ``images/val/1.jpg``)."""
    stems: dict[str, int] = {}
    for image in images:
        stem = Path(image).stem
        stems[stem] = stems.get(stem, 0) + 1
    return {
        image: Path(image).stem
        if stems[Path(image).stem] == 1
        else str(Path(image).with_suffix("").as_posix())
        for image in images
    }


def _inside(root: Path, folder: str, value: str) -> tuple[str | None, str]:
    """The path ``value`` names, relative to ``root``, and what is wrong when none.

    Relative paths resolve in ``folder``; ``../x`` that does not exist is ``x`` (as
    Ultralytics reads it); ``data/x`` is ``x`` (darknet); an absolute path is looked for
    by its last parts. Only paths inside ``root`` are returned.
    """
    text = value.strip().replace("\\", "/")
    candidates: list[str] = []
    if text.startswith("/") or text[1:2] == ":":
        parts = [p for p in text.split("/") if p and p != "."]
        candidates = [join_inside(folder, "/".join(parts[i:])) for i in range(1, len(parts))]
    else:
        candidates.append(join_inside(folder, text))
        if text.startswith("../"):
            candidates.append(join_inside(folder, text[3:]))
        if text.startswith("data/"):
            candidates.append(join_inside(folder, text[5:]))
    inside = [c for c in candidates if c and path_problem(c) is None]
    for candidate in inside:
        if os.path.exists(root / candidate):
            return candidate, ""
    if text.startswith("/") or text[1:2] == ":":
        return None, (
            f"absolute path ({short(value)}), and no such path inside the dataset folder; "
            "give a path relative to it"
        )
    problem = path_problem(candidates[0]) if candidates else "empty path"
    if problem is not None:
        return None, problem
    return None, f"{value!r} not found in {root}"


def _images_under(root: Path, folder: str) -> list[str]:
    base = root / folder
    return sorted(
        p.relative_to(root).as_posix()
        for p in base.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def _list_file(root: Path, relative: str, policy: ErrorPolicy) -> list[_Entry]:
    """The images of a ``.txt`` image list (``./x`` is relative to the list's folder)."""
    list_file = root / relative
    try:
        text = text_of(list_file, "YOLO image list")
    except RecordError as exc:
        policy.fail_error(exc)
        return []
    here = str(Path(relative).parent.as_posix())
    here = "" if here == "." else here
    entries: list[_Entry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        folder = here if line.startswith("./") else ""
        image, problem = _inside(root, folder, line)
        if image is None and folder == "" and here:
            image, problem = _inside(root, here, line)
        if image is None:
            policy.reject(list_file, number, [("", problem)])
            continue
        entries.append((image, list_file, number))
    return entries


def _usual_folder(root: Path, base: str, split: str) -> str | None:
    """Where Ultralytics and Roboflow put a split's images, for a ``data.yaml`` whose
    path does not exist here: ``images/<split>`` or ``<split>/images`` (``valid`` for
    ``val``)."""
    names = [split, "valid"] if split == "val" else [split]
    for name in names:
        for folder in (f"images/{name}", f"{name}/images"):
            candidate = join_inside(base, folder)
            if os.path.isdir(root / candidate):
                return candidate
    return None


def _ultralytics_lists(
    root: Path, base: str, splits: dict[str, list[str]], yaml_file: Path, policy: ErrorPolicy
) -> dict[str, list[_Entry]]:
    lists: dict[str, list[_Entry]] = {}
    for split, values in splits.items():
        images: list[_Entry] = []
        for value in values:
            relative, problem = _inside(root, base, value)
            if relative is None and len(values) == 1:
                relative = _usual_folder(root, base, split)
            if relative is None:
                policy.fail(yaml_file, None, split, f"{problem}; fix or remove `{split}:`")
                continue
            target = root / relative
            if target.is_dir():
                images += [(image, None, None) for image in _images_under(root, relative)]
            elif target.suffix.lower() == ".txt":
                images += _list_file(root, relative, policy)
            elif target.suffix.lower() in IMAGE_SUFFIXES:
                images.append((relative, yaml_file, None))
            else:
                message = f"{value!r} is not a folder, a .txt image list or an image"
                policy.fail(yaml_file, None, split, message)
        lists[split] = images
    return lists


def _darknet_names(path: Path) -> list[str]:
    for candidate in _NAMES_FILES:
        if (path / candidate).is_file():
            text = text_of(path / candidate, "YOLO class list")
            return [line.strip() for line in text.splitlines() if line.strip()]
    raise DatasetError(f"{path}: no data.yaml, obj.names or classes.txt listing the YOLO classes")


def _darknet_lists(path: Path, policy: ErrorPolicy) -> dict[str, list[_Entry]]:
    """split -> images, from obj.data and the list files it names."""
    data_file = path / "obj.data"
    if not data_file.is_file():
        return {}
    lists: dict[str, list[_Entry]] = {}
    for number, line in enumerate(text_of(data_file, "YOLO obj.data").splitlines(), start=1):
        key, _, value = (part.strip() for part in line.partition("="))
        if key in ("classes", "names", "backup", "eval") or not value:
            continue
        relative = value.removeprefix("data/")
        problem = path_problem(relative)
        if problem is not None:
            policy.fail(data_file, number, key, problem)
            continue
        if not (path / relative).is_file():
            continue
        lists[{"valid": "val"}.get(key, key)] = _list_file(path, relative, policy)
    return lists


def _found_images(root: Path) -> dict[str, list[_Entry]]:
    """Without ``obj.data``: every image with a label file, and every image under an
    ``images/`` folder (its split from ``images/<split>/``)."""
    lists: dict[str, list[_Entry]] = {}
    for image in _images_under(root, ""):
        parts = image.split("/")
        under_images = "images" in parts[:-1]
        if not (under_images or (root / label_path(image)).is_file()):
            continue
        split = ""
        if under_images:
            after = parts[len(parts) - 1 - parts[::-1].index("images") :]
            split = after[1] if len(after) > 2 else ""
        lists.setdefault(split, []).append((image, None, None))
    return lists


def _label_file(root: Path, image: str, split: str | None) -> Path:
    """The label file of ``image``: under ``labels/`` (Ultralytics) or beside it, else in
    ``obj_<split>_data/`` (darknet)."""
    derived = root / label_path(image)
    if os.path.isfile(derived) or split is None:
        return derived
    darknet = root / f"obj_{split}_data" / f"{Path(image).stem}.txt"
    return darknet if os.path.isfile(darknet) else derived


def _record(
    root: Path,
    image: str,
    record_id: str,
    split: str,
    names: dict[int, str],
    listed: tuple[Path | None, int | None],
    policy: ErrorPolicy,
    keypoints: tuple[int, int] | None,
) -> Record | None:
    list_file, number = listed
    size = image_size(root / image)
    if size is None:
        where = list_file or root / image
        message = f"cannot read the size of {image!r}, which YOLO labels need"
        policy.reject(where, number, [("", message)])
        return None
    label_file = _label_file(root, image, split or None)
    boxes = []
    problems: list[LineProblem] = []
    if os.path.isfile(label_file):
        try:
            text = text_of(label_file, "YOLO label file")
        except RecordError as exc:
            problems.append((exc.line, exc.problem))
        else:
            boxes = parse_labels(text, names, *size, problems, keypoints)
    if problems:
        for line, message in problems:
            policy.reject(label_file, line, [("", message)], key=("yolo", image))
        return None
    return Record(
        id=record_id,
        file=image,
        width=size[0],
        height=size[1],
        boxes=boxes,
        split=split or None,
    )


def _check(dataset: Dataset, out: Output, layout: YoloLayout) -> None:
    """Every record the layout can hold: sizes, known classes, usable split names, one
    label file per record."""
    index_of = {name: i for i, name in enumerate(dataset.classes)}
    policy = ErrorPolicy()
    owners: dict[str, str] = {}
    for number, record in enumerate(dataset, start=1):
        found: list[tuple[str, str]] = []
        if record.file is None:
            found.append(("file", "YOLO labels images; this record has no image file"))
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
        stem = Path(record.file or record.id).stem
        label = f"labels/{split}/{stem}" if layout == "ultralytics" else f"obj_{split}_data/{stem}"
        owner = owners.setdefault(label, record.id)
        if owner != record.id:
            found.append(("file", f"{label}.txt is also the label file of record {owner!r}"))
        policy.reject(f"{out.target} (YOLO)", None, found, number)
    policy.finish(out.target)


def write(
    dataset: Dataset,
    out: Output,
    reporter: Reporter | None = None,
    layout: YoloLayout = "ultralytics",
) -> None:
    """Write the Ultralytics layout (``data.yaml``, ``images/<split>/``,
    ``labels/<split>/``) or the darknet one (``obj.names``, ``obj.data``,
    ``<split>.txt``, ``obj_<split>_data/`` with images and labels side by side).

    A box with one polygon is written as a segment line, a box with ``keypoints`` as a
    pose line, any other box as ``class cx cy w h``.

    Raises:
        DatasetError: an unknown layout; BadRecordsError: records without ``width``,
        ``height`` or an image, with classes not in the dataset, or two images with one
        name in a split.
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown YOLO layout {layout!r}; use 'ultralytics' or 'darknet'")
    reporter = reporter or NullReporter()
    _check(dataset, out, layout)
    names = dataset.classes
    index_of = {name: i for i, name in enumerate(names)}
    lists: dict[str, list[str]] = {}
    with reporter.task("Writing YOLO", total=len(dataset)) as task:
        for record in dataset:
            split = record.split or "train"
            file = record.file or ""
            image = Path(file).name
            folders = (
                (f"images/{split}", f"labels/{split}")
                if layout == "ultralytics"
                else (f"obj_{split}_data", f"obj_{split}_data")
            )
            labels = label_lines(record, index_of).encode()
            out.write(f"{folders[1]}/{Path(image).stem}.txt", labels)
            out.place(dataset.root, file, f"{folders[0]}/{image}")
            lists.setdefault(split, []).append(f"data/{folders[0]}/{image}")
            task.advance()
    if layout == "ultralytics":
        document: dict[str, object] = {split: f"images/{split}" for split in sorted(lists)}
        extra = dataset.info.attributes.get("yolo")
        if isinstance(extra, dict):
            document.update({k: extra[k] for k in ("kpt_shape", "flip_idx") if k in extra})
        document["names"] = dict(enumerate(names))
        out.write("data.yaml", yaml_text(document))
        return
    out.write("obj.names", "".join(f"{n}\n" for n in names).encode())
    data = [f"classes = {len(names)}\n", "names = data/obj.names\n"]
    for split, images in lists.items():
        key = {"val": "valid"}.get(split, split)
        data.append(f"{key} = data/{split}.txt\n")
        out.write(f"{split}.txt", "".join(f"{i}\n" for i in images).encode())
    data.append("backup = backup/\n")
    out.write("obj.data", "".join(data).encode())
