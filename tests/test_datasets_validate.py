"""Validation reports every problem in one pass, as file:line: field: problem (value)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.datasets.validate import validate_dataset

INFO = {"name": "v", "classes": [{"id": 0, "name": "car"}, {"id": 1, "name": "bike"}]}
RECORDS = """\
{"id": "1", "file": "a.jpg", "width": 40, "height": 40, "labels": "car", "counts": [{"car": 2}, {"bike": 1}], "boxes": [{"name": "bike", "x1": 42, "x2": 33, "y1": 67, "y2": 53}]}
{"id": "1", "file": "b.jpg", "labels": ["truck"]}
{"id": 3, "file":
{"id": 4, "file": "a.jpg", "width": "big", "counts": {"bus": -1}}
{"id": 5, "file": "a.jpg", "mask": "m.png", "lables": 1}
{"id": 6, "file": "a.jpg", "width": 10, "height": 10, "boxes": [{"name": "car", "x1": -1, "y1": 0, "x2": 5, "y2": 11}]}
{"id": 7, "file": "a.jpg", "width": 10, "height": 10, "counts": {"car": 1}, "boxes": [{"name": "car", "x1": 1, "y1": 1, "x2": 5, "y2": 5}]}
"""  # noqa: E501

EXPECTED = [
    "records.jsonl:1: boxes[0].x1: x1 >= x2 (42 >= 33)",
    "records.jsonl:1: boxes[0].y1: y1 >= y2 (67 >= 53)",
    "records.jsonl:1: boxes[0]: outside the image (x=42 > width 40; y=67 > height 40)",
    "records.jsonl:1: counts.car: disagrees with the boxes (2 counted, 0 boxes)",
    "records.jsonl:2: id: duplicate id ('1', first at line 1)",
    "records.jsonl:2: labels[0]: unknown class ('truck')",
    "records.jsonl:2: file: image file not found ('b.jpg')",
    "records.jsonl:3: bad JSON at column 18: the line ends inside an object, list or string",
    "records.jsonl:4: width: expected `int | null`, got `str` ('big')",
    "records.jsonl:4: counts.bus: unknown class ('bus')",
    "records.jsonl:4: counts.bus: negative count (-1)",
    "records.jsonl:5: lables: unknown field (put free data under `attributes`)",
    "records.jsonl:5: mask: mask file not found ('m.png')",
    "records.jsonl:6: boxes[0]: outside the image (x1=-1, y1=0; y=11 > height 10)",
]


def _write(root: Path, records: str = RECORDS, info: dict[str, object] = INFO) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(info))
    (root / "records.jsonl").write_text(records)
    (root / "a.jpg").write_bytes(b"")
    return root


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    report = validate_dataset(_write(tmp_path / "ds"))
    texts = [str(p).replace(str(tmp_path / "ds") + "/", "") for p in report.problems]
    assert texts == EXPECTED
    assert report.records == 6 and not report.ok


def test_clean_dataset_and_skipping_files(tmp_path: Path) -> None:
    root = _write(tmp_path / "ok", '{"id": "1", "file": "missing.jpg", "labels": "car"}\n')
    assert not validate_dataset(root).ok
    assert validate_dataset(root, check_files=False).ok


def test_json_array_positions_and_bad_dataset_json(tmp_path: Path) -> None:
    root = tmp_path / "arr"
    root.mkdir()
    (root / "dataset.json").write_text(
        '{"name": "x", "classes": [{"id": 0, "name": "a"}, {"id": 0, "name": "a"}]}'
    )
    (root / "records.json").write_text(
        '[{"id": 1, "file": "f"}, {"id": 1, "file": "f", "labels": 3}]'
    )
    texts = [str(p).replace(str(root) + "/", "") for p in validate_dataset(root, False).problems]
    assert texts == [
        "dataset.json: classes[0].name: duplicate ('a')",
        "dataset.json: classes[0].id: duplicate (0)",
        "dataset.json: classes[1].name: duplicate ('a')",
        "dataset.json: classes[1].id: duplicate (0)",
        "records.json: record 2: labels: expected `str | array`, got `int` (3)",
        "records.json: record 2: id: duplicate id ('1', first at record 1)",
    ]
    (root / "records.json").write_text('[{"id": 1, "file": "f"}, {"id": 1,')
    problems = validate_dataset(root, False).problems
    assert str(problems[-1]).endswith("the line ends inside an object, list or string")


def test_large_file_with_errors_does_not_stop(tmp_path: Path) -> None:
    good = '{"id": "%d", "file": "a.jpg", "width": 50, "height": 50, "boxes": [{"name": "car", "x1": 1, "y1": 1, "x2": 9, "y2": 9}]}\n'  # noqa: E501
    bad = '{"id": "%d", "file": "a.jpg", "boxes": [{"name": "bike", "x1": 42, "x2": 33, "y1": 67, "y2": 53}]}\n'  # noqa: E501
    lines = [(bad if i % 10 == 0 else good) % i for i in range(100_000)]
    lines[500] = "{not json\n"
    root = _write(tmp_path / "big", "".join(lines))
    report = validate_dataset(root)  # its speed is benchmarks/' business, not a test's
    assert report.records == 99_999
    assert len(report.problems) == 1 + 2 * 9_999
    assert str(report.problems[100]).endswith(
        "records.jsonl:501: bad JSON at column 2: json is malformed: object keys must be strings"
    )


def test_cli_validate_text_and_json(tmp_path: Path) -> None:
    root = _write(tmp_path / "ds")
    result = CliRunner().invoke(cli, ["data", "validate", str(root)])
    assert result.exit_code == 1
    lines = result.output.replace(str(root) + "/", "").splitlines()
    assert lines[:-1] == EXPECTED
    assert lines[-1] == f"14 problem(s) in {root} (6 records parsed)"
    result = CliRunner().invoke(cli, ["data", "validate", str(root), "--format", "json"])
    assert result.exit_code == 1
    payload = json.loads(result.output)
    assert payload["ok"] is False and len(payload["problems"]) == 14
    assert payload["problems"][0]["field"] == "boxes[0].x1"
    ok = _write(tmp_path / "ok", '{"id": "1", "file": "a.jpg"}\n')
    result = CliRunner().invoke(cli, ["data", "validate", str(ok)])
    assert result.exit_code == 0 and result.output == "valid: 1 records, no problems\n"


def test_cli_validate_missing_records_is_one_error_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mlbook", "data", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    expected = "no records file; expected records.jsonl or records.json"
    assert proc.stderr == f"error: {tmp_path}/records.jsonl: {expected}\n"
