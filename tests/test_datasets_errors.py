"""Bad dataset input: one clear error (exit 1 from the CLI), every problem listed,
nothing half-written, and no path that leaves the dataset directory."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from mlbook.cli import cli
from mlbook.datasets import Box, Dataset, Record, open_dataset
from mlbook.datasets.convert import convert, read_dataset, write_dataset
from mlbook.datasets.formats._common import Output
from mlbook.datasets.problems import ErrorPolicy, path_problem
from mlbook.datasets.validate import validate_dataset
from mlbook.errors import BadRecordsError, DatasetError

DATA = Path(__file__).parent / "data"
DEEP = b"[" * 100_000 + b"]" * 100_000


def _convert(*args: str) -> tuple[int, str]:
    """Run ``mlbook data convert ARGS`` in-process: exit code and combined output."""
    result = CliRunner().invoke(cli, ["data", "convert", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def _error_line(output: str) -> str:
    """The CLI's error, checked to be one ``error: ...`` line with no traceback."""
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def _records(
    root: Path, lines: Iterable[str | bytes], info: dict[str, object] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines)
    (root / "records.jsonl").write_bytes(data)
    if info is not None:
        (root / "dataset.json").write_text(json.dumps(info))
    return root


def _coco(tmp_path: Path, change: dict[str, object] | None = None) -> Path:
    document = json.loads((DATA / "coco/annotations/instances_val.json").read_text())
    document.update(change or {})
    path = tmp_path / "coco" / "instances_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


# --- JSON nested 100,000 deep -------------------------------------------------------


def test_deep_json_in_records_is_one_problem(tmp_path: Path) -> None:
    root = _records(
        tmp_path / "ds", [b'{"id": "1", "file": "a.jpg", "attributes": {"x": ' + DEEP + b"}}"]
    )
    with pytest.raises(BadRecordsError) as info:
        open_dataset(root)
    assert str(info.value) == f"{root}/records.jsonl:1: JSON nested too deeply to read"
    (problem,) = validate_dataset(root, check_files=False).problems
    assert problem.line == 1 and problem.message == "JSON nested too deeply to read"
    code, output = _convert(str(root), str(tmp_path / "out"))
    assert code == 1
    assert _error_line(output) == f"error: {root}/records.jsonl:1: JSON nested too deeply to read"
    assert not (tmp_path / "out").exists()


def test_deep_json_array_and_dataset_json(tmp_path: Path) -> None:
    root = tmp_path / "arr"
    root.mkdir()
    (root / "records.json").write_bytes(DEEP)
    with pytest.raises(BadRecordsError, match=r"records\.json: JSON nested too deeply to read"):
        open_dataset(root)
    deep_info = _records(tmp_path / "info", ['{"id": "1", "file": "a.jpg"}'])
    (deep_info / "dataset.json").write_bytes(b'{"name": "x", "attributes": {"a": ' + DEEP + b"}}")
    code, output = _convert(str(deep_info), str(tmp_path / "out"))
    assert code == 1
    assert _error_line(output) == (
        f"error: {deep_info}/dataset.json: JSON nested too deeply to read"
    )


def test_deep_json_in_coco_and_labelme(tmp_path: Path) -> None:
    coco = tmp_path / "instances_val.json"
    coco.write_bytes(b'{"images": [], "info": {"a": ' + DEEP + b"}}")
    code, output = _convert(str(coco), str(tmp_path / "out"), "--from", "coco")
    assert code == 1
    assert _error_line(output) == (
        f"error: {coco}: not COCO instances: JSON nested too deeply to read"
    )
    labelme = tmp_path / "lm"
    labelme.mkdir()
    (labelme / "a.json").write_bytes(
        b'{"shapes": [], "imagePath": "a.jpg", "flags": {"x": ' + DEEP + b"}}"
    )
    code, output = _convert(str(labelme), str(tmp_path / "out"), "--from", "labelme")
    assert code == 1
    assert _error_line(output) == (
        f"error: {labelme}/a.json: not LabelMe JSON: JSON nested too deeply to read"
    )


# --- files that are not what they should be ---------------------------------------


def test_records_file_that_is_a_directory_or_missing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "records.jsonl").mkdir(parents=True)
    with pytest.raises(DatasetError) as info:
        open_dataset(root)
    assert str(info.value) == f"{root}/records.jsonl: is a directory, not a records file"
    result = CliRunner().invoke(cli, ["data", "validate", str(root)])
    assert result.exit_code == 1
    assert (
        _error_line(result.output)
        == f"error: {root}/records.jsonl: is a directory, not a records file"
    )
    only_info = tmp_path / "info"
    only_info.mkdir()
    (only_info / "dataset.json").write_text('{"name": "x"}')
    with pytest.raises(DatasetError, match=r"records.jsonl: no records file; write records.jsonl"):
        open_dataset(only_info)
    (only_info / "dataset.json").unlink()
    (only_info / "dataset.json").mkdir()
    with pytest.raises(
        DatasetError, match=r"dataset.json: is a directory, not a dataset description"
    ):
        open_dataset(only_info)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_records_file(tmp_path: Path) -> None:
    root = _records(tmp_path / "ds", ['{"id": "1", "file": "a.jpg"}'])
    (root / "records.jsonl").chmod(0)
    with pytest.raises(DatasetError, match=r"cannot read the records file \(permission denied\)"):
        open_dataset(root)


def test_non_utf8_yolo_and_csv(tmp_path: Path) -> None:
    yolo = tmp_path / "yolo"
    shutil.copytree(DATA / "yolo", yolo)
    (yolo / "obj.names").write_bytes(b"label_0\nlabel_1\n\xff\xfeoops\n")
    code, output = _convert(str(yolo), str(tmp_path / "out"), "--from", "yolo")
    assert code == 1
    assert _error_line(output) == (
        f"error: {yolo}/obj.names:3: not UTF-8 text (byte 0xff at column 1); save the file as UTF-8"
    )
    shutil.copy(DATA / "yolo" / "obj.names", yolo / "obj.names")
    (yolo / "obj_train_data" / "1.txt").write_bytes(b"0 0.5 0.5 0.1 0.1\n1 0.5\xe9 0.5 0.1 0.1\n")
    code, output = _convert(str(yolo), str(tmp_path / "out"), "--from", "yolo")
    assert code == 1
    assert _error_line(output) == (
        f"error: {yolo}/obj_train_data/1.txt:2: not UTF-8 text (byte 0xe9 at column 6); "
        "save the file as UTF-8"
    )
    table = tmp_path / "boxes.csv"
    table.write_bytes(b"file,name,x1,y1,x2,y2\na.jpg,car,1,1,2,2\nb\xff.jpg,car,1,1,2,2\n")
    code, output = _convert(str(table), str(tmp_path / "out"))
    assert code == 1
    assert _error_line(output) == (
        f"error: {table}:3: not UTF-8 text (byte 0xff at column 2); save the file as UTF-8"
    )


def test_csv_field_over_128_kb(tmp_path: Path) -> None:
    table = tmp_path / "boxes.csv"
    table.write_text("file,split\na.jpg,train\nb.jpg," + "x" * 200_000 + "\n")
    code, output = _convert(str(table), str(tmp_path / "out"))
    assert code == 1
    assert _error_line(output) == (
        f"error: {table}:3: not readable as CSV: a value longer than 131072 characters; "
        "is this really a CSV file?"
    )


# --- a full disk while writing -----------------------------------------------------


class FullDisk(Output):
    """An output whose disk fills up after ``room`` files, half-way through the next."""

    room = 1

    def write(self, relative: str, data: bytes | Iterable[bytes]) -> None:
        self.written = getattr(self, "written", 0)
        if self.written < self.room:
            self.written += 1
            super().write(relative, data)
            return
        blob = data if isinstance(data, bytes) else b"".join(data)
        (self.stage / relative).parent.mkdir(parents=True, exist_ok=True)
        with open(self.stage / relative, "wb") as handle:
            handle.write(blob[: len(blob) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.stage / relative))


class FullDiskAtOnce(FullDisk):
    """An output whose disk is full from the first file."""

    room = 0


@pytest.mark.parametrize(
    ("fmt", "name", "failing"),
    [
        ("mlbook", "ds", "dataset.json"),
        ("coco", "coco", "annotations/instances_val.json"),
        ("voc", "voc", "Annotations/40.xml"),
        ("yolo", "yolo", "labels/val/b.txt"),
        ("labelme", "labelme", "40.json"),
        ("csv", "out.csv", "out.csv"),
    ],
)
def test_full_disk_leaves_no_output(tmp_path: Path, fmt: str, name: str, failing: str) -> None:
    dataset = read_dataset(DATA / "coco", "coco")
    target = tmp_path / "new" / name
    full = FullDiskAtOnce if fmt == "csv" else FullDisk  # CSV writes a single file
    with pytest.raises(DatasetError) as info:
        write_dataset(dataset, target, fmt, output=full)
    assert str(info.value) == (
        f"{target}: cannot write {failing}: No space left on device; nothing was written "
        "(free some space and run again)"
    )
    assert not (tmp_path / "new").exists()  # not even the parent it had to create


def test_full_disk_keeps_an_existing_output(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    convert(DATA / "coco", target)
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    with pytest.raises(DatasetError, match="No space left on device; nothing was written"):
        convert(DATA / "coco", target, output=FullDisk)
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))


def test_cli_write_failure_from_the_os_is_one_line(tmp_path: Path) -> None:
    """A real write error (files over RLIMIT_FSIZE fail with EFBIG): exit 1, one line."""
    target = tmp_path / "ds"
    command = ["data", "convert", str(DATA / "coco"), str(target), "--images", "copy", "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "mlbook", *command],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_limit_file_size,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        f"error: {target}: cannot write images/train/a.jpg: File too large; nothing was written\n"
    )
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


# --- values and geometry refused at read -------------------------------------------


def test_nan_and_inf_coordinates_are_refused(tmp_path: Path) -> None:
    table = tmp_path / "boxes.csv"
    table.write_text("file,name,x1,y1,x2,y2\na.jpg,car,nan,1,2,2\nb.jpg,car,1,1,inf,2\n")
    with pytest.raises(BadRecordsError) as info:
        read_dataset(table)
    assert [str(p) for p in info.value.problems] == [
        f"{table}:2: x1: not a finite number ('nan')",
        f"{table}:3: x2: not a finite number ('inf')",
    ]
    voc = tmp_path / "voc"
    shutil.copytree(DATA / "voc", voc)
    xml = voc / "Annotations" / "2007_000001.xml"
    xml.write_text(xml.read_text().replace("<xmin>1</xmin>", "<xmin>NaN</xmin>", 1))
    with pytest.raises(BadRecordsError, match=r"xmin: not a finite number \('NaN'\)"):
        read_dataset(voc, "voc")
    yolo = tmp_path / "yolo"
    shutil.copytree(DATA / "yolo", yolo)
    (yolo / "obj_train_data" / "1.txt").write_text("0 nan 0.5 0.1 0.1\n")
    with pytest.raises(BadRecordsError, match=r"1.txt:1: not finite numbers: '0 nan 0.5 0.1 0.1'"):
        read_dataset(yolo, "yolo")
    native = _records(tmp_path / "ds", ['{"id": "1", "file": "a.jpg", "width": 1e999}'])
    with pytest.raises(BadRecordsError, match=r"records.jsonl:1: bad JSON: number out of range"):
        open_dataset(native)


def test_bad_coco_is_listed_in_full_and_not_converted(tmp_path: Path) -> None:
    document = json.loads((DATA / "coco/annotations/instances_val.json").read_text())
    image = document["images"][0]  # id 40, 5 x 10
    document["images"].append(dict(image))  # duplicate image id
    document["images"].append({"id": 41, "file_name": "c.jpg", "width": -5, "height": 10})
    document["categories"].append({"id": 1, "name": "again"})  # duplicate category id
    anns = document["annotations"]
    anns[0]["bbox"] = [-1, 0, 2, 2]  # negative
    anns[1]["bbox"] = [0, 0, 9, 2]  # outside the 5-pixel-wide image
    anns.append({"id": 7, "image_id": 41, "category_id": 2, "bbox": [1, 1, 0, 2]})  # x1 >= x2
    anns.append({"id": 8, "image_id": 41, "category_id": 2, "bbox": [1, 1, 1, 1],
                 "segmentation": {"counts": [0, 20, 31], "size": [10, 5]}})  # fmt: skip
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(document))
    code, output = _convert(str(path), str(tmp_path / "out"), "--from", "coco")
    assert code == 1 and "Traceback" not in output
    assert output.splitlines() == [
        f"error: {path}: 7 problem(s) in 2 record(s)",
        f"  {path}: categories[3].id: duplicate category id 1 (first at categories[0]); "
        "give each category its own id",
        f"  {path}: images[1].id: duplicate image id 40 (first at images[0]); "
        "give each image its own id",
        f"  {path}: images[2].width: must be positive (-5)",
        f"  {path}: annotations[0].bbox: outside the image (x1=-1, y1=0)",
        f"  {path}: annotations[1].bbox: outside the image (x=9 > width 5)",
        f"  {path}: annotations[2].bbox: x1 >= x2 (1 >= 1)",
        f"  {path}: annotations[3].segmentation: malformed RLE: counts add up to 51, not 50",
    ]
    assert not (tmp_path / "out").exists()


def test_ragged_csv_and_one_point_circle(tmp_path: Path) -> None:
    table = tmp_path / "boxes.csv"
    table.write_text(
        "file,name,x1,y1,x2,y2\na.jpg,car,1,1,2,2\nb.jpg,car,1,1,2\nc.jpg,car,1,1,2,2,9\n"
    )
    with pytest.raises(BadRecordsError) as info:
        read_dataset(table)
    assert [str(p) for p in info.value.problems] == [
        f"{table}:3: 5 values for 6 columns; quote values that hold commas",
        f"{table}:4: 7 values for 6 columns; quote values that hold commas",
    ]
    folder = tmp_path / "lm"
    folder.mkdir()
    doc = {"shapes": [{"label": "ball", "points": [[3, 4]], "shape_type": "circle"}],
           "imagePath": "a.jpg", "imageWidth": 10, "imageHeight": 10}  # fmt: skip
    (folder / "a.json").write_text(json.dumps(doc))
    code, output = _convert(str(folder), str(tmp_path / "out"), "--from", "labelme")
    assert code == 1
    assert _error_line(output) == (
        f"error: {folder}/a.json: shapes[0].points: a circle needs a centre and a point on "
        "the circle, got 1 point(s)"
    )


def test_open_dataset_is_strict_and_lists_everything(tmp_path: Path) -> None:
    root = _records(
        tmp_path / "ds",
        [
            '{"id": "1", "file": "a.jpg", "width": -64, "height": 48}',
            '{"id": "1", "file": "b.jpg"}',
            '{"id": "3", "file": "../../../../etc/passwd"}',
            '{"id": "4", "file": "c.jpg", "labels": ["truck"]}',
            '{"id": "5", "file": "d.jpg", "width": 10, "height": 10, '
            '"boxes": [{"name": "car", "x1": 5, "y1": 1, "x2": 5, "y2": 2}]}',
        ],
        {"name": "ds", "classes": [{"id": 0, "name": "car"}]},
    )
    with pytest.raises(BadRecordsError) as info:
        open_dataset(root)
    rel = f"{root}/records.jsonl"
    assert str(info.value).splitlines() == [
        f"{rel}: 5 problem(s) in 5 record(s)",
        f"  {rel}:1: width: must be positive (-64)",
        f"  {rel}:2: id: duplicate id ('1', first at line 1)",
        f"  {rel}:3: file: path leaves the dataset directory ('../../../../etc/passwd'); "
        "give a path relative to the dataset directory, inside it",
        f"  {rel}:4: labels[0]: unknown class ('truck')",
        f"  {rel}:5: boxes[0].x1: x1 >= x2 (5 >= 5)",
    ]
    assert validate_dataset(root, check_files=False).problems == info.value.problems


def test_dataset_json_with_duplicate_classes_is_refused(tmp_path: Path) -> None:
    info = {"name": "x", "classes": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]}
    root = _records(tmp_path / "ds", ['{"id": "1", "file": "a.jpg"}'], info)
    with pytest.raises(BadRecordsError, match=r"classes\[0\].id: duplicate \(0\)"):
        open_dataset(root)


# --- paths stay inside ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty path"),
        (".", "path names the dataset directory itself ('.')"),
        ("a/..", "path names the dataset directory itself ('a/..')"),
        ("../a.jpg", "path leaves the dataset directory ('../a.jpg')"),
        ("a/../../b.jpg", "path leaves the dataset directory ('a/../../b.jpg')"),
        ("/etc/passwd", "absolute path ('/etc/passwd')"),
        ("C:/x.jpg", "absolute path ('C:/x.jpg')"),
        ("..\\x.jpg", "path uses '\\' ('..\\\\x.jpg'); separate folders with '/'"),
        ("a\x00.jpg", "path contains a NUL character ('a\\x00.jpg')"),
    ],
)
def test_path_problems(path: str, problem: str) -> None:
    text = path_problem(path)
    assert text is not None and text.startswith(problem)


@pytest.mark.parametrize(
    "path", ["a.jpg", "images/train/a.jpg", "./a.jpg", "a/../b.jpg", "é/ b.jpg"]
)
def test_paths_inside_are_fine(path: str) -> None:
    assert path_problem(path) is None


def test_record_paths_that_escape_are_refused(tmp_path: Path) -> None:
    root = _records(
        tmp_path / "ds",
        [
            '{"id": "1", "file": "../../../../etc/passwd"}',
            '{"id": "2", "file": "/etc/passwd"}',
            '{"id": "3", "file": ""}',
            '{"id": "4", "file": "a.jpg", "mask": "../m.png"}',
        ],
    )
    fields = [(p.line, p.field) for p in validate_dataset(root, check_files=False).problems]
    assert fields == [(1, "file"), (2, "file"), (3, "file"), (4, "mask")]
    with pytest.raises(BadRecordsError, match=r"4 problem\(s\) in 4 record\(s\)"):
        open_dataset(root)
    dataset = Dataset.from_records([Record(id="1", file="../x.jpg")], root=tmp_path)
    with pytest.raises(DatasetError, match="path leaves the dataset directory"):
        dataset.path_of("../x.jpg")
    with pytest.raises(BadRecordsError, match=r"record 1: file: path leaves"):
        dataset.save(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_converters_refuse_paths_from_annotation_files_that_escape(tmp_path: Path) -> None:
    coco = _coco(tmp_path, None)
    document = json.loads(coco.read_text())
    document["images"][0]["file_name"] = "../../../../etc/passwd"
    coco.write_text(json.dumps(document))
    with pytest.raises(BadRecordsError, match=r"images\[0\].file_name: path leaves the dataset"):
        read_dataset(coco, "coco")
    labelme = tmp_path / "lm"
    labelme.mkdir()
    doc = {"shapes": [], "imagePath": "../../etc/passwd"}
    (labelme / "a.json").write_text(json.dumps(doc))
    with pytest.raises(BadRecordsError, match=r"a.json: imagePath: path leaves the dataset"):
        read_dataset(labelme, "labelme")
    voc = tmp_path / "voc"
    shutil.copytree(DATA / "voc", voc)
    xml = voc / "Annotations" / "2007_000001.xml"
    xml.write_text(xml.read_text().replace("2007_000001.jpg", "../../../etc/passwd"))
    with pytest.raises(BadRecordsError, match=r"2007_000001.xml: filename: path leaves"):
        read_dataset(voc, "voc")
    yolo = tmp_path / "yolo"
    shutil.copytree(DATA / "yolo", yolo)
    (yolo / "train.txt").write_text("/etc/passwd\n")
    with pytest.raises(BadRecordsError, match=r"train.txt:1: absolute path \('/etc/passwd'\)"):
        read_dataset(yolo, "yolo")
    table = tmp_path / "boxes.csv"
    table.write_text("file,name\n../secret.jpg,car\n")
    with pytest.raises(BadRecordsError, match=r"boxes.csv:2: file: path leaves the dataset"):
        read_dataset(table)


def test_converted_datasets_carry_their_images(tmp_path: Path) -> None:
    convert(DATA / "coco", tmp_path / "ds")
    dataset = open_dataset(tmp_path / "ds")
    assert sorted(r.file for r in dataset) == ["images/train/a.jpg", "images/val/b.jpg"]
    assert validate_dataset(tmp_path / "ds").ok  # the files are inside ds/
    convert(tmp_path / "ds", tmp_path / "copy", images="copy")
    copied = tmp_path / "copy" / "images" / "val" / "b.jpg"
    assert copied.read_bytes() == (DATA / "coco/images/val/b.jpg").read_bytes()
    assert copied.stat().st_nlink == 1  # a copy, not a link
    linked = tmp_path / "ds" / "images" / "val" / "b.jpg"
    assert linked.stat().st_ino == (DATA / "coco/images/val/b.jpg").stat().st_ino or (
        linked.stat().st_dev != (DATA / "coco/images/val/b.jpg").stat().st_dev
    )  # a hard link, unless the test data is on another filesystem


# --- every problem, the fail and skip policies ---------------------------------------


def test_at_most_50_problems_are_shown(tmp_path: Path) -> None:
    lines = [f'{{"id": "{i}", "file": "a.jpg", "width": 0}}' for i in range(120)]
    root = _records(tmp_path / "ds", lines)
    code, output = _convert(str(root), str(tmp_path / "out"))
    assert code == 1
    shown = output.splitlines()
    assert shown[0] == (
        f"error: {root}/records.jsonl: 120 problem(s) in 120 record(s); nothing was written; "
        "fix them, or convert the good records with --on-error skip"
    )
    assert shown[1] == f"  {root}/records.jsonl:1: width: must be positive (0)"
    assert len(shown) == 52 and shown[-1] == "  ... and 70 more"
    assert not (tmp_path / "out").exists()


def test_skip_writes_the_good_records_and_counts_the_rest(tmp_path: Path) -> None:
    table = tmp_path / "boxes.csv"
    table.write_text(
        "file,width,height,name,x1,y1,x2,y2\n"
        "a.jpg,10,10,car,1,1,5,5\n"
        "b.jpg,10,10,car,1,1,50,5\n"
        "c.jpg,10,10,car,1,1,5,5\n"
        "c.jpg,10,10,car,x,1,5,5\n"
    )
    result = CliRunner().invoke(
        cli, ["data", "convert", str(table), str(tmp_path / "out"), "--on-error", "skip"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"converted 1 records, 1 boxes, 1 classes -> {tmp_path / 'out'} (mlbook)",
        f"warning: skipped 2 bad record(s) of {table} (2 problem(s)):",
        f"  {table}:3: x1..y2: outside the image (x=50 > width 10)",
        f"  {table}:5: x1: not a number ('x')",
    ]
    assert [r.file for r in open_dataset(tmp_path / "out")] == ["a.jpg"]
    policy = ErrorPolicy("skip")
    dataset = read_dataset(table, policy=policy)
    assert len(dataset) == 1 and policy.skipped == 2 and len(policy.problems) == 2


def test_skip_still_fails_on_problems_with_the_whole_input(tmp_path: Path) -> None:
    coco = _coco(tmp_path, {"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]})
    with pytest.raises(BadRecordsError, match="duplicate category id 1") as info:
        read_dataset(coco, "coco", policy=ErrorPolicy("skip"))
    assert "--on-error skip" not in str(info.value)


# --- XML through a hardened parser ----------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>a.jpg</filename><object><name>&lol9;</name></object></annotation>
"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<annotation><filename>&secret;</filename></annotation>
"""


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["laughs", "external"])
def test_xml_bombs_are_refused_with_one_line(tmp_path: Path, xml: str) -> None:
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text(xml)
    code, output = _convert(str(voc), str(tmp_path / "out"), "--from", "voc")
    assert code == 1
    assert _error_line(output) == (
        f"error: {voc}/Annotations/a.xml: XML with a DOCTYPE, entities or external references "
        "is refused (they can expand without bound or read other files); remove the "
        "<!DOCTYPE ...> part"
    )


def test_voc_written_by_labelme2voc_with_empty_flags(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height>"
        "</size><object><name>dog</name><pose/><truncated/><difficult/>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax><ymax>6</ymax></bndbox>"
        "</object></annotation>"
    )
    (record,) = list(read_dataset(voc, "voc"))
    assert record.boxes == [Box(name="dog", x1=1, y1=2, x2=5, y2=6)]  # empty tags left out


def test_writers_never_write_outside_their_target(tmp_path: Path) -> None:
    records = [
        Record(id="../../escaped", file="a.jpg", width=4, height=4, split="train"),
        Record(id="ok", file="b.jpg", width=4, height=4, split="../up"),
    ]
    dataset = Dataset.from_records(records, root=tmp_path)
    with pytest.raises(BadRecordsError) as info:
        write_dataset(dataset, tmp_path / "voc", "voc")
    assert [(p.record, p.field) for p in info.value.problems] == [(1, "id"), (2, "split")]
    with pytest.raises(BadRecordsError, match=r"split: cannot be used as a file name"):
        write_dataset(dataset, tmp_path / "yolo", "yolo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_output_over_a_file_or_an_older_output(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    code, output = _convert(str(DATA / "coco"), str(tmp_path / "taken"))
    assert code == 1
    assert _error_line(output) == (
        f"error: {tmp_path / 'taken'}: exists and is not a directory; choose another output"
    )
    target = tmp_path / "ds"
    convert(DATA / "coco", target, images="copy")
    stale = target / "images" / "val" / "b.jpg"
    stale.write_bytes(b"stale")
    convert(DATA / "coco", target)  # again: every file replaced, the image relinked
    assert stale.read_bytes() == (DATA / "coco/images/val/b.jpg").read_bytes()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    open_dataset(target).save()  # in place: nothing to bring along, nothing lost
    assert validate_dataset(target).ok


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("names: [a, b\ntrain: images",
         "data.yaml:2: not valid YAML: expected ',' or ']', but got ':'"),
        ("train: images/train\n", "data.yaml: no `names` (nor `nc`); list the class names"),
        ("nc: 3\nnames: [a, b]\n", "data.yaml: `nc: 3` but `names` has 2 names"),
        ("names: [a, a]\n", "data.yaml: `names` lists a name twice; give each class its own name"),
        ("names: {x: a}\n", "data.yaml: `names` key 'x' is not a class index (0, 1, ...)"),
        ("names: [a]\ntrain: !!python/object/apply:os.system [echo hi]\n",
         "data.yaml:2: not valid YAML: could not determine a constructor for the tag"),
        ("names: [a]\ntrain: /etc\n", "data.yaml: train: absolute path ('/etc'), and no such path "
         "inside the dataset folder; give a path relative to it; fix or remove `train:`"),
        ("names: [a]\nval: ../../elsewhere\n", "data.yaml: val: path leaves the dataset "
         "directory ('../../elsewhere'); give a path relative to the dataset directory, inside "
         "it; fix or remove `val:`"),
        ("a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nnames: [*c, *c]\n",
         "data.yaml: `names[0]` is not a name"),
        ("names: " + "[" * 200 + "]" * 200 + "\n", "data.yaml: YAML nested too deeply to read"),
    ],
)  # fmt: skip
def test_bad_data_yaml_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(BadRecordsError) as info:
        read_dataset(tmp_path, "yolo")
    assert str(info.value).replace(f"{tmp_path}/", "").startswith(message)
    assert "\n" not in str(info.value)


def test_bad_ultralytics_labels_are_listed(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: {0: car}\n")
    Image.new("RGB", (10, 10)).save(_mkdir(tmp_path / "images/train") / "a.png")
    (_mkdir(tmp_path / "labels/train") / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.2\n3 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.5 0.1 nan 0.5\n"
        "0 0.1 0.1 0.9 0.1 0.9 1.5\n"
    )
    with pytest.raises(BadRecordsError) as info:
        read_dataset(tmp_path, "yolo")
    texts = [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems]
    assert texts == [
        "labels/train/a.txt:2: expected `class cx cy w h` or a polygon "
        "`class x1 y1 x2 y2 x3 y3 ...`, got '0 0.1 0.1 0.2'",
        "labels/train/a.txt:3: class 3 is not in the class names (0..0)",
        "labels/train/a.txt:4: not finite numbers: '0 0.1 0.1 0.5 0.1 nan 0.5'",
        "labels/train/a.txt:5: outside the image (y=15 > height 10)",
    ]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
