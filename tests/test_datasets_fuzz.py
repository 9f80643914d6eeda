"""Every reader, fuzzed: any input gives records that open_dataset would accept, or one
DatasetError, never another exception (COCO, VOC, YOLO darknet and Ultralytics yaml and
txt, LabelMe, CSV boxes and tables, native with features); and the fast record check
agrees with the full one."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlbook.datasets.convert import read_dataset
from mlbook.datasets.dataset import Dataset
from mlbook.datasets.metadata import Box, Record
from mlbook.datasets.problems import ErrorPolicy, path_problem
from mlbook.datasets.validate import _check_fully, _looks_clean, check_record
from mlbook.errors import BadRecordsError, DatasetError

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(0, 9),
    st.integers(-5, 40),
    st.floats(-5, 40, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
paths = st.one_of(
    st.sampled_from(["a.png", "img/a.png", "../a.png", "/etc/passwd", "", ".", "a\\b.png"]),
    st.text(max_size=8),
)
number_text = st.one_of(
    numbers.map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", " ", "0x10", "1,5"]),
    st.text(max_size=5),
)
deep = st.integers(500, 100_000).map(lambda n: b"[" * n + b"]" * n)
junk = st.one_of(st.binary(max_size=60), deep, st.just(b"\xff\xfe\x00"))


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four, else ``other``."""
    return st.one_of(valid, valid, valid, other)


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def _outcome(read: Callable[[ErrorPolicy], Dataset]) -> None:
    """Read under both policies: a dataset whose records are valid, or a DatasetError."""
    for on_error in ("fail", "skip"):
        policy = ErrorPolicy(on_error)  # type: ignore[arg-type]
        try:
            dataset = read(policy)
        except BadRecordsError as exc:
            assert exc.problems and str(exc).strip()
        except DatasetError as exc:
            assert str(exc).strip()
        else:
            assert on_error == "skip" or not policy.problems
            classes = {c.name for c in dataset.info.classes} or None
            ids = [r.id for r in dataset]
            for record in dataset:
                assert check_record(record, classes) == [], record
                assert record.file is None or path_problem(record.file) is None
            assert len(set(ids)) == len(ids)


def _image(path: Path, size: tuple[int, int] = (15, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


# --- COCO ------------------------------------------------------------------------------

coco_images = st.lists(
    st.fixed_dictionaries(
        {"id": mostly(st.integers(0, 3), json_values), "file_name": paths},
        optional={"width": mostly(numbers, json_values), "height": mostly(numbers, json_values)},
    ),
    max_size=3,
)
segmentations = st.one_of(
    st.lists(st.lists(numbers, max_size=8), max_size=2),
    st.fixed_dictionaries(
        {
            "counts": st.lists(st.integers(-2, 60), max_size=4) | st.text(max_size=6),
            "size": st.lists(st.integers(-1, 12), max_size=3),
        }
    ),
    json_values,
)
coco_annotations = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.integers(0, 5),
            "image_id": st.integers(0, 3),
            "category_id": st.integers(0, 3),
            "bbox": mostly(st.lists(numbers, min_size=4, max_size=4), json_values),
        },
        optional={"segmentation": segmentations, "iscrowd": st.integers(0, 1)},
    ),
    max_size=4,
)
coco_categories = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 3), "name": mostly(st.sampled_from("abc"), json_values)}
    ),
    max_size=3,
)
coco_document = st.fixed_dictionaries(
    {"images": coco_images, "annotations": coco_annotations, "categories": coco_categories}
).map(lambda d: json.dumps(d).encode())
coco_files = st.one_of(coco_document, coco_document, coco_document, junk)


@FUZZ
@given(coco_files)
def test_coco_reader(data: bytes) -> None:
    with _folder() as root:
        path = root / "instances_val.json"
        path.write_bytes(data)
        _outcome(lambda policy: read_dataset(path, "coco", policy=policy))


# --- Pascal VOC ------------------------------------------------------------------------

voc_objects = st.lists(
    st.tuples(
        st.sampled_from(["dog", "", "a<b"]) | st.text(max_size=4), *[number_text] * 4, number_text
    ),
    max_size=3,
)


def _voc_xml(filename: str, width: str, height: str, objects: list[tuple[str, ...]]) -> bytes:
    parts = [f"<annotation><filename>{escape(filename)}</filename>"]
    parts.append(f"<size><width>{escape(width)}</width><height>{escape(height)}</height></size>")
    for name, x1, y1, x2, y2, flag in objects:
        parts.append(
            f"<object><name>{escape(name)}</name><difficult>{escape(flag)}</difficult><bndbox>"
            f"<xmin>{escape(x1)}</xmin><ymin>{escape(y1)}</ymin>"
            f"<xmax>{escape(x2)}</xmax><ymax>{escape(y2)}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts).encode("utf-8", "surrogatepass")


voc_document = st.builds(_voc_xml, paths, number_text, number_text, voc_objects)
voc_files = st.one_of(
    voc_document,
    voc_document,
    voc_document,
    junk,
    st.just(b'<!DOCTYPE a [<!ENTITY b "c">]><annotation>&b;</annotation>'),
)


@FUZZ
@given(voc_files, st.binary(max_size=20) | st.text(max_size=12).map(str.encode))
def test_voc_reader(xml: bytes, image_set: bytes) -> None:
    with _folder() as root:
        (root / "Annotations").mkdir()
        (root / "Annotations" / "a.xml").write_bytes(xml)
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / "train.txt").write_bytes(b"a\n" + image_set)
        _image(root / "JPEGImages" / "a.png")
        _outcome(lambda policy: read_dataset(root, "voc", policy=policy))


# --- YOLO ------------------------------------------------------------------------------

label_lines = st.lists(st.lists(number_text, min_size=0, max_size=6).map(" ".join), max_size=4).map(
    lambda lines: "\n".join(lines).encode()
)


@FUZZ
@given(
    st.one_of(st.just(b"car\nbike\n"), junk, st.text(max_size=10).map(str.encode)),
    st.one_of(label_lines, junk),
    st.one_of(
        st.just(b"data/obj_train_data/1.png\n"),
        st.lists(paths, max_size=3).map(lambda p: "\n".join(p).encode()),
        junk,
    ),
)
def test_yolo_reader(names: bytes, labels: bytes, image_list: bytes) -> None:
    with _folder() as root:
        (root / "obj.names").write_bytes(names)
        (root / "obj.data").write_bytes(b"classes = 2\ntrain = data/train.txt\n")
        (root / "train.txt").write_bytes(image_list)
        _image(root / "obj_train_data" / "1.png")
        (root / "obj_train_data" / "1.txt").write_bytes(labels)
        _outcome(lambda policy: read_dataset(root, "yolo", policy=policy))


# --- YOLO, Ultralytics: data.yaml and label lines -------------------------------------

yaml_scalars = st.one_of(
    st.sampled_from(["car", "no", "yes", "~", "1e3", "0x10", "'quoted'", "[a, b]", "{a: 1}"]),
    st.text(max_size=6),
    st.integers(-2, 3).map(str),
)
yaml_names = st.one_of(
    st.lists(st.sampled_from(["car", "bike", "person"]), max_size=3).map(
        lambda names: "names: [" + ", ".join(names) + "]"
    ),
    st.dictionaries(
        st.integers(-1, 3), st.sampled_from(["car", "bike"]) | yaml_scalars, max_size=3
    ).map(lambda d: "names:\n" + "".join(f"  {k}: {v}\n" for k, v in d.items())),
    yaml_scalars.map(lambda v: f"names: {v}"),
    st.just(""),
)
yaml_splits = st.lists(
    st.tuples(
        st.sampled_from(["train", "val", "validation", "test", "path", "nc", "kpt_shape"]),
        st.one_of(
            st.sampled_from(
                [
                    "images/train",
                    "../images/train",
                    "/abs/images/train",
                    "train.txt",
                    ".",
                    "images/train/1.png",
                    "[images/train, images/train/1.png]",
                    "[3, 3]",
                    "[2, 9]",
                ]
            ),
            yaml_scalars,
        ),
    ),
    max_size=4,
).map(lambda pairs: "".join(f"{k}: {v}\n" for k, v in pairs))
yaml_documents = st.builds(lambda names, rest: f"{rest}{names}\n".encode(), yaml_names, yaml_splits)
yaml_files = st.one_of(
    yaml_documents,
    yaml_documents,
    yaml_documents,
    junk,
    st.just(b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nnames: [*c, *c]\n"),
)
ultralytics_lines = st.lists(
    st.one_of(
        st.lists(number_text, min_size=5, max_size=5),
        st.lists(st.floats(0, 1).map(str), min_size=7, max_size=11),
        st.lists(number_text, max_size=12),
    ).map(lambda parts: " ".join(["0", *parts[1:]]) if parts else ""),
    max_size=4,
).map(lambda lines: "\n".join(lines).encode())


@FUZZ
@given(
    yaml_files, st.one_of(ultralytics_lines, junk), st.binary(max_size=20) | paths.map(str.encode)
)
def test_ultralytics_reader(data_yaml: bytes, labels: bytes, image_list: bytes) -> None:
    with _folder() as root:
        (root / "data.yaml").write_bytes(data_yaml)
        (root / "train.txt").write_bytes(image_list)
        _image(root / "images" / "train" / "1.png")
        (root / "labels" / "train").mkdir(parents=True)
        (root / "labels" / "train" / "1.txt").write_bytes(labels)
        _outcome(lambda policy: read_dataset(root, "yolo", policy=policy))


# --- LabelMe ---------------------------------------------------------------------------

_PNG = io.BytesIO()
Image.new("RGB", (4, 4)).save(_PNG, format="PNG")
_PNG_BASE64 = base64.b64encode(_PNG.getvalue()).decode()

shapes = st.lists(
    st.fixed_dictionaries(
        {
            "label": st.sampled_from(["dog", "cat"]) | json_values,
            "points": st.lists(st.lists(numbers, min_size=2, max_size=2), max_size=4) | json_values,
            "shape_type": st.sampled_from(["rectangle", "polygon", "circle", "point", "line"])
            | json_values,
        }
    ),
    max_size=3,
)
labelme_document = st.fixed_dictionaries(
    {"shapes": shapes, "imagePath": paths},
    optional={
        "imageWidth": st.integers(-2, 20) | json_values,
        "imageHeight": st.integers(-2, 20) | json_values,
        "flags": st.dictionaries(st.text(max_size=3), st.booleans() | json_values, max_size=2),
        "imageData": st.none() | st.text(max_size=8) | st.just(_PNG_BASE64) | json_values,
    },
).map(lambda d: json.dumps(d).encode())
labelme_files = st.one_of(labelme_document, labelme_document, labelme_document, junk)


@FUZZ
@given(labelme_files)
def test_labelme_reader(data: bytes) -> None:
    with _folder() as root:
        (root / "a.json").write_bytes(data)
        _outcome(lambda policy: read_dataset(root, "labelme", policy=policy))


# --- CSV -------------------------------------------------------------------------------

columns = st.lists(
    st.sampled_from(["id", "file", "filename", "width", "height", "split", "name", "label"])
    | st.sampled_from(["x1", "y1", "x2", "y2", "xmin", "ymax"])
    | st.text(max_size=3),
    min_size=1,
    max_size=10,
)


def _csv_text(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


csv_document = st.builds(
    _csv_text,
    st.just(["file", "width", "height", "name", "x1", "y1", "x2", "y2"]) | columns,
    st.lists(
        mostly(
            st.lists(paths | number_text, min_size=8, max_size=8),
            st.lists(paths | number_text, max_size=9),
        ),
        max_size=4,
    ),
)
csv_files = st.one_of(csv_document, csv_document, csv_document, junk)


@FUZZ
@given(csv_files)
def test_csv_reader(data: bytes) -> None:
    with _folder() as root:
        (root / "boxes.csv").write_bytes(data)
        _outcome(lambda policy: read_dataset(root / "boxes.csv", "csv", policy=policy))


table_document = st.builds(
    _csv_text,
    st.just(["a", "b", "species"]) | st.just(["id", "split", "x", "species"]) | columns,
    st.lists(st.lists(number_text | st.sampled_from(["cat", "dog", ""]), max_size=5), max_size=4),
)


@FUZZ
@given(st.one_of(table_document, table_document, junk))
def test_csv_table_reader(data: bytes) -> None:
    with _folder() as root:
        (root / "table.csv").write_bytes(data)
        _outcome(
            lambda policy: read_dataset(root / "table.csv", "csv", policy=policy, label="species")
        )


# --- native records.jsonl and dataset.json -------------------------------------------

boxes = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from("ab"), "x1": numbers, "y1": numbers, "x2": numbers, "y2": numbers},
        optional={"segmentation": segmentations, "iscrowd": mostly(st.booleans(), json_values)},
    ),
    max_size=2,
)
features = st.one_of(
    st.lists(numbers, max_size=3),
    st.fixed_dictionaries(
        {"table": st.sampled_from(["t.npy", "t.csv", "t.parquet", "../t.npy", "t.txt"]) | paths,
         "row": st.integers(-1, 3)}
    ),
    json_values,
)  # fmt: skip
records = st.fixed_dictionaries(
    {"id": st.integers(0, 3) | st.text(max_size=2)},
    optional={
        "file": mostly(st.just("a.png"), paths),
        "features": features,
        "width": mostly(st.integers(-2, 30), json_values),
        "height": st.integers(-2, 30),
        "labels": mostly(st.sampled_from(["a", "b", "z"]), json_values),
        "counts": mostly(st.dictionaries(st.sampled_from("abz"), st.integers(-1, 3)), json_values),
        "boxes": mostly(boxes, json_values),
        "mask": paths,
        "attributes": json_values,
    },
)
json_lines = st.lists(records.map(json.dumps), max_size=4).map(lambda x: "\n".join(x).encode())
records_files = st.one_of(
    json_lines,
    json_lines,
    st.lists(records, max_size=3).map(lambda items: json.dumps(items).encode()),
    junk,
)
info_files = st.one_of(
    st.none(),
    st.none(),
    st.fixed_dictionaries(
        {"name": mostly(st.just("x"), json_values)},
        optional={
            "classes": st.lists(
                st.fixed_dictionaries({"id": st.integers(0, 2), "name": st.sampled_from("abz")}),
                max_size=3,
            ),
        },
    ).map(lambda d: json.dumps(d).encode()),
    junk,
)


@FUZZ
@given(records_files, info_files)
def test_native_reader(data: bytes, info: bytes | None) -> None:
    with _folder() as root:
        (root / "records.jsonl").write_bytes(data)
        if info is not None:
            (root / "dataset.json").write_bytes(info)
        _outcome(lambda policy: read_dataset(root, "mlbook", policy=policy))


def test_fuzz_strategies_build_what_the_readers_expect() -> None:
    """A sanity check that the generators can produce a readable input at all."""
    record: dict[str, Any] = {"id": "1", "file": "a.png", "width": 10, "height": 10}
    with _folder() as root:
        (root / "records.jsonl").write_text(json.dumps(record))
        assert len(read_dataset(root, "mlbook")) == 1


coordinates = st.sampled_from([-1, 0, 1, 5, 6, 12, 13, 12.5, math.nan, math.inf, -math.inf])
#: A clean box, then some of its fields replaced by odd values.
odd_boxes = st.builds(
    lambda pairs: Box(**{"name": "a", "x1": 1, "y1": 1, "x2": 5, "y2": 5, **dict(pairs)}),
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["x1", "y1", "x2", "y2"]), coordinates),
            st.tuples(st.just("name"), st.sampled_from("abz")),
            st.tuples(
                st.just("segmentation"),
                st.one_of(
                    st.lists(st.lists(st.floats(0, 9), max_size=8), max_size=2),
                    st.fixed_dictionaries(
                        {
                            "counts": st.lists(st.integers(-1, 144), max_size=3),
                            "size": st.just([12, 12]),
                        }
                    ),
                ),
            ),
        ),
        max_size=2,
    ),
)
#: A clean record, then some of its fields replaced by odd values.
clean = st.builds(
    Record,
    id=st.just("1"),
    file=st.just("a.png"),
    width=st.sampled_from([None, 12]),
    height=st.sampled_from([None, 12]),
)
changes = st.one_of(
    st.tuples(st.just("id"), st.just("")),
    st.tuples(st.just("file"), paths),
    st.tuples(st.just("mask"), paths),
    st.tuples(st.sampled_from(["width", "height"]), st.sampled_from([None, -1, 0, 3, 12])),
    st.tuples(st.just("labels"), st.lists(st.sampled_from("abz"), max_size=2)),
    st.tuples(
        st.just("counts"), st.dictionaries(st.sampled_from("abz"), st.integers(-1, 2), min_size=1)
    ),
    st.tuples(st.just("boxes"), st.lists(odd_boxes, min_size=1, max_size=2)),
    st.tuples(st.just("boxes"), st.lists(odd_boxes, min_size=1, max_size=2)),
)
in_memory_records = st.builds(
    lambda record, pairs: msgspec.structs.replace(record, **dict(pairs)),
    clean,
    st.lists(changes, max_size=3),
)


def _odd(classes: set[str] | None = None, **fields: Any) -> Any:
    """An explicit example: a clean record with ``fields`` (``box=`` for one box's)."""
    box = fields.pop("box", None)
    boxes = [Box(**{"name": "a", "x1": 1, "y1": 1, "x2": 5, "y2": 5, **box})] if box else []
    return example(Record(id="1", file="a.png", boxes=boxes, **fields), classes)


@settings(max_examples=300, deadline=None)
@_odd(box={"x2": math.inf})
@_odd(box={"y2": math.inf})
@_odd(box={"y1": math.nan}, height=12)
@_odd(box={"x1": 5}, width=12)
@_odd(box={"x2": 12.5}, width=12)
@_odd(box={"name": "z"}, classes={"a"})
@_odd(box={"segmentation": [[1, 1, 2, 2]]})
@_odd(box={"segmentation": {"counts": [1], "size": [2, 2]}})
@_odd(box={"name": "b"}, counts={"a": 1})
@_odd(width=-1)
@_odd(mask="../m.png")
@_odd(labels=["z"], classes={"a"})
@given(in_memory_records, st.none() | st.just({"a", "b"}))
def test_the_fast_record_check_never_passes_a_bad_record(
    record: Record, classes: set[str] | None
) -> None:
    """check_record's fast test may send a good record to the full check, never the
    reverse: whenever it says clean, the full check finds nothing."""
    if _looks_clean(record, classes):
        assert _check_fully(record, classes, None) == []
