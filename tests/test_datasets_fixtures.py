"""Each fixture in tests/data (see SOURCES.md) converts to mlbook, validates clean, and
converts back to its own format unchanged as that format's own reader sees it:
pycocotools for COCO; for YOLO, VOC and LabelMe a reader written here from the format's
specification, independent of mlbook's."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from mlbook.datasets.convert import convert
from mlbook.datasets.registry import detect_format
from mlbook.datasets.validate import validate_dataset

DATA = Path(__file__).parent / "data"
IMAGES = (".jpg", ".jpeg", ".png", ".bmp")


def _to_mlbook_and_back(name: str, fmt: str, tmp_path: Path, **options: Any) -> tuple[Path, Path]:
    """Convert the fixture to mlbook (validated) and back to ``fmt`` with copied images."""
    source = DATA / name
    assert detect_format(source) == fmt
    dataset_dir = tmp_path / "Datasets" / name
    convert(source, dataset_dir, src_format=fmt)
    ships_images = any(p.suffix.lower() in IMAGES for p in source.rglob("*"))
    report = validate_dataset(dataset_dir, check_files=ships_images)
    assert report.ok, [str(p) for p in report.problems]
    back = tmp_path / "back" / name
    convert(dataset_dir, back, src_format="mlbook", dst_format=fmt, images="copy", **options)
    return source, back


# --- COCO: pycocotools -----------------------------------------------------------------


def _coco(path: Path) -> Any:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _same_coco(original: Path, back: Path, images: Path) -> None:
    a, b = _coco(original), _coco(back)
    assert a.imgs == b.imgs
    assert a.loadCats(a.getCatIds()) == b.loadCats(b.getCatIds())
    assert sorted(a.anns) == sorted(b.anns)
    for ann_id, ann in a.anns.items():
        other = b.anns[ann_id]
        assert np.allclose(ann["bbox"], other["bbox"], atol=1e-6)
        for key in ("image_id", "category_id", "iscrowd", "segmentation", "area"):
            assert ann[key] == other[key]
    for image in b.imgs.values():  # the images came along, subfolders kept
        assert (images / image["file_name"]).is_file()


INSTANCES = {split: f"annotations/instances_{split}.json" for split in ("train", "val")}
ROBOFLOW = {split: f"{split}/_annotations.coco.json" for split in ("train", "val")}


@pytest.mark.parametrize(
    ("name", "files"),
    [
        ("coco", INSTANCES),
        ("coco_subfolders", {"val": INSTANCES["val"]}),
        ("coco_roboflow", ROBOFLOW),
    ],
)
def test_coco_fixtures_round_trip(name: str, files: dict[str, str], tmp_path: Path) -> None:
    source, back = _to_mlbook_and_back(name, "coco", tmp_path)
    for split, relative in files.items():
        written = back / "annotations" / f"instances_{split}.json"
        _same_coco(source / relative, written, back / "images" / split)
    again = tmp_path / "again"
    convert(back, again, src_format="coco")  # --from coco, --to coco, then validate: clean
    assert validate_dataset(again).ok


def test_coco_subfolders_are_kept(tmp_path: Path) -> None:
    convert(DATA / "coco_subfolders", tmp_path / "ds")
    record = json.loads((tmp_path / "ds" / "records.jsonl").read_text().splitlines()[0])
    assert record["file"] == "images/val/cam1/b.jpg"
    convert(tmp_path / "ds", tmp_path / "one.json", dst_format="coco", images="copy")
    document = json.loads((tmp_path / "one.json").read_text())
    assert document["images"][0]["file_name"] == "cam1/b.jpg"
    assert (tmp_path / "images" / "cam1" / "b.jpg").is_file()  # beside the JSON
    assert validate_dataset(convert(tmp_path / "one.json", tmp_path / "again").root or "").ok


# --- YOLO: a reader from the Ultralytics and darknet specifications -------------------


def _yolo_lines(label_file: Path) -> list[tuple[float, ...]]:
    if not label_file.is_file():
        return []
    text = label_file.read_text()
    lines = [tuple(round(float(v), 5) for v in line.split()) for line in text.splitlines()]
    return sorted(line for line in lines if line)


def _ultralytics_label(image: Path) -> Path:
    text = image.as_posix()
    head, sep, tail = text.rpartition("/images/")
    return Path(f"{head}/labels/{tail}" if sep else text).with_suffix(".txt")


def _ultralytics_view(folder: Path) -> dict[str, Any]:
    """What Ultralytics' check_det_dataset and YOLODataset see (paths as it resolves
    them; CVAT's ``data/`` prefix in list files accepted)."""
    spec = yaml.safe_load((folder / "data.yaml").read_text())
    names = spec["names"]
    names = dict(enumerate(names)) if isinstance(names, list) else names
    base = folder / spec.get("path", ".")
    splits: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    for split in ("train", "val", "test"):
        values = spec.get(split)
        if not values:
            continue
        images: list[Path] = []
        for value in values if isinstance(values, list) else [values]:
            path = base / value
            if not path.exists() and value.startswith("../"):
                path = base / value[3:]
            if path.is_dir():
                images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGES)
            elif path.suffix == ".txt":
                for line in path.read_text().split():
                    images.append(base / line if (base / line).exists() else base / line[5:])
            elif path.is_file():
                images.append(path)
        if images:
            splits[split] = {p.name: _yolo_lines(_ultralytics_label(p)) for p in images}
    return {"names": {int(k): str(v) for k, v in names.items()}, "splits": splits}


def _darknet_view(folder: Path) -> dict[str, Any]:
    names = (folder / "obj.names").read_text().split()
    splits: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    for line in (folder / "obj.data").read_text().splitlines():
        key, _, value = (part.strip() for part in line.partition("="))
        if key in ("train", "valid", "test"):
            entries = (folder / value.removeprefix("data/")).read_text().split()
            images = [folder / e.removeprefix("data/") for e in entries]
            splits[key] = {p.name: _yolo_lines(p.with_suffix(".txt")) for p in images}
    return {"names": dict(enumerate(names)), "splits": splits}


@pytest.mark.parametrize(
    "name",
    [
        "yolo_ultralytics",
        "yolo_segments",
        "yolo_names_list",
        "yolo_list_file",
        "yolo_image_list",
        "yolo_pose",
        "yolo_roboflow",
    ],
)
def test_ultralytics_fixtures_round_trip(name: str, tmp_path: Path) -> None:
    source, back = _to_mlbook_and_back(name, "yolo", tmp_path)
    original, written = _ultralytics_view(source), _ultralytics_view(back)
    assert written["names"] == original["names"]
    for split, images in original["splits"].items():
        assert written["splits"][split] == images
        assert all((back / "images" / split / image).is_file() for image in images)


def test_roboflow_val_folder_is_found_where_roboflow_puts_it(tmp_path: Path) -> None:
    """data.yaml says `val: ../valid/images`, the folder is val/images: Ultralytics
    would stop; mlbook looks where Roboflow and Ultralytics put split folders."""
    dataset = convert(DATA / "yolo_roboflow", tmp_path / "ds")
    assert sorted({r.split or "" for r in dataset}) == ["train", "val"]


def test_darknet_fixture_round_trip(tmp_path: Path) -> None:
    source, back = _to_mlbook_and_back("yolo", "yolo", tmp_path, yolo_layout="darknet")
    assert _darknet_view(back) == _darknet_view(source)
    assert (back / "obj_train_data" / "1.jpg").is_file()


def test_segments_and_poses_are_read_as_such(tmp_path: Path) -> None:
    segments = convert(DATA / "yolo_segments", tmp_path / "seg")
    (record,) = list(segments)
    polygon = record.boxes[0].segmentation
    assert isinstance(polygon, list) and len(polygon[0]) == 6
    assert record.boxes[0].x1 == pytest.approx(0.1 * record.width)
    pose = convert(DATA / "yolo_pose", tmp_path / "pose")
    (record,) = list(pose)
    assert record.boxes[0].attributes["keypoints"] == [0.1, 0.2, 2, 0.3, 0.4, 2, 0.5, 0.6, 2]
    assert pose.info.attributes["yolo"] == {"kpt_shape": [3, 3]}


# --- Pascal VOC: a reader from the VOC specification ----------------------------------


def _flag(obj: ET.Element, tag: str) -> int | None:
    text = (obj.findtext(tag) or "").strip()
    return int(float(text)) if text else None


def _corners(element: ET.Element) -> tuple[float, ...]:
    return tuple(float(element.findtext(f"bndbox/{t}") or "nan") for t in CORNERS)


CORNERS = ("xmin", "ymin", "xmax", "ymax")


def _voc_object(obj: ET.Element) -> tuple[Any, ...]:
    return (
        obj.findtext("name"),
        _corners(obj),
        (obj.findtext("pose") or "").strip() or None,
        *(_flag(obj, t) for t in ("truncated", "difficult", "occluded")),
        tuple((part.findtext("name"), _corners(part)) for part in obj.findall("part")),
        tuple((action.tag, action.text) for action in obj.findall("actions/*")),
        tuple((a.findtext("name"), a.findtext("value")) for a in obj.iterfind("attributes/*")),
    )


def _voc_view(folder: Path) -> dict[str, Any]:
    annotations = folder / "Annotations"
    xml_files = sorted((annotations if annotations.is_dir() else folder).glob("*.xml"))
    files: dict[str, Any] = {}
    for xml_file in xml_files:
        root = ET.parse(xml_file).getroot()
        size = root.find("size")
        dims = (None, None)
        if size is not None:
            dims = tuple(int(size.findtext(t) or 0) or None for t in ("width", "height"))
        objects = [_voc_object(obj) for obj in root.findall("object")]
        files[xml_file.stem] = (root.findtext("filename"), dims, objects)
    splits = {}
    main = folder / "ImageSets" / "Main"
    for list_file in sorted(main.glob("*.txt")) if main.is_dir() else []:
        if "_" not in list_file.stem:
            splits[list_file.stem] = sorted(list_file.read_text().split())
    return {"files": files, "splits": splits}


@pytest.mark.parametrize("name", ["voc", "voc_datumaro_cvat", "voc_labelme2voc", "voc_labelimg"])
def test_voc_fixtures_round_trip(name: str, tmp_path: Path) -> None:
    source, back = _to_mlbook_and_back(name, "voc", tmp_path)
    original, written = _voc_view(source), _voc_view(back)
    files = original["files"]
    assert {key: value for key, value in written["files"].items() if key in files} == files
    listed = {image for ids in original["splits"].values() for image in ids}
    for key in set(written["files"]) - set(files):  # listed in a split, without an XML
        assert written["files"][key][2] == [] and key in listed
    for split, ids in original["splits"].items():
        assert written["splits"][split] == ids
    for filename, _, _ in written["files"].values():
        if any((source / folder / filename).is_file() for folder in ("JPEGImages", "")):
            assert (back / "JPEGImages" / filename).is_file()


def test_voc_class_lists_give_the_class_order(tmp_path: Path) -> None:
    labelme2voc = convert(DATA / "voc_labelme2voc", tmp_path / "a")
    assert labelme2voc.classes == ["_background_", "person", "potted plant", "tv/monitor"]
    cvat = convert(DATA / "voc_datumaro_cvat", tmp_path / "b")
    assert cvat.classes[:3] == ["background", "aeroplane", "bicycle"]
    assert {r.split for r in cvat} == {"trainval"}  # per-class lists are not splits
    b = next(r for r in cvat if r.id == "b")
    assert (b.width, b.height) == (None, None)  # no <size>
    assert b.boxes[0].attributes == {"truncated": 0, "occluded": 1, "difficult": 0}


def test_cvat_attributes_travel_both_ways(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "frame_000001.xml").write_text(
        "<annotation><filename>frame_000001.png</filename><object><name>car</name>"
        "<occluded>1</occluded><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax>"
        "<ymax>6</ymax></bndbox><attributes><attribute><name>color</name><value>red"
        "</value></attribute></attributes></object></annotation>"
    )
    convert(voc, tmp_path / "ds")
    convert(tmp_path / "ds", tmp_path / "back", dst_format="voc")
    assert _voc_view(tmp_path / "back")["files"] == _voc_view(voc)["files"]


# --- LabelMe: a reader from labelme's file layout -------------------------------------


def _labelme_view(folder: Path) -> dict[str, Any]:
    view = {}
    for json_file in sorted(folder.glob("*.json")):
        doc = json.loads(json_file.read_text())
        if doc["imageData"]:
            image = Image.open(io.BytesIO(base64.b64decode(doc["imageData"])))
        else:
            image = Image.open(folder / doc["imagePath"].replace("\\", "/"))
        shapes = sorted(
            json.dumps(
                {
                    "label": s["label"],
                    "points": [[round(c, 6) for c in p] for p in s["points"]],
                    "shape_type": s.get("shape_type") or "polygon",
                    "group_id": s.get("group_id"),
                    "description": s.get("description") or "",
                    "flags": s.get("flags") or {},
                },
                sort_keys=True,
            )
            for s in doc["shapes"]
        )
        pixels = np.asarray(image.convert("RGB")).tolist()
        view[json_file.stem] = (doc["flags"], shapes, doc["imageWidth"], doc["imageHeight"], pixels)
    return view


@pytest.mark.parametrize("name", ["labelme", "labelme_shapes"])
def test_labelme_fixtures_round_trip(name: str, tmp_path: Path) -> None:
    source, back = _to_mlbook_and_back(name, "labelme", tmp_path)
    assert _labelme_view(back) == _labelme_view(source)


def test_labelme_embedded_image_becomes_a_file(tmp_path: Path) -> None:
    dataset = convert(DATA / "labelme_shapes", tmp_path / "ds")
    (record,) = list(dataset)
    assert record.file == "road_0007.png"  # imagePath left the folder; the image is embedded
    assert (tmp_path / "ds" / "road_0007.png").is_file()
    circle = next(b for b in record.boxes if b.name == "wheel")
    assert (circle.x1, circle.y1, circle.x2, circle.y2) == (17.0, 5.0, 23.0, 11.0)
    assert record.labels == ["outdoor"]
