"""The metadata model: loose input forms, canonical output, load/save, errors, subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlbook
from mlbook.datasets import Box, ClassEncoding, ClassInfo, Dataset, Record, open_dataset
from mlbook.datasets.metadata import decode_record
from mlbook.datasets.validate import parse_records, validate_dataset
from mlbook.errors import BadRecordsError, DatasetError, RecordError

LOOSE = (
    b'{"id": 1, "file": "a.jpg", "labels": "car", "counts": [{"car": 2}, {"bike": 3}]}\n'
    b"\n"
    b'{"id": "2", "file": "b.jpg", "width": 100, "height": 80, "split": "train",'
    b' "boxes": [{"name": "bike", "x1": 10, "y1": 20, "x2": 30, "y2": 40}]}\n'
)


def test_loose_forms_become_canonical() -> None:
    first, second = parse_records(LOOSE, "r.jsonl")
    assert first == Record(id="1", file="a.jpg", labels=["car"], counts={"car": 2, "bike": 3})
    assert second.boxes == [Box(name="bike", x1=10, y1=20, x2=30, y2=40)]
    assert second.boxes[0].width == 20 and second.boxes[0].height == 20


def test_json_array_is_accepted() -> None:
    data = json.dumps([{"id": "a", "file": "a.jpg"}, {"id": 2, "file": "b.jpg", "labels": "x"}])
    records = parse_records(data.encode(), "r.json")
    assert [r.id for r in records] == ["a", "2"]
    assert records[1].labels == ["x"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            b'{"id": 1, "file": "a.jpg", "width": "wide"}',
            "r.jsonl:3: width: expected `int | null`, got `str` ('wide')",
        ),
        (
            b'{"id": 1, "file": "a.jpg", "boxes": [{"name": "a", "x1": 1, "y1": 2, "x2": 3}]}',
            "r.jsonl:3: boxes[0].y2: required field is missing",
        ),
        (
            b'{"id": 1, "file": ]',
            "r.jsonl:3: bad JSON at column 19: json is malformed: invalid character",
        ),
        (
            b'{"id": 1, "file": "a.jpg", "lables": []}',
            "r.jsonl:3: lables: unknown field (put free data under `attributes`)",
        ),
        (b"[1, 2]", "r.jsonl:3: a record must be a JSON object, got [1, 2]"),
        (b'{"file": "a.jpg"}', "r.jsonl:3: id: required field is missing"),
    ],
)
def test_bad_record_names_file_line_field_and_value(line: bytes, message: str) -> None:
    data = b'{"id": "ok", "file": "x.jpg"}\n\n' + line + b"\n"
    with pytest.raises(BadRecordsError) as info:
        parse_records(data, "r.jsonl")
    assert str(info.value) == message
    assert [p.line for p in info.value.problems] == [3]


def test_save_writes_canonical_form_and_reopens(tmp_path: Path) -> None:
    dataset = Dataset.from_records(parse_records(LOOSE), name="demo", source="hand")
    dataset.save(tmp_path / "demo")
    lines = (tmp_path / "demo" / "records.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {
        "id": "1",
        "file": "a.jpg",
        "labels": ["car"],
        "counts": {"car": 2, "bike": 3},
    }
    info = json.loads((tmp_path / "demo" / "dataset.json").read_text())
    assert info["classes"] == [{"id": 0, "name": "bike"}, {"id": 1, "name": "car"}]
    assert info["splits"] == {"train": 1}
    again = mlbook.open_dataset(tmp_path / "demo")
    assert list(again) == list(dataset)
    assert again.name == "demo" and again.classes == ["bike", "car"]


def test_open_without_dataset_json_infers_classes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "records.json").write_bytes(b'[{"id": 1, "file": "a.jpg", "labels": "z"}]')
    dataset = open_dataset(tmp_path / "d")
    assert dataset.name == "d" and dataset.classes == ["z"]


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a dataset directory"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no dataset\.json or records\.jsonl"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "dataset.json").write_text('{"name": "x", "clases": []}')
    with pytest.raises(RecordError, match=r"dataset.json: .*unknown field `clases`"):
        open_dataset(tmp_path / "empty")


def _sample_dataset() -> Dataset:
    records = [
        Record(
            id="1",
            file="a.jpg",
            split="train",
            labels=["car"],
            boxes=[Box(name="car", x1=0, y1=0, x2=2, y2=2)],
        ),
        Record(
            id="2",
            file="b.jpg",
            split="train",
            boxes=[
                Box(name="bike", x1=0, y1=0, x2=2, y2=2),
                Box(name="dog", x1=1, y1=1, x2=2, y2=2),
            ],
        ),
        Record(id="3", file="c.jpg", split="test", labels=["dog"]),
    ]
    return Dataset.from_records(records, name="s")


def test_records_filter_by_split_and_subset() -> None:
    dataset = _sample_dataset()
    assert [r.id for r in dataset.records(split="train")] == ["1", "2"]
    subset = dataset.records(classes=["dog", "bike"])
    assert [r.id for r in subset] == ["2", "3"]
    assert [b.name for b in subset[0].boxes] == ["bike", "dog"]
    assert len(dataset.records(classes=["dog"], keep_empty=True)) == 3
    with pytest.raises(DatasetError, match="has no split 'val'; splits: test, train"):
        dataset.records(split="val")
    with pytest.raises(DatasetError, match="unknown class"):
        dataset.records(classes=["cat"])


def test_samples_use_the_subset_encoding() -> None:
    dataset = _sample_dataset()
    samples = list(dataset.samples(split="train", classes=["dog", "bike"]))
    assert [s.box_labels for s in samples] == [[0, 1]]  # bike=0, dog=1 (dataset id order)
    assert samples[0].boxes[0] == (0, 0, 2, 2)


def test_class_encoding_save_load(tmp_path: Path) -> None:
    encoding = ClassEncoding({"bike": 0, "car": 1, "dog": 2}).subset(["dog", "car"], start=1)
    assert encoding.to_dict() == {"car": 1, "dog": 2}
    assert encoding.encode("dog") == 2 and encoding.decode(1) == "car"
    path = encoding.save(tmp_path / "labels.json")
    assert ClassEncoding.load(path) == encoding
    with pytest.raises(DatasetError, match="'cat' is not in the encoding"):
        encoding.encode("cat")
    with pytest.raises(DatasetError, match="class id 0 is used by both"):
        ClassEncoding({"a": 0, "b": 0})
    (tmp_path / "bad.json").write_text('{"format": "other", "classes": []}')
    with pytest.raises(DatasetError, match="expected 'mlbook-labels'"):
        ClassEncoding.load(tmp_path / "bad.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
record_like = st.fixed_dictionaries(
    {"id": st.integers() | st.text(max_size=3), "file": st.text(max_size=5)},
    optional={
        "labels": json_values | st.text() | st.lists(st.text(max_size=3)),
        "counts": json_values | st.dictionaries(st.text(max_size=3), st.integers()),
        "boxes": json_values
        | st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.text(max_size=2),
                    "x1": st.floats(),
                    "y1": st.integers(),
                    "x2": json_values,
                    "y2": st.integers(),
                }
            )
        ),
        "width": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=80),
        json_values.map(lambda v: json.dumps(v).encode()),
        record_like.map(lambda v: json.dumps(v).encode()),
    )
)
def test_parser_gives_records_or_a_clean_error(data: bytes) -> None:
    try:
        records = parse_records(data, "fuzz.jsonl")
    except BadRecordsError as exc:
        assert str(exc).startswith("fuzz.jsonl")
        assert all(str(p).startswith("fuzz.jsonl") for p in exc.problems)
    else:
        assert all(isinstance(r, Record) for r in records)


@settings(max_examples=200, deadline=None)
@given(record_like)
def test_decode_record_on_objects(obj: dict[str, object]) -> None:
    try:
        record = decode_record(obj, "x", 1)
    except RecordError as exc:
        assert str(exc).startswith("x:1: ")
    else:
        assert isinstance(record.labels, list) and isinstance(record.counts, dict)


def test_classes_as_plain_names_validate_and_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "cars"
    root.mkdir()
    (root / "dataset.json").write_text('{"classes": ["car", "bike", "person"]}')
    (root / "records.jsonl").write_text('{"id": "1", "file": "a.jpg", "labels": ["bike"]}\n')
    assert validate_dataset(root, check_files=False).ok
    dataset = open_dataset(root)
    assert dataset.name == "cars"  # no name: the directory's
    assert dataset.encoding.to_dict() == {"car": 0, "bike": 1, "person": 2}
    dataset.save(tmp_path / "copy")
    written = json.loads((tmp_path / "copy" / "dataset.json").read_text())
    assert written["classes"] == ["car", "bike", "person"]  # as the user wrote them
    dataset.info.classes[1] = ClassInfo(id=1, name="bike", attributes={"wheels": 2})
    dataset.save(tmp_path / "changed")
    written = json.loads((tmp_path / "changed" / "dataset.json").read_text())
    assert written["classes"][1] == {"id": 1, "name": "bike", "attributes": {"wheels": 2}}


def test_classes_mixing_names_and_objects(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "dataset.json").write_text('{"name": "m", "classes": ["a", {"id": 0, "name": "b"}]}')
    (root / "records.jsonl").write_text('{"id": "1", "file": "a.jpg"}\n')
    texts = [str(p).replace(f"{root}/", "") for p in validate_dataset(root, False).problems]
    assert texts == [
        "dataset.json: classes[0].id: duplicate (0)",
        "dataset.json: classes[1].id: duplicate (0)",
    ]
    (root / "dataset.json").write_text('{"name": "m", "classes": ["a", {"id": 7, "name": "b"}]}')
    assert open_dataset(root).encoding.to_dict() == {"a": 0, "b": 7}
    dataset = open_dataset(root)
    dataset.save(root)
    assert json.loads((root / "dataset.json").read_text())["classes"][0] == {"id": 0, "name": "a"}
