"""Plain scripts: a training script without ``mlbook.Experiment`` is an experiment as it is.

Its params are its argparse options. :func:`read_options` reads them from the
``add_argument`` calls in the source (names, types, defaults, choices, flags),
without running anything, when every call is made of literals; otherwise
:func:`capture_options` runs the script in a child process up to its
``parse_args()`` and reads the parser it built (:mod:`mlbook.experiments.plans`
starts that child and caches its answer).

A version of a plain script is a set of option values: :func:`typed` checks
a value against its option (type, choices) and :func:`command_line` turns a
version's params into the arguments the script is run with; only values that
differ from the script's defaults are passed (``--lr 0.1 --dry-run``).
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    import argparse

    from mlbook.experiments.static import _Module

__all__ = [
    "Option",
    "StaticOptions",
    "capture_options",
    "command_line",
    "options_of",
    "parse_text",
    "read_options",
    "split_values",
    "typed",
]

#: What an option does with its flag (argparse's actions, by name).
ACTIONS = (
    "store",
    "store_true",
    "store_false",
    "store_const",
    "append",
    "append_const",
    "extend",
    "count",
    "boolean",  # argparse.BooleanOptionalAction: --x / --no-x
)
_TYPES = {"int": int, "float": float, "str": str}
_PARSER = frozenset({"argparse.ArgumentParser"})
_BOOLEAN_ACTION = frozenset({"argparse.BooleanOptionalAction"})


class Option(msgspec.Struct, frozen=True, kw_only=True):
    """One argparse option of a plain script (its param is ``dest``).

    ``flags`` is empty for a positional argument; ``type`` is the name of the
    option's type (``int``, ``float``, ``str``; another name for a converter of
    the script's own; ``None`` when it has none); ``action`` one of :data:`ACTIONS`
    (``custom`` for an action class of the script's own).
    """

    dest: str
    flags: tuple[str, ...] = ()
    action: str = "store"
    type: str | None = None
    default: Any = None
    choices: list[Any] | None = None
    nargs: int | str | None = None
    const: Any = None
    required: bool = False

    @property
    def flag(self) -> str:
        """The flag the runner passes: the first long one (``--lr``), else the first."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0])


class StaticOptions(msgspec.Struct, frozen=True):
    """The options a plain script's source declares."""

    options: tuple[Option, ...]


# -- reading the source ------------------------------------------------------------------


def read_options(tree: ast.Module, module: _Module) -> StaticOptions:
    """The argparse options of a plain script, from its ``add_argument`` calls.

    Raises:
        NotStatic: (``kind="plain"``) a call is computed, conditional or in a loop,
            the script builds more than one parser, uses sub-commands, or builds
            its parser some other way.
    """
    from mlbook.experiments.static import NotStatic, _Values

    calls = _ArgparseCalls(module)
    calls.visit(tree)
    values = _Values(module)
    try:
        if calls.problem:
            raise NotStatic(calls.problem, "plain")
        if calls.arguments and len(calls.parsers) != 1:
            found = ", ".join(str(c.lineno) for c in calls.parsers)
            raise NotStatic(
                f"{len(calls.parsers)} argparse.ArgumentParser(...) calls"
                + (f" (lines {found})" if found else "")
                + " for the add_argument calls",
                "plain",
            )
        options = [o for call in calls.arguments if (o := _option(call, values)).dest]
        defaults: dict[str, Any] = {}
        for call in calls.set_defaults:
            if call.args or any(k.arg is None for k in call.keywords):
                raise NotStatic(f"line {call.lineno}: set_defaults(...) is computed", "plain")
            defaults.update({str(k.arg): values.value(k.value, frozenset()) for k in call.keywords})
        values.check_unchanged("the add_argument(...) calls", "plain")
    except NotStatic as exc:
        raise NotStatic(str(exc), "plain") from exc
    if defaults:
        options = [
            msgspec.structs.replace(o, default=defaults[o.dest]) if o.dest in defaults else o
            for o in options
        ]
    return StaticOptions(_unique(options))


def _unique(options: Sequence[Option]) -> tuple[Option, ...]:
    """One option per dest (the first; argparse keeps the first default too)."""
    seen: dict[str, Option] = {}
    for option in options:
        seen.setdefault(option.dest, option)
    return tuple(seen.values())


class _ArgparseCalls(ast.NodeVisitor):
    """The argparse calls anywhere in a script (``if __name__ == "__main__":`` included)."""

    def __init__(self, module: _Module) -> None:
        self.module = module
        self.parsers: list[ast.Call] = []
        self.arguments: list[ast.Call] = []
        self.set_defaults: list[ast.Call] = []
        self.problem = ""
        self.depth = 0  # inside an if (not the main guard), a loop or a match

    def _conditional(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_If(self, node: ast.If) -> None:
        from mlbook.experiments.static import _is_main_guard

        if _is_main_guard(node):
            self.generic_visit(node)
        else:
            self._conditional(node)

    visit_For = _conditional
    visit_AsyncFor = _conditional
    visit_While = _conditional
    visit_Match = _conditional

    def visit_Call(self, node: ast.Call) -> None:
        from mlbook.experiments.static import _dotted

        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else None
        dotted = _dotted(func)
        if dotted is not None and self.module.resolve(dotted) in _PARSER:
            self.parsers.append(node)
            for keyword in node.keywords:
                if keyword.arg in ("parents", "argument_default", "prefix_chars", None):
                    self._fail(node, f"ArgumentParser({keyword.arg or '**'}=...) is not read")
        elif name == "add_argument":
            if self.depth:
                self._fail(node, "add_argument(...) inside an if or a loop")
            self.arguments.append(node)
        elif name in ("add_subparsers", "add_parser"):
            self._fail(node, "sub-commands (add_subparsers) are not read from the source")
        elif name == "set_defaults":
            self.set_defaults.append(node)
        self.generic_visit(node)

    def _fail(self, node: ast.AST, why: str) -> None:
        if not self.problem:
            self.problem = f"line {getattr(node, 'lineno', 0)}: {why}"


def _option(call: ast.Call, values: Any) -> Option:
    from mlbook.experiments.static import NotStatic, _dotted, _snippet

    names: list[str] = []
    for arg in call.args:
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            raise NotStatic(f"line {call.lineno}: add_argument({_snippet(arg)}) is computed")
        names.append(arg.value)
    if not names:
        raise NotStatic(f"line {call.lineno}: add_argument() without a name")
    keywords: dict[str, ast.expr] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise NotStatic(f"line {call.lineno}: add_argument(**...) is computed")
        keywords[keyword.arg] = keyword.value

    def literal(key: str, default: Any = None) -> Any:
        node = keywords.get(key)
        return default if node is None else values.value(node, frozenset())

    action = "store"
    node = keywords.get("action")
    if node is not None:
        dotted = _dotted(node)
        if dotted is not None and values.module.resolve(dotted) in _BOOLEAN_ACTION:
            action = "boolean"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            action = node.value.replace("-", "_")
        else:
            raise NotStatic(f"line {call.lineno}: action={_snippet(node)} is not read")
    if action in ("help", "version"):
        return Option(dest="", action=action)
    if action not in ACTIONS:
        raise NotStatic(f"line {call.lineno}: action={action!r} is not read")
    type_name: str | None = None
    node = keywords.get("type")
    if node is not None:
        type_name = _dotted(node) or _snippet(node)
    optional = names[0].startswith("-")
    dest = literal("dest") or (_dest(names) if optional else names[0])
    default = literal("default", _ACTION_DEFAULTS.get(action))
    if isinstance(default, str) and type_name in ("int", "float"):  # argparse converts it
        try:
            default = _TYPES[type_name](default)
        except ValueError as exc:
            raise NotStatic(f"line {call.lineno}: default={default!r} is not {type_name}") from exc
    choices = literal("choices")
    return Option(
        dest=str(dest),
        flags=tuple(names) if optional else (),
        action=action,
        type=type_name,
        default=default,
        choices=list(choices) if choices is not None else None,
        nargs=literal("nargs"),
        const=literal("const"),
        required=bool(literal("required", False)) or (not optional and literal("nargs") is None),
    )


_ACTION_DEFAULTS: dict[str, Any] = {"store_true": False, "store_false": True}


def _dest(flags: Sequence[str]) -> str:
    chosen = next((f for f in flags if f.startswith("--")), flags[0])
    return chosen.lstrip("-").replace("-", "_")


# -- reading the parser the script builds (in a child process) -------------------------


class _Captured(BaseException):
    """Raised from ``parse_known_args``: the script built its parser (not an ``Exception``,
    so the script's own ``except Exception`` does not swallow it)."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parse_args")
        self.parser = parser


def capture_options(script: Path) -> tuple[Option, ...]:
    """Run ``script`` as ``__main__`` until it parses its arguments; its options.

    Call it in a child process: the script's code up to ``parse_args()`` runs.
    A script that never parses arguments ran to its end and has no options.

    Raises:
        ExperimentError: the script failed, or exited, before parsing its arguments.
    """
    import argparse
    import runpy
    import traceback

    original = argparse.ArgumentParser.parse_known_args

    def intercept(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(self)

    argparse.ArgumentParser.parse_known_args = intercept  # type: ignore[method-assign]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except _Captured as captured:
        return options_of(captured.parser)
    except SystemExit as exc:
        raise ExperimentError(
            f"{script}: the script called sys.exit({exc.code!r}) before parsing its arguments"
        ) from None
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(script)]
        line = f":{frames[-1].lineno}" if frames else ""
        raise ExperimentError(
            f"{script}{line}: the script failed before parsing its arguments: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    return ()


def options_of(parser: argparse.ArgumentParser) -> tuple[Option, ...]:
    """The options of an ``ArgumentParser`` (help and version left out).

    Raises:
        ExperimentError: the parser has sub-commands.
    """
    import argparse

    kinds: list[tuple[type[Any], str]] = [
        (argparse._StoreTrueAction, "store_true"),
        (argparse._StoreFalseAction, "store_false"),
        (argparse._StoreConstAction, "store_const"),
        (argparse._AppendConstAction, "append_const"),
        (argparse._ExtendAction, "extend"),
        (argparse._AppendAction, "append"),
        (argparse._CountAction, "count"),
        (argparse.BooleanOptionalAction, "boolean"),
        (argparse._StoreAction, "store"),
    ]
    found: list[Option] = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if isinstance(action, argparse._SubParsersAction):
            raise ExperimentError(
                "the script's parser has sub-commands (add_subparsers); mlbook runs a plain "
                "script with options, not sub-commands"
            )
        if action.dest == argparse.SUPPRESS:
            continue
        kind = next((name for cls, name in kinds if isinstance(action, cls)), "custom")
        default = parser.get_default(action.dest)
        if default == argparse.SUPPRESS:
            default = None
        kind_type: Any = action.type
        type_name = getattr(kind_type, "__name__", None) if kind_type is not None else None
        if isinstance(default, str) and kind_type in _TYPES.values():
            with contextlib.suppress(ValueError):
                default = kind_type(default)
        found.append(
            Option(
                dest=action.dest,
                flags=tuple(action.option_strings),
                action=kind,
                type=type_name,
                default=default,
                choices=list(action.choices) if action.choices is not None else None,
                nargs=action.nargs,
                const=action.const,
                required=bool(action.required),
            )
        )
    return _unique(found)


# -- values --------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_text(text: str, like: Any = None) -> Any:
    """A value typed in ``--set key=TEXT``, read as the kind of ``like`` (the current value).

    Without a current value: an integer, a float, ``true``/``false``, ``none``, a
    JSON list or object, else the text.

    Raises:
        ValueError: ``text`` does not read as the kind of ``like`` (the message says so).
    """
    if isinstance(like, bool):
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError("expected true or false")
    if isinstance(like, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
    if isinstance(like, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(like, str):
        return text
    if isinstance(like, (list, tuple, dict)) or text.strip()[:1] in ("[", "{"):
        import orjson

        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("expected JSON, e.g. [64, 64]") from None
    lowered = text.strip().lower()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return text


def split_values(text: str) -> list[str]:
    """``--grid`` values: ``0.1,0.01`` -> ``["0.1", "0.01"]``; commas inside ``[...]`` stay."""
    values: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:index])
            start = index + 1
    values.append(text[start:])
    return values


def typed(option: Option, value: Any) -> Any:
    """``value`` as the option's script would get it: converted to its type, checked.

    Strings are read as the option's type (``"0.1"`` -> ``0.1``).

    Raises:
        ValueError: the value does not fit the option (the message says why).
    """
    if option.action in ("store_true", "store_false", "boolean"):
        if isinstance(value, str):
            return parse_text(value, True)
        if isinstance(value, bool) or (value is None and option.action == "boolean"):
            return value
        raise ValueError("expected true or false")
    if option.action == "count":
        if isinstance(value, str):
            return parse_text(value, 0)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError("expected a count (0, 1, 2...)")
    if option.action in ("store_const", "append_const"):
        if value in (option.const, option.default):
            return value
        raise ValueError(f"expected {option.const!r} (the flag) or {option.default!r}")
    many = (
        option.nargs in ("*", "+")
        or isinstance(option.nargs, int)
        or option.action
        in (
            "append",
            "extend",
        )
    )
    if many and value is not None:
        if isinstance(value, str) and value.strip()[:1] == "[":
            value = parse_text(value, [])
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_one(option, item) for item in items]
    if value is None:
        return None
    return _one(option, value)


def _one(option: Option, value: Any) -> Any:
    kind = _TYPES.get(option.type or "")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = parse_text(value, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, str):
            value = parse_text(value, 0.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        value = float(value)
    elif kind is str:
        value = value if isinstance(value, str) else _text(value)
    elif isinstance(value, str) and option.type is None and option.choices:
        value = next((c for c in option.choices if _text(c) == value), value)
    if option.choices is not None and value not in option.choices:
        shown = ", ".join(_text(c) for c in option.choices)
        raise ValueError(f"{_text(value)} is not one of: {shown}")
    return value


def _text(value: Any) -> str:
    return str(value)


def _same(value: Any, default: Any) -> bool:
    if type(value) is not type(default) and not (
        isinstance(value, (int, float))
        and isinstance(default, (int, float))
        and not isinstance(value, bool)
        and not isinstance(default, bool)
    ):
        return False
    try:
        return bool(value == default)
    except Exception:
        return False


def command_line(options: Sequence[Option], params: Mapping[str, Any]) -> list[str]:
    """The arguments that run a plain script with ``params`` (values that differ from
    the script's defaults, and every positional argument).

    Raises:
        ValueError: a value cannot be passed on a command line (the message says which).
    """
    args: list[str] = []
    positionals: list[str] = []
    for option in options:
        if option.dest not in params:
            continue
        value = params[option.dest]
        if not option.flags:
            if value is None:
                if option.required:
                    raise ValueError(
                        f"{option.dest} (a positional argument of the script) needs a value; "
                        f"set it with --set {option.dest}=... or in the version"
                    )
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            positionals += [_text(v) for v in values]
            continue
        if _same(value, option.default) and not option.required:
            continue
        args += _flag_args(option, value)
    if any(p.startswith("-") for p in positionals):
        positionals.insert(0, "--")
    return args + positionals


def _flag_args(option: Option, value: Any) -> list[str]:
    flag = option.flag
    action = option.action
    if action in ("store_true", "store_false"):
        wanted = action == "store_true"
        if bool(value) is wanted:
            return [flag]
        raise ValueError(
            f"{flag} only sets {option.dest} to {wanted}; the script cannot be given "
            f"{option.dest}={value!r} on its command line"
        )
    if action == "boolean":
        if value is None:
            raise ValueError(f"{option.dest} cannot be set back to none on the command line")
        return [flag if value else "--no-" + flag.lstrip("-")]
    if action == "count":
        short = next((f for f in option.flags if not f.startswith("--")), None)
        count = int(value or 0)
        if count and short:
            return ["-" + short.lstrip("-") * count]
        return [flag] * count
    if action in ("store_const", "append_const"):
        if value == option.const:
            return [flag]
        raise ValueError(f"{flag} sets {option.dest} to {option.const!r}, not {value!r}")
    if value is None:
        raise ValueError(
            f"{option.dest} cannot be set to none on the command line (the script's "
            f"default is {option.default!r})"
        )
    if action == "append":
        items = value if isinstance(value, (list, tuple)) else [value]
        return [part for item in items for part in (flag, _text(item))]
    if isinstance(value, (list, tuple)):
        return [flag, *(_text(v) for v in value)]
    return [flag, _text(value)]
