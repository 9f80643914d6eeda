"""Records that are numbers, not images: inline `features`, rows of .npy/.csv/.parquet
tables, `mlbook data convert table.csv --label`, samples and the torch loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.datasets import Dataset, Record, open_dataset
from mlbook.datasets.convert import convert, read_dataset, write_dataset
from mlbook.datasets.metadata import TableRef
from mlbook.datasets.validate import validate_dataset
from mlbook.errors import BadRecordsError, DatasetError

IRIS = """\
sepal_length,sepal_width,petal_length,petal_width,species
5.1,3.5,1.4,0.2,setosa
4.9,3.0,1.4,0.2,setosa
7.0,3.2,4.7,1.4,versicolor
6.4,3.2,4.5,1.5,versicolor
6.3,3.3,6.0,2.5,virginica
5.8,2.7,5.1,1.9,virginica
"""


def _iris(tmp_path: Path) -> Path:
    (tmp_path / "iris.csv").write_text(IRIS)
    return tmp_path / "iris.csv"


def test_csv_table_becomes_a_dataset_of_features(tmp_path: Path) -> None:
    dataset = convert(_iris(tmp_path), tmp_path / "Datasets" / "iris", label="species")
    assert dataset.classes == ["setosa", "versicolor", "virginica"]
    first = json.loads((tmp_path / "Datasets/iris/records.jsonl").read_text().splitlines()[0])
    assert first == {"id": "0", "features": [5.1, 3.5, 1.4, 0.2], "labels": ["setosa"]}
    info = json.loads((tmp_path / "Datasets/iris/dataset.json").read_text())
    assert info["attributes"]["feature_names"] == [
        "sepal_length", "sepal_width", "petal_length", "petal_width"
    ]  # fmt: skip
    assert validate_dataset(tmp_path / "Datasets" / "iris").ok
    samples = list(open_dataset(tmp_path / "Datasets" / "iris").samples())
    assert samples[2].features == [7.0, 3.2, 4.7, 1.4]
    assert [s.label for s in samples] == [0, 0, 1, 1, 2, 2]


def test_csv_table_round_trip_and_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["data", "convert", str(_iris(tmp_path)), str(tmp_path / "ds"), "--from", "csv",
         "--label", "species"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("converted 6 records, 0 boxes, 3 classes")
    write_dataset(open_dataset(tmp_path / "ds"), tmp_path / "back.csv", "csv")
    lines = (tmp_path / "back.csv").read_text().splitlines()
    assert lines[0] == "id,split,species,sepal_length,sepal_width,petal_length,petal_width"
    assert lines[1] == "0,,setosa,5.1,3.5,1.4,0.2"
    again = read_dataset(tmp_path / "back.csv", "csv", label="species")
    assert [r.features for r in again] == [r.features for r in open_dataset(tmp_path / "ds")]


def test_csv_table_problems_are_listed(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b,y\n1,2,x\n1,two,x\n3,,y\n1,2,3,x\n")
    with pytest.raises(BadRecordsError) as info:
        read_dataset(tmp_path / "t.csv", "csv", label="y")
    texts = [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems]
    assert texts == [
        "t.csv:3: b: not a number ('two')",
        "t.csv:4: b: empty; every feature needs a number",
        "t.csv:5: 4 values for 3 columns; quote values that hold commas",
    ]
    with pytest.raises(BadRecordsError, match=r"t.csv:1: species: no column 'species'"):
        read_dataset(tmp_path / "t.csv", "csv", label="species")
    with pytest.raises(DatasetError, match="--label reads a CSV table of numbers"):
        read_dataset(Path(__file__).parent / "data" / "coco", "coco", label="y")
    (tmp_path / "boxes.csv").write_text("a,b,species\n1,2,x\n")
    with pytest.raises(BadRecordsError, match="name its label column with --label"):
        read_dataset(tmp_path / "boxes.csv", "csv")


def _table_dataset(root: Path, table: str, rows: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    records = [
        {"id": str(i), "features": {"table": table, "row": i}, "labels": ["a" if i % 2 else "b"]}
        for i in range(rows)
    ]
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "dataset.json").write_text('{"name": "t", "classes": ["a", "b"]}')
    return root


TABLE = np.arange(12, dtype=np.float32).reshape(3, 4)


def _write_table(path: Path) -> None:
    if path.suffix == ".npy":
        np.save(path, TABLE)
    elif path.suffix == ".csv":
        path.write_text("f0,f1,f2,f3\n" + "".join(",".join(map(str, r)) + "\n" for r in TABLE))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({f"f{i}": TABLE[:, i] for i in range(4)}), path)


@pytest.mark.parametrize("table", ["emb.npy", "emb.csv", "emb.parquet", "tables/emb.npy"])
def test_table_rows_are_features(tmp_path: Path, table: str) -> None:
    root = _table_dataset(tmp_path / "ds", table)
    (root / table).parent.mkdir(parents=True, exist_ok=True)
    _write_table(root / table)
    assert validate_dataset(root).ok
    dataset = open_dataset(root)
    assert [s.features for s in dataset.samples()] == TABLE.tolist()
    copied = tmp_path / "elsewhere"
    dataset.save(copied)  # the table comes along
    assert (copied / table).is_file() and validate_dataset(copied).ok


def test_parquet_column_of_lists(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = _table_dataset(tmp_path / "ds", "emb.parquet")
    pq.write_table(pa.table({"embedding": TABLE.tolist()}), root / "emb.parquet")
    samples = list(open_dataset(root).samples())
    assert samples[1].features == [4.0, 5.0, 6.0, 7.0]


def test_table_problems(tmp_path: Path) -> None:
    root = _table_dataset(tmp_path / "ds", "emb.npy", rows=5)
    report = validate_dataset(root)
    assert [str(p).replace(f"{root}/", "") for p in report.problems][:2] == [
        "records.jsonl:1: features.table: table file not found ('emb.npy')",
        "records.jsonl:2: features.table: table file not found ('emb.npy')",
    ]
    np.save(root / "emb.npy", TABLE)
    texts = [str(p).replace(f"{root}/", "") for p in validate_dataset(root).problems]
    assert texts == [
        "records.jsonl:4: features.row: past the end of emb.npy (3 >= 3 rows)",
        "records.jsonl:5: features.row: past the end of emb.npy (4 >= 3 rows)",
    ]
    with pytest.raises(DatasetError, match=r"row 3 is past the end of emb.npy \(3 rows\)"):
        list(open_dataset(root).samples())
    np.save(root / "emb.npy", np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    problems = validate_dataset(root).problems
    assert len(problems) == 1 and "does not hold plain numbers" in str(problems[0])
    with pytest.raises(DatasetError, match="objects would need unpickling, which mlbook refuses"):
        list(open_dataset(root).samples())


def test_records_need_a_file_or_features(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    (root / "records.jsonl").write_text(
        '{"id": "1"}\n{"id": "2", "file": ""}\n{"id": "3", "features": []}\n'
        '{"id": "4", "features": [1, 2]}\n{"id": "5", "features": [1, 2, 3]}\n'
        '{"id": "6", "features": {"table": "x.txt", "row": -1}}\n'
    )
    texts = [str(p).replace(f"{root}/", "") for p in validate_dataset(root).problems]
    assert texts == [
        "records.jsonl:1: file: missing: give `file` (an image) or `features` (numbers)",
        "records.jsonl:2: file: empty path; give a path relative to the dataset directory, "
        "inside it",
        "records.jsonl:3: features: empty; give at least one number",
        "records.jsonl:5: features: 3 numbers, but the first record with features (line 4) "
        "has 2; give every record as many",
        "records.jsonl:6: features.table: table 'x.txt' is not one of .parquet, .npy, .csv",
    ]


def test_parquet_without_pyarrow_is_one_clear_line(tmp_path: Path) -> None:
    root = _table_dataset(tmp_path / "ds", "emb.parquet")
    _write_table(root / "emb.parquet")
    script = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "import mlbook\n"
        f"list(mlbook.open_dataset({str(root)!r}).samples())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "emb.parquet: reading .parquet tables needs pyarrow; "
            "install it with `pip install mlbook[parquet]`"
        )
    )


def test_torch_loader_gives_features_and_labels(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    convert(_iris(tmp_path), tmp_path / "ds", label="species")
    torch_ds = open_dataset(tmp_path / "ds").torch()
    assert torch_ds.inputs == "features" and len(torch_ds) == 6
    features, label = torch_ds[2]
    assert features.dtype == torch.float32 and features.tolist() == pytest.approx(
        [7, 3.2, 4.7, 1.4]
    )
    assert label == 1
    x, y = torch_ds.tensors()
    assert tuple(x.shape) == (6, 4) and y.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DatasetError, match="target='detection' needs images"):
        open_dataset(tmp_path / "ds").torch(target="detection")


def test_image_formats_refuse_records_without_images(tmp_path: Path) -> None:
    dataset = Dataset.from_records([Record(id="1", features=[1.0], labels=["a"])])
    for fmt in ("coco", "voc", "yolo", "labelme"):
        with pytest.raises(BadRecordsError, match="no image file"):
            write_dataset(dataset, tmp_path / fmt, fmt)
    assert Record(id="1", features=TableRef(table="t.npy", row=0)).file is None
