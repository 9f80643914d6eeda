"""The query language: text -> a small tree that the builder makes too.

::

    query   := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | "(" query ")" | atom
    atom    := FIELD OP VALUE | FIELD "in" "(" VALUE ("," VALUE)* ")"
             | "has" "(" LABEL ")" | "count" "(" LABEL ")" OP NUMBER
             | "box" "(" boxquery ")"
    OP      := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~" (glob, text fields)

Record fields: ``id file split width height aspect boxes labels min_box_side
max_box_side attr.NAME``; box fields (inside ``box(...)`` and box filters): ``label x y
w h area min_side max_side aspect crowd attr.NAME``. Values are numbers, quoted strings
(``'traffic light'``) or bare words (``train``, ``true``). A comparison with a missing
value (no split, no boxes, no such attribute) is false whatever the operator.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from mlbook.errors import QueryError

__all__ = [
    "BOX_FIELDS",
    "OPERATORS",
    "RECORD_FIELDS",
    "And",
    "Box",
    "Compare",
    "Count",
    "Node",
    "Not",
    "Or",
    "Value",
    "parse",
    "to_text",
]

Value = str | int | float | bool
Scope = Literal["record", "box"]

#: field -> kind (``text`` or ``number``)
RECORD_FIELDS: dict[str, str] = {
    "id": "text",
    "file": "text",
    "split": "text",
    "width": "number",
    "height": "number",
    "aspect": "number",
    "boxes": "number",
    "labels": "number",
    "min_box_side": "number",
    "max_box_side": "number",
}
BOX_FIELDS: dict[str, str] = {
    "label": "text",
    "x": "number",
    "y": "number",
    "w": "number",
    "h": "number",
    "area": "number",
    "min_side": "number",
    "max_side": "number",
    "aspect": "number",
    "crowd": "number",
}
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "~")


@dataclass(frozen=True)
class Compare:
    """``field op value`` (``op`` ``in``: ``value`` is a tuple); ``col``: where it starts."""

    field: str
    op: str
    value: Value | tuple[Value, ...]
    col: int = 0


@dataclass(frozen=True)
class Count:
    """``count(label) op n`` (``has(label)`` is ``count(label) >= 1``)."""

    label: str
    op: str
    n: int
    col: int = 0


@dataclass(frozen=True)
class Box:
    """``box(cond)``: the record has a box that meets ``cond``."""

    cond: Node
    col: int = 0


@dataclass(frozen=True)
class And:
    """All of ``items``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Any of ``items``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """Not ``item``."""

    item: Node


Node = Compare | Count | Box | And | Or | Not

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>!=|<=|>=|==|=|<|>|~)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_*?\[][\w.\-/*?\[\]]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # num str op punct word end
    text: str
    col: int


def _tokens(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            tokens.append(_Tok("end", "", pos + 1))
            return tokens
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos] in "'\"":
                raise QueryError(f"unclosed string starting with {text[pos]}", pos + 1)
            raise QueryError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = match.lastgroup or ""
        start = match.start(kind)
        tokens.append(_Tok(kind, match.group(kind), start + 1))
        pos = match.end()


def _shown(tok: _Tok) -> str:
    return "the end of the query" if tok.kind == "end" else repr(tok.text)


def suggest(name: str, choices: list[str], what: str) -> str:
    """``unknown <what> 'x'; did you mean a, b?`` with the closest ``choices``."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else f"; {what}s: {', '.join(choices[:20])}{' ...' if len(choices) > 20 else ''}"
    )
    return f"unknown {what} {name!r}{hint}"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def word(self, text: str) -> bool:
        if self.tok.kind == "word" and self.tok.text.lower() == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str, after: str) -> _Tok:
        tok = self.tok
        if tok.text != text or tok.kind not in ("punct", "op"):
            raise QueryError(f"expected '{text}' after {after}, got {_shown(tok)}", tok.col)
        return self.take()

    def parse(self, scope: Scope) -> Node:
        if self.tok.kind == "end":
            raise QueryError("expected a condition, got an empty query", self.tok.col)
        node = self.or_(scope)
        if self.tok.kind != "end":
            raise QueryError(
                f"expected 'and', 'or' or the end of the query, got {_shown(self.tok)}",
                self.tok.col,
            )
        return node

    def or_(self, scope: Scope) -> Node:
        items = [self.and_(scope)]
        while self.word("or"):
            items.append(self.and_(scope))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self, scope: Scope) -> Node:
        items = [self.not_(scope)]
        while self.word("and"):
            items.append(self.not_(scope))
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self, scope: Scope) -> Node:
        if self.word("not"):
            return Not(self.not_(scope))
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.take()
            node = self.or_(scope)
            self.expect(")", "a condition in parentheses")
            return node
        return self.atom(scope)

    def atom(self, scope: Scope) -> Node:
        tok = self.tok
        if tok.kind != "word":
            raise QueryError(
                f"expected a field, has(), count() or box(), got {_shown(tok)}", tok.col
            )
        name = tok.text
        lowered = name.lower()
        nxt = self.tokens[self.i + 1]
        if scope == "record" and lowered in ("has", "count", "box") and nxt.text == "(":
            self.take()
            self.take()
            if lowered == "box":
                cond = self.or_("box")
                self.expect(")", "the box condition")
                return Box(cond, tok.col)
            label = self.label()
            self.expect(")", f"the label of {lowered}()")
            if lowered == "has":
                return Count(label, ">=", 1, tok.col)
            op = self.op(f"count({label})")
            value = self.take()
            if value.kind != "num" or not re.fullmatch(r"-?\d+", value.text):
                raise QueryError(
                    f"expected a whole number after '{op}', got {_shown(value)}", value.col
                )
            return Count(label, op, int(value.text), tok.col)
        self.take()
        fields = RECORD_FIELDS if scope == "record" else BOX_FIELDS
        if lowered.startswith("attr."):
            attr = name[5:]
            if not re.fullmatch(r"[\w\-]+", attr):
                raise QueryError(f"expected an attribute name after 'attr.', got {attr!r}", tok.col)
            field = f"attr.{attr}"
            kind = "any"
        elif lowered in fields:
            field, kind = lowered, fields[lowered]
        else:
            where = "field" if scope == "record" else "box field"
            choices = [*fields, "attr.NAME"]
            if scope == "record":
                choices += ["has(LABEL)", "count(LABEL)", "box(...)"]
            raise QueryError(suggest(name, choices, where), tok.col)
        if self.word("in"):
            self.expect("(", f"'{name} in'")
            values = [self.value(kind, f"'{name} in ('")]
            while self.tok.text == "," and self.tok.kind == "punct":
                self.take()
                values.append(self.value(kind, "','"))
            self.expect(")", "the values of 'in'")
            return Compare(field, "in", tuple(values), tok.col)
        op = self.op(f"'{name}'")
        if op == "~" and kind == "number":
            raise QueryError(
                f"'~' (glob) compares text; {name} is a number", self.tokens[self.i - 1].col
            )
        return Compare(field, op, self.value("text" if op == "~" else kind, f"'{op}'"), tok.col)

    def op(self, after: str) -> str:
        tok = self.tok
        if tok.kind != "op":
            raise QueryError(
                f"expected an operator (= != < <= > >= ~) after {after}, got {_shown(tok)}",
                tok.col,
            )
        self.take()
        return "=" if tok.text == "==" else tok.text

    def label(self) -> str:
        tok = self.take()
        if tok.kind == "str":
            return _unquote(tok.text)
        if tok.kind in ("word", "num"):
            return tok.text
        raise QueryError(f"expected a label name, got {_shown(tok)}", tok.col)

    def value(self, kind: str, after: str) -> Value:
        tok = self.take()
        if kind == "number":
            if tok.kind != "num":
                raise QueryError(f"expected a number after {after}, got {_shown(tok)}", tok.col)
            return _number(tok.text)
        if tok.kind == "str":
            return _unquote(tok.text)
        if tok.kind == "num":
            return _number(tok.text) if kind == "any" else tok.text
        if tok.kind == "word":
            if kind == "any" and tok.text in ("true", "false"):
                return tok.text == "true"
            return tok.text
        raise QueryError(f"expected a value after {after}, got {_shown(tok)}", tok.col)


def _number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse(text: str, scope: Scope = "record") -> Node:
    """The tree of a query (``scope="box"``: a box condition).

    Raises:
        QueryError: a syntax error, with its column and what was expected.
    """
    return _Parser(text).parse(scope)


def _quote(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if re.fullmatch(r"[A-Za-z_][\w.\-/]*", value) and value.lower() not in (
        "and",
        "or",
        "not",
        "in",
        "true",
        "false",
    ):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_text(node: Node) -> str:
    """The query text of a tree (what the builder's queries are saved and recorded as)."""
    if isinstance(node, Compare):
        if node.op == "in":
            values = node.value if isinstance(node.value, tuple) else (node.value,)
            return f"{node.field} in ({', '.join(_quote(v) for v in values)})"
        assert not isinstance(node.value, tuple)
        return f"{node.field} {node.op} {_quote(node.value)}"
    if isinstance(node, Count):
        if node.op == ">=" and node.n == 1:
            return f"has({_quote(node.label)})"
        return f"count({_quote(node.label)}) {node.op} {node.n}"
    if isinstance(node, Box):
        return f"box({to_text(node.cond)})"
    if isinstance(node, Not):
        inner = to_text(node.item)
        return f"not ({inner})" if isinstance(node.item, And | Or) else f"not {inner}"
    joiner = " and " if isinstance(node, And) else " or "
    parts = [
        f"({to_text(item)})" if isinstance(item, And | Or) else to_text(item) for item in node.items
    ]
    return joiner.join(parts)
