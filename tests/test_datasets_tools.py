"""Statistics, splits, loaders (plain and torch), and the convert/stats/split commands."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.datasets import ClassEncoding, Dataset, Record, open_dataset
from mlbook.datasets.convert import convert, read_dataset
from mlbook.datasets.split import assign_splits, parse_ratios
from mlbook.datasets.stats import compute_stats
from mlbook.errors import DatasetError

DATA = Path(__file__).parent / "data"


def _labelled(n: int = 100) -> Dataset:
    records = [
        Record(id=f"{i:03d}", file=f"{i}.jpg", labels=["rare" if i % 10 == 0 else "common"])
        for i in range(n)
    ]
    return Dataset.from_records(records, name="lab")


def test_stats_of_coco_sample() -> None:
    stats = compute_stats(read_dataset(DATA / "coco"))
    assert stats.records == 2 and stats.boxes == 3 and stats.crowd_boxes == 1
    assert stats.images_per_split == {"train": 1, "val": 1}
    assert stats.boxes_per_class == {"a": 1, "b": 2}
    assert stats.images_per_class == {"a": 1, "b": 2, "c": 0}
    assert sum(stats.box_sizes.values()) == 3 and stats.box_sizes["0-8"] == 3
    assert stats.box_aspects == {
        "0-0.25": 1, "0.25-0.5": 0, "0.5-0.75": 1, "0.75-1": 0,
        "1-1.33": 0, "1.33-2": 0, "2-4": 1, ">=4": 0,
    }  # fmt: skip


def test_split_is_deterministic_and_stratified() -> None:
    dataset = _labelled()
    ratios = parse_ratios("train=0.8,val=0.1,test=0.1")
    first = assign_splits(dataset, ratios, seed=3)
    again = assign_splits(Dataset(dataset.info, list(reversed(list(dataset)))), ratios, seed=3)
    assert {r.id: r.split for r in first} == {r.id: r.split for r in again}
    assert Counter(r.split for r in first) == {"train": 80, "val": 10, "test": 10}
    assert {r.id: r.split for r in assign_splits(dataset, ratios, seed=4)} != {
        r.id: r.split for r in first
    }
    strat = assign_splits(dataset, ratios, seed=3, stratify=True)
    rare = Counter(r.split for r in strat if r.labels == ["rare"])
    assert rare == {"train": 8, "val": 1, "test": 1}
    with pytest.raises(DatasetError, match=r"add up to 1\.3, not 1"):
        parse_ratios("train=0.8,val=0.5")
    assert parse_ratios("train=8,val=1,test=1") == {"train": 8, "val": 1, "test": 1}
    with pytest.raises(DatasetError, match="bad split ratio 'val'"):
        parse_ratios("train=0.8,val")


def test_keep_existing_splits() -> None:
    records = [Record(id="a", file="a", split="test"), Record(id="b", file="b")]
    dataset = assign_splits(Dataset.from_records(records), {"train": 1}, keep_existing=True)
    assert [r.split for r in dataset] == ["test", "train"]


def test_plain_loader_with_images(tmp_path: Path) -> None:
    convert(DATA / "coco", tmp_path / "ds")
    dataset = open_dataset(tmp_path / "ds")
    (sample,) = list(dataset.samples(split="val", classes=["b"], images=True))
    assert sample.image.size == (5, 10) and sample.image.mode == "RGB"
    assert sample.box_labels == [0] and sample.boxes == [(0.0, 0.0, 1.0, 9.0)]


def test_torch_dataset_shapes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    convert(DATA / "coco", tmp_path / "ds")
    dataset = open_dataset(tmp_path / "ds")
    before = set(sys.modules)
    train = dataset.torch(split="val", classes=["a", "b"], target="detection", start=1)
    assert "torchvision" not in set(sys.modules) - before
    assert train.encoding == ClassEncoding({"a": 1, "b": 2})
    image, target = train[0]
    assert image.shape == (3, 10, 5) and image.dtype == torch.float32 and image.max() <= 1
    assert target["boxes"].shape == (2, 4) and target["labels"].tolist() == [1, 2]
    assert target["iscrowd"].tolist() == [0, 1]
    from mlbook.datasets.torch import collate

    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert len(images) == 1 and targets[0]["labels"].dtype == torch.int64
    train.encoding.save(tmp_path / "labels.json")
    assert ClassEncoding.load(tmp_path / "labels.json").decode(2) == "b"


def test_cli_convert_stats_split(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "coco_ds"
    result = runner.invoke(cli, ["data", "convert", str(DATA / "coco"), str(out), "--from", "coco"])
    assert result.exit_code == 0, result.output
    assert result.output == f"converted 2 records, 3 boxes, 3 classes -> {out} (mlbook)\n"
    result = runner.invoke(cli, ["data", "stats", str(out), "--format", "json"])
    assert json.loads(result.output)["boxes_per_class"] == {"a": 1, "b": 2}
    plot = tmp_path / "stats.png"
    result = runner.invoke(cli, ["data", "stats", str(out), "--plot", str(plot)])
    assert result.exit_code == 0 and "Per class" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(cli, ["data", "split", str(out), "--ratios", "a=1,b=1", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(r.split or "" for r in open_dataset(out)) == ["a", "b"]
    back = tmp_path / "back.csv"
    result = runner.invoke(cli, ["data", "convert", str(out), str(back), "--to", "csv"])
    assert result.exit_code == 0 and back.read_text().startswith("id,file,width")


def test_cli_convert_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "convert", str(tmp_path / "nope"), str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.output == f"error: {tmp_path / 'nope'}: no such file or directory\n"
    result = runner.invoke(
        cli, ["data", "convert", str(DATA / "voc"), str(tmp_path / "x"), "--masks"]
    )
    assert result.exit_code == 1
    assert result.output == "error: --masks works for COCO to mlbook conversions only\n"
    assert not (tmp_path / "x").exists()


def test_cli_yolo_layouts_and_images_modes(tmp_path: Path) -> None:
    runner = CliRunner()
    ds = tmp_path / "Datasets" / "parts"
    result = runner.invoke(cli, ["data", "convert", str(DATA / "yolo_ultralytics"), str(ds)])
    assert result.exit_code == 0, result.output
    assert result.output == f"converted 1 records, 2 boxes, 10 classes -> {ds} (mlbook)\n"
    assert (ds / "images" / "train" / "1.jpg").stat().st_nlink >= 2  # a hard link
    darknet = tmp_path / "darknet"
    args = ["data", "convert", str(ds), str(darknet), "--to", "yolo", "--yolo-layout", "darknet"]
    result = runner.invoke(cli, [*args, "--images", "copy"])
    assert result.exit_code == 0, result.output
    assert (darknet / "obj.data").is_file() and (darknet / "obj_train_data" / "1.jpg").is_file()
    assert (darknet / "obj_train_data" / "1.jpg").stat().st_nlink == 1  # a copy
    kept = tmp_path / "kept"
    result = runner.invoke(cli, ["data", "convert", str(ds), str(kept), "--to", "yolo",
                                 "--images", "keep"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (kept / "labels" / "train" / "1.txt").is_file()
    assert not (kept / "images").exists()  # annotations only
    result = runner.invoke(cli, ["data", "convert", str(ds), str(tmp_path / "x"), "--label", "y"])
    assert result.exit_code == 1
    assert result.output.startswith("error: --label reads a CSV table of numbers;")
