"""Converters on real public fixtures (tests/data/<fmt>/, see tests/data/SOURCES.md)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mlbook
from mlbook.datasets import Box, Dataset, Record, open_dataset
from mlbook.datasets.convert import convert, read_dataset, write_dataset
from mlbook.datasets.registry import detect_format
from mlbook.errors import BadRecordsError, DatasetError

DATA = Path(__file__).parent / "data"


def _coco_api(path: Path) -> object:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("coco", "coco"), ("voc", "voc"), ("yolo", "yolo"), ("labelme", "labelme")],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(DATA / name) == fmt


def test_coco_import_keeps_everything() -> None:
    dataset = read_dataset(DATA / "coco", "coco")
    assert [(c.id, c.name) for c in dataset.info.classes] == [(1, "a"), (2, "b"), (4, "c")]
    first, second = list(dataset)
    assert (first.id, first.file, first.split, first.width, first.height) == (
        "5",
        "images/train/a.jpg",
        "train",
        10,
        5,
    )
    assert first.boxes[0] == Box(
        name="b", x1=2, y1=2, x2=5, y2=3, segmentation=[], attributes={"id": 1, "area": 3.0}
    )
    polygon, crowd = second.boxes
    assert polygon.segmentation == [[0.0, 0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 2.0]]
    assert polygon.attributes == {"x": 1, "y": "hello", "id": 1, "area": 2.0}
    assert crowd.iscrowd and crowd.segmentation == {"counts": [0, 20, 30], "size": [10, 5]}
    assert dataset.path_of(first.file).is_file()


def test_coco_round_trip_checked_with_pycocotools(tmp_path: Path) -> None:
    src = DATA / "coco" / "annotations" / "instances_val.json"
    convert(src, tmp_path / "ds", src_format="coco")
    dataset = open_dataset(tmp_path / "ds")
    assert dataset.path_of(dataset.records()[0].file).is_file()  # rebased onto ds/
    convert(tmp_path / "ds", tmp_path / "back.json", dst_format="coco")
    original, back = _coco_api(src), _coco_api(tmp_path / "back.json")
    assert original.getImgIds() == back.getImgIds()  # type: ignore[attr-defined]
    assert original.loadCats(original.getCatIds()) == back.loadCats(back.getCatIds())  # type: ignore[attr-defined]
    assert original.getAnnIds() == back.getAnnIds()  # type: ignore[attr-defined]
    for ann_id in original.getAnnIds():  # type: ignore[attr-defined]
        a, b = original.anns[ann_id], back.anns[ann_id]  # type: ignore[attr-defined]
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-6)
        for key in ("image_id", "category_id", "iscrowd", "segmentation", "area"):
            assert a[key] == b[key]
        assert original.annToMask(a).tolist() == back.annToMask(b).tolist()  # type: ignore[attr-defined]
    for image_id in original.getImgIds():  # type: ignore[attr-defined]
        assert original.imgs[image_id] == back.imgs[image_id]  # type: ignore[attr-defined]


def test_coco_masks_are_rendered(tmp_path: Path) -> None:
    convert(DATA / "coco", tmp_path / "ds", src_format="coco", masks=True)
    record = next(r for r in open_dataset(tmp_path / "ds") if r.id == "40")
    assert record.mask == "masks/40.png"
    pixels = np.asarray(Image.open(tmp_path / "ds" / record.mask))
    assert pixels.shape == (10, 5)
    assert set(np.unique(pixels)) == {0, 1, 2}  # background, class a (polygon), b (RLE)


def test_coco_export_per_split_and_bad_references(tmp_path: Path) -> None:
    dataset = read_dataset(DATA / "coco")
    write_dataset(dataset, tmp_path / "out", "coco")
    written = sorted(p.name for p in (tmp_path / "out" / "annotations").iterdir())
    assert written == ["instances_train.json", "instances_val.json"]
    bad = json.loads((DATA / "coco/annotations/instances_val.json").read_text())
    bad["annotations"][1]["category_id"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(BadRecordsError, match=r"bad.json: annotations\[1\].category_id: no categ"):
        read_dataset(tmp_path / "bad.json", "coco")
    (tmp_path / "broken.json").write_text('{"images": [{"id": "x"}]}')
    with pytest.raises(BadRecordsError, match=r"broken.json: images\[0\].id: not COCO"):
        read_dataset(tmp_path / "broken.json", "coco")


def test_voc_both_ways(tmp_path: Path) -> None:
    dataset = read_dataset(DATA / "voc", "voc")
    records = {r.id: r for r in dataset}
    assert records["2007_000002"].boxes == [] and records["2007_000002"].split == "test"
    person = records["2007_000001"].boxes[1]
    assert person.attributes["parts"] == [
        {"name": "head", "x1": 5.5, "y1": 6.0, "x2": 7.5, "y2": 8.0}
    ]
    write_dataset(dataset, tmp_path / "voc", "voc")
    again = {r.id: r for r in read_dataset(tmp_path / "voc", "voc")}
    assert again["2007_000001"].boxes == records["2007_000001"].boxes
    assert (tmp_path / "voc/ImageSets/Main/train.txt").read_text() == "2007_000001\n"


def test_yolo_both_ways(tmp_path: Path) -> None:
    dataset = read_dataset(DATA / "yolo", "yolo")
    (record,) = list(dataset)
    assert (record.width, record.height, record.split) == (15, 10, "train")
    assert [b.name for b in record.boxes] == ["label_2", "label_4"]
    assert record.boxes[0].x1 == 0.0 and record.boxes[0].y2 == pytest.approx(4.0)
    write_dataset(dataset, tmp_path / "d", "yolo", yolo_layout="darknet")
    text = (tmp_path / "d/obj_train_data/1.txt").read_text()
    assert text == (DATA / "yolo/obj_train_data/1.txt").read_text()
    again = read_dataset(tmp_path / "d", "yolo")
    assert [b.name for b in next(iter(again)).boxes] == ["label_2", "label_4"]
    write_dataset(dataset, tmp_path / "u", "yolo")  # Ultralytics by default
    assert (tmp_path / "u/labels/train/1.txt").read_text() == text
    assert (tmp_path / "u/images/train/1.jpg").is_file()
    assert (tmp_path / "u/data.yaml").read_text().startswith("train: images/train\nnames:\n")
    with pytest.raises(DatasetError, match="unknown YOLO layout 'v5'"):
        write_dataset(dataset, tmp_path / "x", "yolo", yolo_layout="v5")  # type: ignore[arg-type]


def test_yolo_needs_sizes(tmp_path: Path) -> None:
    dataset = Dataset.from_records([Record(id="a", file="a.jpg", boxes=[])])
    with pytest.raises(BadRecordsError, match="YOLO needs the image size"):
        write_dataset(dataset, tmp_path / "y", "yolo")
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())


def test_labelme_import(tmp_path: Path) -> None:
    dataset = read_dataset(DATA / "labelme", "labelme")
    (record,) = list(dataset)
    assert record.file == "street_0001.jpg" and (record.width, record.height) == (480, 320)
    assert [(b.name, b.x1, b.y1, b.x2, b.y2) for b in record.boxes] == [
        ("person", 120.0, 64.5, 210.0, 300.25),
        ("bicycle", 260.0, 180.0, 400.0, 310.0),
    ]
    write_dataset(dataset, tmp_path / "x", "labelme")
    written = json.loads((tmp_path / "x" / "street_0001.json").read_text())
    assert written["imagePath"] == "street_0001.jpg" and written["imageData"] is None
    assert (tmp_path / "x" / "street_0001.jpg").is_file()


def test_labelme_polygon_and_flags(tmp_path: Path) -> None:
    doc = {
        "shapes": [
            {"label": "dog", "points": [[1, 2], [5, 2], [3, 8]], "shape_type": "polygon"},
            {"label": "tip", "points": [[4, 4]], "shape_type": "point"},
        ],
        "imagePath": "x.jpg",
        "imageWidth": 10,
        "imageHeight": 10,
        "flags": {"outdoor": True, "night": False},
    }
    (tmp_path / "x.json").write_text(json.dumps(doc))
    (record,) = list(read_dataset(tmp_path / "x.json", "labelme"))
    assert record.labels == ["outdoor"]
    assert record.boxes == [
        Box(name="dog", x1=1, y1=2, x2=5, y2=8, segmentation=[[1, 2, 5, 2, 3, 8]])
    ]
    assert record.attributes["shapes"][0]["label"] == "tip"


def test_csv_both_ways_with_spaces_and_unicode(tmp_path: Path) -> None:
    records = [
        Record(id="é 1", file="img dir/é 1.jpg", width=8, height=6, split="train",
               boxes=[Box(name="vélo", x1=1, y1=1.5, x2=3, y2=4),
                      Box(name="car", x1=0, y1=0, x2=8, y2=6)]),
        Record(id="2", file="2.jpg", width=8, height=6),
    ]  # fmt: skip
    (tmp_path / "img dir").mkdir()
    (tmp_path / "img dir" / "é 1.jpg").write_bytes(b"jpeg")
    dataset = Dataset.from_records(records, root=tmp_path)
    out = tmp_path / "moved" / "boxes.csv"
    write_dataset(dataset, out, "csv")
    again = read_dataset(out, "csv")
    assert [r.id for r in again] == ["é 1", "2"]
    first = next(iter(again))
    assert first.boxes == records[0].boxes
    assert first.file == "img dir/é 1.jpg"  # the image came along, beside the CSV
    assert again.path_of(first.file) == tmp_path / "moved" / "img dir" / "é 1.jpg"
    assert again.path_of(first.file).read_bytes() == b"jpeg"


def test_csv_aliases_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("filename,label,xmin,ymin,xmax,ymax\na.jpg,cat,1,2,3,4\n")
    (record,) = list(read_dataset(tmp_path / "a.csv"))
    assert record.id == "a.jpg" and record.boxes[0].name == "cat"
    (tmp_path / "b.csv").write_text("file,name,x1,y1,x2,y2\na.jpg,cat,1,two,3,4\n")
    with pytest.raises(BadRecordsError, match=r"b.csv:2: y1: not a number \('two'\)"):
        read_dataset(tmp_path / "b.csv")


def test_mlbook_to_mlbook_moves_paths(tmp_path: Path) -> None:
    shutil.copytree(DATA / "coco", tmp_path / "coco")
    first = mlbook.open_dataset  # the public name
    convert(tmp_path / "coco", tmp_path / "a")
    convert(tmp_path / "a", tmp_path / "nested" / "b")
    dataset = first(tmp_path / "nested" / "b")
    assert dataset.name == "b"
    assert all(dataset.path_of(r.file).is_file() for r in dataset)


def test_unknown_format_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset format 'tfrecord'"):
        read_dataset(DATA / "coco", "tfrecord")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DatasetError, match="cannot tell the dataset format; pass --from"):
        read_dataset(tmp_path / "x.txt")
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "missing")


def test_failed_conversion_leaves_the_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    convert(DATA / "coco", out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = json.loads((DATA / "coco/annotations/instances_val.json").read_text())
    bad["annotations"][0]["image_id"] = 12345
    (tmp_path / "instances_val.json").write_text(json.dumps(bad))
    with pytest.raises(BadRecordsError, match=r"annotations\[0\].image_id: no image has id 12345"):
        convert(tmp_path / "instances_val.json", out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.rglob("*.tmp"))
