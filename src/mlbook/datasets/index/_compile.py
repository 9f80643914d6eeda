"""Compile a query tree into a parameterized SQL condition over the index.

Every value travels as a parameter; the SQL text holds only column names and
operators chosen from fixed tables. A comparison with a missing value is false
(``ifnull(..., 0)`` under ``not``), so ``not`` is plain negation. ``count(label)`` uses the label's
summary column when it has one, else ``record_labels``; a count true at 0 (``count(x) <
2``) is compiled as "not among the records where it is false", so records without the
label match.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlbook.datasets.index._lang import And, Box, Compare, Count, Node, Not, Or, Value
from mlbook.errors import QueryError

__all__ = ["LabelInfo", "compile_box", "compile_where"]

_SQL_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "~": "GLOB"}
_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_RECORD_COLUMNS = {
    "id": "r.id",
    "file": "i.file",
    "split": "r.split",
    "width": "r.width",
    "height": "r.height",
    "aspect": "(CAST(r.width AS REAL) / nullif(r.height, 0))",
    "boxes": "r.nboxes",
    "labels": "r.nlabels",
    "min_box_side": "r.min_side",
    "max_box_side": "r.max_side",
}
_BOX_COLUMNS = {
    "x": "b.x",
    "y": "b.y",
    "w": "b.w",
    "h": "b.h",
    "area": "(b.w * b.h)",
    "min_side": "min(b.w, b.h)",
    "max_side": "max(b.w, b.h)",
    "aspect": "(b.w / nullif(b.h, 0))",
    "crowd": "b.crowd",
}


@dataclass(frozen=True)
class LabelInfo:
    """A label of the index: its id and summary column (``None``: none)."""

    lid: int
    col: int | None


class _Compiler:
    def __init__(self, labels: Mapping[str, LabelInfo], dataset: str) -> None:
        self.labels = labels
        self.dataset = dataset
        self.params: list[Any] = []
        #: the condition reads ``record_info i`` (file, attributes)
        self.info = False

    def label(self, name: str, col: int) -> LabelInfo:
        found = self.labels.get(name)
        if found is None:
            names = sorted(self.labels)
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else (f"labels: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
            )
            raise QueryError(f"no label {name!r} in {self.dataset}; {hint}", col or None)
        return found

    def node(self, node: Node, scope: str, negated: bool = False) -> str:
        """SQL of ``node``; under an odd number of ``not`` (``negated``), comparisons
        that may be NULL are wrapped in ``ifnull(..., 0)`` so that ``not`` stays plain
        negation. Elsewhere they stay bare: a NULL there excludes the row as false
        would, and a bare ``split = ?`` can use an index."""
        if isinstance(node, And):
            items = sorted(node.items, key=self.cost) if scope == "record" else node.items
            joined = " AND ".join(self.node(item, scope, negated) for item in items)
            return f"({joined})"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.node(item, scope, negated) for item in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.node(node.item, scope, not negated)})"
        if isinstance(node, Count):
            return self.count(node)
        if isinstance(node, Box):
            return f"r.rid IN (SELECT b.rid FROM boxes b WHERE {self.node(node.cond, 'box')})"
        sql = self.compare(node, scope)
        return f"ifnull({sql}, 0)" if negated else sql

    def cost(self, node: Node) -> int:
        """Rank of a record condition in an ``and``: cheap and usually selective terms
        first (label counts in summary columns, numbers), subqueries last, so that a scan
        stops early on most rows. ``and`` is commutative, so only the speed changes."""
        if isinstance(node, Not):
            return self.cost(node.item)
        if isinstance(node, Count):
            found = self.labels.get(node.label)
            return 0 if found is not None and found.col is not None else 4
        if isinstance(node, Compare):
            if node.field.startswith("attr.") or node.field == "file":
                return 5
            return 2 if node.field in ("split", "id") else 1
        return 6 if isinstance(node, Box) else 3

    def count(self, node: Count) -> str:
        info = self.label(node.label, node.col)
        op = _SQL_OPS[node.op]
        if info.col is not None:
            self.params.append(node.n)
            return f"(r.c{info.col} {op} ?)"
        self.params += [info.lid, node.n]
        if _PY_OPS[node.op](0, node.n):  # true for records without the label
            return (
                f"(r.rid NOT IN (SELECT rid FROM record_labels WHERE lid = ? AND NOT (n {op} ?)))"
            )
        return f"(r.rid IN (SELECT rid FROM record_labels WHERE lid = ? AND n {op} ?))"

    def values(self, node: Compare) -> tuple[Value, ...]:
        return node.value if isinstance(node.value, tuple) else (node.value,)

    def compare(self, node: Compare, scope: str) -> str:
        table = "r" if scope == "record" else "b"
        if node.field.startswith("attr."):
            return self.attribute(node, table)
        if scope == "box" and node.field == "label":
            return self.box_label(node)
        column = (_RECORD_COLUMNS if scope == "record" else _BOX_COLUMNS)[node.field]
        self.info = self.info or column.startswith("i.")
        values = self.values(node)
        self.params += list(values)
        if node.op == "in":
            return f"{column} IN ({', '.join('?' * len(values))})"
        return f"{column} {_SQL_OPS[node.op]} ?"

    def box_label(self, node: Compare) -> str:
        values = self.values(node)
        if node.op == "~":
            self.params.append(values[0])
            return "b.lid IN (SELECT lid FROM labels WHERE name GLOB ?)"
        if node.op not in ("=", "!=", "in"):
            raise QueryError(
                f"labels compare with =, !=, in or ~, not {node.op!r}", node.col or None
            )
        lids = [self.label(str(v), node.col).lid for v in values]
        self.params += lids
        if node.op == "in":
            return f"b.lid IN ({', '.join('?' * len(lids))})"
        return f"b.lid {_SQL_OPS[node.op]} ?"

    def attribute(self, node: Compare, table: str) -> str:
        if table == "r":  # a record's attributes live in record_info
            table = "i"
            self.info = True
        path = '$."' + node.field[5:] + '"'
        values = self.values(node)
        first = values[0]
        if isinstance(first, bool):
            kinds = "('true', 'false')"
        elif isinstance(first, int | float):
            kinds = "('integer', 'real')"
        else:
            kinds = "('text')"
        if (
            len(
                {
                    type(v) if not isinstance(v, int | float) or isinstance(v, bool) else float
                    for v in values
                }
            )
            > 1
        ):
            raise QueryError(
                f"the values of {node.field} in (...) mix kinds; use one kind", node.col or None
            )
        self.params += [path, path]
        if node.op == "in":
            self.params += [int(v) if isinstance(v, bool) else v for v in values]
            test = f"json_extract({table}.attrs, ?) IN ({', '.join('?' * len(values))})"
        else:
            self.params.append(int(first) if isinstance(first, bool) else first)
            test = f"json_extract({table}.attrs, ?) {_SQL_OPS[node.op]} ?"
        return f"(json_type({table}.attrs, ?) IN {kinds} AND {test})"


def compile_where(
    node: Node | None, labels: Mapping[str, LabelInfo], dataset: str = "the dataset"
) -> tuple[str, list[Any], bool]:
    """SQL condition over ``records r`` (and ``record_info i`` when the third value is
    True: the condition reads files or attributes), and its parameters.

    Raises:
        QueryError: an unknown label (with the closest ones).
    """
    if node is None:
        return "1", [], False
    compiler = _Compiler(labels, dataset)
    return compiler.node(node, "record"), compiler.params, compiler.info


def compile_box(
    node: Node, labels: Mapping[str, LabelInfo], dataset: str = "the dataset"
) -> tuple[str, list[Any]]:
    """SQL condition over ``boxes b`` and its parameters."""
    compiler = _Compiler(labels, dataset)
    return compiler.node(node, "box"), compiler.params
