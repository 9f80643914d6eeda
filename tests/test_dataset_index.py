"""The dataset index: queries equal a brute-force filter, staleness, killed builds, views."""

from __future__ import annotations

import fnmatch
import operator
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbook.datasets import Box, Record, open_dataset
from mlbook.datasets.index import (
    DatasetIndex,
    Query,
    build_index,
    ensure_index,
    index_path,
    index_state,
    list_views,
    load_view,
    open_view,
    save_view,
)
from mlbook.datasets.metadata import encode_records
from mlbook.errors import MlbookWarning, QueryError

# 24 labels, skewed: the first 16 of the first records get summary columns, the rest
# go through record_labels; one has a space in its name.
LABELS = ["car", "person", "bike", "dog", "traffic light", "cat", "bus", "truck"] + [
    f"rare{i}" for i in range(16)
]
WEIGHTS = [30, 25, 10, 8, 6, 5, 4, 4] + [1] * 16
SPLITS = ["train", "val", "test", None]
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

Pred = Callable[[Record], bool]


def make_records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        width = rng.choice([None, 320, 640, 1280])
        height = None if width is None else rng.choice([240, 480, 960])
        boxes = []
        for _ in range(rng.choice([0, 0, 1, 2, 3, 4, 6])):
            w = rng.randint(1, 120)
            h = rng.randint(1, 120)
            x1 = rng.randint(0, 150)
            y1 = rng.randint(0, 100)
            attributes = {"occluded": rng.random() < 0.4} if rng.random() < 0.5 else {}
            boxes.append(
                Box(
                    name=rng.choices(LABELS, WEIGHTS)[0],
                    x1=x1,
                    y1=y1,
                    x2=x1 + w,
                    y2=y1 + h,
                    iscrowd=rng.random() < 0.05,
                    attributes=attributes,
                )
            )
        labels = sorted({b.name for b in boxes})
        if rng.random() < 0.2:
            labels.append(rng.choices(LABELS, WEIGHTS)[0])  # a label without a box
            labels = sorted(set(labels))
        counts: dict[str, int] = {}
        if not boxes and rng.random() < 0.3:  # counts of a record with boxes must match them
            name = rng.choices(LABELS, WEIGHTS)[0]
            counts[name] = rng.randint(0, 5)
        attributes: dict[str, Any] = {}
        if rng.random() < 0.7:
            attributes["weather"] = rng.choice(["sun", "rain", "fog"])
        if rng.random() < 0.5:
            attributes["score"] = rng.choice([0, 1, 2.5, 3, 7])
        if rng.random() < 0.3:
            attributes["flag"] = rng.random() < 0.5
        records.append(
            Record(
                id=f"{i:05d}",
                file=f"images/{i % 7}/{i:05d}.jpg",
                width=width,
                height=height,
                labels=labels,
                counts=counts,
                boxes=boxes,
                split=rng.choice(SPLITS),
                attributes=attributes,
            )
        )
    return records


def write_dataset(root: Path, records: list[Record], mark: bool = True) -> Path:
    """``records.jsonl`` in ``root``; with ``mark``, its parent is marked as a project
    (so the index goes to its ``.mlbook/index/``)."""
    root.mkdir(parents=True, exist_ok=True)
    if mark:
        (root.parent / "mlbook.toml").touch()
    (root / "records.jsonl").write_bytes(b"".join(encode_records(records)))
    return root


# -- the brute-force oracle: written from the language's description, not the code ----


def count_of(record: Record, label: str) -> int:
    boxes = sum(1 for b in record.boxes if b.name == label)
    return max(boxes, record.counts.get(label, 0), 1 if label in record.labels else 0)


def labels_of(record: Record) -> int:
    names = {b.name for b in record.boxes} | set(record.labels) | set(record.counts)
    return sum(1 for name in names if count_of(record, name) > 0)


def record_value(record: Record, field: str) -> Any:
    if field == "aspect":
        if record.width is None or not record.height:
            return None
        return record.width / record.height
    if field == "boxes":
        return len(record.boxes)
    if field == "labels":
        return labels_of(record)
    if field == "min_box_side":
        return min((min(b.width, b.height) for b in record.boxes), default=None)
    if field == "max_box_side":
        return max((max(b.width, b.height) for b in record.boxes), default=None)
    return getattr(record, field)


def box_value(box: Box, field: str) -> Any:
    return {
        "label": box.name,
        "w": box.width,
        "h": box.height,
        "area": box.width * box.height,
        "min_side": min(box.width, box.height),
        "max_side": max(box.width, box.height),
        "crowd": int(box.iscrowd),
        "x": box.x1,
    }[field]


def attr_matches(attrs: dict[str, Any], name: str, op: str, value: Any) -> bool:
    if name not in attrs:
        return False
    have = attrs[name]
    if isinstance(value, bool):
        return isinstance(have, bool) and OPS[op](int(have), int(value))
    if isinstance(value, int | float):
        if isinstance(have, bool) or not isinstance(have, int | float):
            return False
        return OPS[op](have, value)
    return isinstance(have, str) and OPS[op](have, value)


def compare(have: Any, op: str, value: Any) -> bool:
    return have is not None and OPS[op](have, value)


# -- random queries: (text, predicate) pairs ----------------------------------------

ops = st.sampled_from(list(OPS))
numbers = st.sampled_from([0, 1, 2, 3, 16, 32, 32.5, 64, 100, 480, 640])


def _label_text(name: str) -> str:
    return f"'{name}'" if " " in name else name


@st.composite
def box_leaf(draw: st.DrawFn) -> tuple[str, Callable[[Box], bool]]:
    kind = draw(st.sampled_from(["label", "number", "occluded"]))
    if kind == "label":
        name = draw(st.sampled_from(LABELS[:8] + LABELS[-2:]))
        op = draw(st.sampled_from(["=", "!="]))
        return f"label {op} {_label_text(name)}", lambda b: OPS[op](b.name, name)
    if kind == "occluded":
        flag = draw(st.booleans())
        text = f"attr.occluded = {'true' if flag else 'false'}"
        return text, lambda b: attr_matches(b.attributes, "occluded", "=", flag)
    field = draw(st.sampled_from(["w", "h", "area", "min_side", "max_side", "crowd", "x"]))
    op = draw(ops)
    value = draw(numbers)
    return f"{field} {op} {value}", lambda b: OPS[op](box_value(b, field), value)


def combine(
    leaves: st.SearchStrategy[tuple[str, Callable[[Any], bool]]],
) -> st.SearchStrategy[tuple[str, Callable[[Any], bool]]]:
    def extend(
        children: st.SearchStrategy[tuple[str, Callable[[Any], bool]]],
    ) -> st.SearchStrategy[tuple[str, Callable[[Any], bool]]]:
        def both(pair: Any, word: str) -> tuple[str, Callable[[Any], bool]]:
            (ta, fa), (tb, fb) = pair
            if word == "and":
                return f"({ta}) and ({tb})", lambda r: fa(r) and fb(r)
            return f"({ta}) or ({tb})", lambda r: fa(r) or fb(r)

        def negate(child: tuple[str, Callable[[Any], bool]]) -> tuple[str, Callable[[Any], bool]]:
            text, f = child
            return f"not ({text})", lambda r: not f(r)

        return st.one_of(
            st.tuples(children, children).map(lambda p: both(p, "and")),
            st.tuples(children, children).map(lambda p: both(p, "or")),
            children.map(negate),
        )

    return st.recursive(leaves, extend, max_leaves=5)


@st.composite
def record_leaf(draw: st.DrawFn) -> tuple[str, Pred]:
    kind = draw(
        st.sampled_from(["split", "split_in", "number", "count", "has", "attr", "file", "box"])
    )
    if kind == "split":
        op = draw(st.sampled_from(["=", "!="]))
        value = draw(st.sampled_from(["train", "val", "test", "other"]))
        return f"split {op} {value}", lambda r: compare(r.split, op, value)
    if kind == "split_in":
        values = draw(st.lists(st.sampled_from(["train", "val", "x"]), min_size=1, max_size=3))
        return f"split in ({', '.join(values)})", lambda r: r.split in values
    if kind == "number":
        field = draw(
            st.sampled_from(
                ["width", "height", "aspect", "boxes", "labels", "min_box_side", "max_box_side"]
            )
        )
        op = draw(ops)
        value = draw(numbers)
        return f"{field} {op} {value}", lambda r: compare(record_value(r, field), op, value)
    if kind in ("count", "has"):
        label = draw(st.sampled_from(LABELS))
        if kind == "has":
            return f"has({_label_text(label)})", lambda r: count_of(r, label) >= 1
        op = draw(ops)
        n = draw(st.integers(0, 4))
        return (
            f"count({_label_text(label)}) {op} {n}",
            lambda r: OPS[op](count_of(r, label), n),
        )
    if kind == "attr":
        name, value = draw(
            st.sampled_from(
                [
                    ("weather", "rain"),
                    ("weather", "sun"),
                    ("score", 2.5),
                    ("score", 3),
                    ("flag", True),
                    ("flag", False),
                ]
            )
        )
        op = draw(ops) if name == "score" else draw(st.sampled_from(["=", "!="]))
        shown = ("true" if value else "false") if isinstance(value, bool) else value
        return (
            f"attr.{name} {op} {shown}",
            lambda r: attr_matches(r.attributes, name, op, value),
        )
    if kind == "file":
        pattern = draw(st.sampled_from(["images/3/*", "*1.jpg", "images/*/000*"]))
        return (
            f"file ~ '{pattern}'",
            lambda r: r.file is not None and fnmatch.fnmatchcase(r.file, pattern),
        )
    text, f = draw(combine(box_leaf()))
    return f"box({text})", lambda r: any(f(b) for b in r.boxes)


queries = combine(record_leaf())

N_RECORDS = 10_000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    records = make_records(N_RECORDS)
    root = write_dataset(tmp_path_factory.mktemp("index") / "big", records)
    build_index(root)
    return root, records


@pytest.mark.slow
@settings(max_examples=150)
@given(pair=queries)
def test_random_queries_equal_a_brute_force_filter(
    big: tuple[Path, list[Record]], pair: tuple[str, Pred]
) -> None:
    root, records = big
    text, predicate = pair
    expected = [r.id for r in records if predicate(r)]
    query = Query(root, text)
    with query.index() as index:
        assert index.ids(query) == expected, text
        assert index.count(query) == len(expected)
        # the text the tree prints back reads as the same query
        assert index.ids(Query(root, query.text)) == expected


@pytest.mark.slow
@settings(max_examples=30)
@given(box=combine(box_leaf()), record=queries)
def test_box_filters_keep_exactly_the_matching_boxes(
    big: tuple[Path, list[Record]], box: tuple[str, Pred], record: tuple[str, Pred]
) -> None:
    root, records = big
    (box_text, box_pred), (text, predicate) = box, record
    expected = {
        r.id: [b for b in r.boxes if box_pred(b)]
        for r in records
        if predicate(r) and any(box_pred(b) for b in r.boxes)
    }
    found = Query(root, text, box_text).records()
    assert [r.id for r in found] == list(expected)
    for r in found:
        assert r.boxes == expected[r.id]
        assert r.labels == sorted({b.name for b in r.boxes})


def test_the_builder_compiles_to_the_text_query(big: tuple[Path, list[Record]]) -> None:
    root, records = big
    built = Query(root).split("train").count("car", ">=", 2).none("person").boxes(max_side__lt=32)
    assert built.text == "split = train and count(car) >= 2 and not has(person)"
    assert built.boxes_text == "max_side < 32"
    text = Query(root, built.text, built.boxes_text)
    expected = [
        r.id
        for r in records
        if r.split == "train"
        and count_of(r, "car") >= 2
        and count_of(r, "person") == 0
        and any(max(b.width, b.height) < 32 for b in r.boxes)
    ]
    assert expected  # the data has such records
    assert built.ids() == text.ids() == expected
    with built.index() as index:
        sql_a = index.statement(built)
        sql_b = index.statement(text)
    assert sql_a == sql_b
    assert "train" not in sql_a[0] and "train" in sql_a[1]  # values travel as parameters
    more = Query(root).file("images/3/*").size(width__ge=640).attr("weather", "=", "rain")
    assert more.ids() == [
        r.id
        for r in records
        if r.file is not None
        and fnmatch.fnmatchcase(r.file, "images/3/*")
        and (r.width or 0) >= 640
        and r.attributes.get("weather") == "rain"
    ]


def test_a_query_is_used_like_a_dataset(tmp_path: Path) -> None:
    records = make_records(300, seed=3)
    root = write_dataset(tmp_path / "ds", records)
    dataset = open_dataset(root)
    query = dataset.query().split("train").has("car")
    expected = [r for r in records if r.split == "train" and count_of(r, "car") >= 1]
    assert len(query) == len(expected)
    assert [r.id for r in query] == [r.id for r in expected]
    selected = query.dataset()
    assert selected.root == root and selected.classes == dataset.classes
    assert [r.id for r in selected.records(split="train", classes=["car"])] == [
        r.id for r in expected
    ]
    samples = list(query.samples(classes=["car"]))
    assert len(samples) == len(expected)


# -- staleness, killed and broken builds -----------------------------------------------


def test_a_changed_records_file_makes_the_index_stale_and_the_rebuild_matches(
    tmp_path: Path,
) -> None:
    records = make_records(500, seed=1)
    root = write_dataset(tmp_path / "ds", records)
    assert index_state(root).state == "missing"
    ensure_index(root)
    assert index_state(root).fresh
    path = root / "records.jsonl"
    before = path.stat()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # touched, same bytes
    assert index_state(root).fresh
    changed = [*records[:200], *make_records(50, seed=9)[:50]]
    changed = [r for r in changed if r.id not in {"00000", "00001"} or r in records[:200]]
    unique = {r.id: r for r in changed}
    write_dataset(root, list(unique.values()))
    state = index_state(root)
    assert state.state == "stale" and "records.jsonl changed" in state.why
    with pytest.raises(QueryError, match=r"is stale .* run without --no-rebuild"):
        Query(root, "has(car)", rebuild=False).ids()
    assert Query(root, "has(car)").ids() == [
        r.id for r in unique.values() if count_of(r, "car") >= 1
    ]
    assert index_state(root).fresh


_KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from mlbook.datasets.index import build_index

class Task:
    def __enter__(self): return self
    def __exit__(self, *exc): return None
    def advance(self, amount=1):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the first batch went in

class Reporter:
    def task(self, description, total=None): return Task()

build_index(Path(sys.argv[1]), reporter=Reporter())
"""


@pytest.mark.slow
def test_a_killed_build_leaves_no_index_that_is_trusted(tmp_path: Path) -> None:
    records = make_records(30_000, seed=2)
    root = write_dataset(tmp_path / "ds", records)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_BUILD), str(root)],
        capture_output=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    path = index_path(root)
    leftovers = list(path.parent.glob(f".{path.name}.*.tmp"))
    assert leftovers and not path.exists()  # the half-built file never took the index's name
    assert index_state(root).state == "missing"
    # a half-built file put in place by hand (a copy, say) is refused, then rebuilt
    path.write_bytes(leftovers[0].read_bytes())
    state = index_state(root)
    assert state.state == "broken" and "half-built" in state.why
    assert Query(root, "has(dog)").count_records() == sum(
        1 for r in records if count_of(r, "dog") >= 1
    )
    assert index_state(root).fresh
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))  # the next build cleaned up


def test_a_corrupt_index_is_rebuilt(tmp_path: Path) -> None:
    records = make_records(200, seed=4)
    root = write_dataset(tmp_path / "ds", records)
    state = ensure_index(root)
    state.path.write_bytes(b"not a database" * 100)
    assert index_state(root).state == "broken"
    assert len(Query(root, "").ids()) == 200
    db = sqlite3.connect(state.path)
    with db:
        db.execute("PRAGMA user_version = 999")
    db.close()
    assert "another version" in index_state(root).why
    assert len(Query(root, "").ids()) == 200


# -- bad input -------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "coco", make_records(100, seed=5))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "split = train and width >= ",
            "col 28: expected a number after '>=', got the end of the query",
        ),
        (
            "split = train and count(car) >= x",
            "col 33: expected a whole number after '>=', got 'x'",
        ),
        ("split = 'train", "col 9: unclosed string starting with '"),
        ("wdth > 3", "col 1: unknown field 'wdth'; did you mean width?"),
        ("split = train and", "col 18: expected a field, has(), count() or box(), got the end"),
        ("has(car) person", "col 10: expected 'and', 'or' or the end of the query, got 'person'"),
        ("(has(car)", "col 10: expected ')' after a condition in parentheses, got the end"),
        ("box(label = car and sidez < 3)", "col 21: unknown box field 'sidez'"),
        ("split ~ 3 and width ~ x", "col 21: '~' (glob) compares text; width is a number"),
        ("has(cra)", "col 1: no label 'cra' in coco; did you mean cat, car"),
        ("box(label = persn)", "col 5: no label 'persn' in coco; did you mean person?"),
        ("", None),
    ],
)
def test_bad_queries_say_where_and_what_was_expected(
    small: Path, text: str, message: str | None
) -> None:
    if message is None:
        assert len(Query(small, text).ids()) == 100
        return
    with pytest.raises(QueryError) as caught:
        Query(small, text).ids()
    assert str(caught.value).startswith(message)


def test_raw_sql_is_read_only(small: Path) -> None:
    before = ensure_index(small)
    with DatasetIndex.open(small) as index:
        assert index.sql("SELECT count(*) FROM records").rows == [(100,)]
        for statement in (
            "DELETE FROM records",
            "DROP TABLE boxes",
            "ATTACH 'x.db' AS x",
            "WITH x AS (SELECT 1) DELETE FROM records",
            "SELECT 1; DELETE FROM records",
            "PRAGMA query_only = OFF",
        ):
            with pytest.raises(QueryError):
                index.sql(statement)
        assert index.sql("SELECT count(*) FROM records").rows == [(100,)]
    after = index_state(small)
    assert after.fresh and after.hash == before.hash


def test_a_bad_record_names_its_line(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "ds", make_records(10))
    with (root / "records.jsonl").open("ab") as handle:
        handle.write(b'{"id": "x", "width": "wide"}\n')
    with pytest.raises(Exception, match=r"records\.jsonl:11: width: expected `int"):
        Query(root, "has(car)").ids()
    assert index_state(root).state == "missing"


# -- saved views -------------------------------------------------------------------------


def test_saved_views_warn_when_their_records_changed(small: Path) -> None:
    records = list(open_dataset(small))
    saved = save_view(small, "cars", "has(car)")
    expected = [r.id for r in records if count_of(r, "car") >= 1]
    assert saved.ids == expected and saved.count == len(expected)
    assert load_view(small, "cars").query == "has(car)"
    assert list_views(small) == ["cars"]
    assert [r.id for r in open_dataset(small).view("cars")] == expected
    # drop two matching records and add one
    first, second = expected[:2]
    kept = [r for r in records if r.id not in (first, second)]
    extra = make_records(1, seed=99)[0]
    extra = Record(id="new", labels=["car"], split="train", boxes=extra.boxes)
    write_dataset(small, [*kept, extra])
    with pytest.warns(MlbookWarning, match=r"2 id\(s\) gone, 1 added"):
        _, use = open_view(small, "cars")
    assert use.gone == 2 and use.added == 1
    with pytest.raises(QueryError, match="no view 'bikes'; views: cars"):
        load_view(small, "bikes")
    with pytest.raises(QueryError, match=r"view name '\.\./x'"):
        save_view(small, "../x", "has(car)")


def test_outside_a_project_the_index_goes_to_the_cache_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "alone" / "ds"
    root.mkdir(parents=True)
    (root / "records.jsonl").write_bytes(b"".join(encode_records(make_records(20))))
    path = index_path(root)
    assert path.parent == tmp_path / "cache" / "mlbook" / "index"
    assert path.name.startswith("ds-")
    assert len(Query(root, "").ids()) == 20 and path.exists()
    assert not (root / ".mlbook").exists()  # nothing written into the dataset


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_blank_lines_crlf_loose_forms_and_no_final_newline(tmp_path: Path, newline: bytes) -> None:
    records = make_records(50, seed=12)
    lines = [line.rstrip(b"\n") for line in encode_records(records)]
    lines.insert(10, b"   ")
    lines.insert(20, b"")
    lines.append(b'{"id": 7, "labels": "car", "counts": [{"car": 2}], "split": "train"}')
    root = tmp_path / "ds"
    root.mkdir()
    (tmp_path / "mlbook.toml").touch()
    (root / "records.jsonl").write_bytes(newline.join(lines))  # no newline at the end
    found = Query(root, "has(car)").records()
    expected = [r for r in records if count_of(r, "car")]
    assert [r.id for r in found] == [*(r.id for r in expected), "7"]
    assert found[:-1] == expected  # read back from the offsets the index keeps
    assert found[-1].counts == {"car": 2} and Query(root, "count(car) = 2 and id = '7'").ids() == [
        "7"
    ]
