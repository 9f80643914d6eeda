"""DVC's files, read natively: ``.dvc`` files, ``dvc.lock``, ``dvc.yaml`` and DVC's hash state.

Nothing here imports DVC (``import mlbook`` loads no DVC module); the files are
YAML, read with PyYAML's ``safe_load`` (libyaml when it is there). The ``dvc``
command is only ever run as a subprocess (:func:`run_dvc`, for ``dvc checkout``).

- A ``.dvc`` file lists its ``outs``: ``path`` (relative to the file), ``md5``
  (``<32 hex>`` for a file, ``<32 hex>.dir`` for a directory), ``size``, ``nfiles``
  and, from DVC 3 on, ``hash: md5``. A file without ``hash`` was written by DVC 2,
  whose md5 turns CRLF into LF in text files first (scheme ``md5-dos2unix``).
- ``dvc.lock`` (schema ``2.0``, or DVC 1's stages at the top level) lists each
  stage's ``cmd``, ``deps``, ``params`` and ``outs``, paths relative to the
  lock file (or the stage's ``wdir`` in ``dvc.yaml``).
- DVC's state (``<site cache>/repo/<token>/hashes/local/cache.db``, SQLite) maps an
  absolute file path to its md5, keyed by a checksum of inode, mtime and size;
  :class:`DvcState` reads it (values are JSON text, nothing is unpickled).

A malformed file raises :class:`~mlbook.errors.DvcFileError`: one line with the
file, the line and the key.
"""

from __future__ import annotations

import configparser
import contextlib
import getpass
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbook.errors import DatasetError, DvcFileError

__all__ = [
    "DVC_TIMEOUT",
    "SCHEMES",
    "DvcOut",
    "DvcStage",
    "DvcState",
    "YamlStage",
    "dvc_root",
    "find_dvc_files",
    "load_yaml",
    "read_dvc_file",
    "read_dvc_lock",
    "read_dvc_yaml",
    "run_dvc",
    "walk_files",
]

#: hash schemes: DVC 3 (``hash: md5``, bytes as they are) and DVC 2 (text files CRLF -> LF)
SCHEMES = ("md5", "md5-dos2unix")
#: seconds a ``dvc`` subprocess may take
DVC_TIMEOUT = 600.0
_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
_SKIP_DIRS = frozenset({".git", ".hg", ".dvc", ".mlbook", "__pycache__", "node_modules"})


@dataclass(frozen=True)
class DvcOut:
    """One output (or dependency) DVC tracks, as its file states it.

    Attributes:
        path: root-relative POSIX path of the tracked file or directory.
        md5: DVC's hash (``<hex>`` or ``<hex>.dir``), ``None`` when the file has none.
        scheme: ``md5`` (DVC 3) or ``md5-dos2unix`` (DVC 2).
        size, nfiles: what the file says (``None`` when it does not say).
        source: root-relative path of the ``.dvc`` or ``dvc.lock`` file.
        stage: the ``dvc.lock`` stage that produces it (``None`` for a ``.dvc`` file).
    """

    path: str
    md5: str | None
    scheme: str
    size: int | None = None
    nfiles: int | None = None
    source: str = ""
    stage: str | None = None

    @property
    def is_dir(self) -> bool:
        """True when DVC tracks a directory (its hash ends in ``.dir``)."""
        return bool(self.md5 and self.md5.endswith(".dir"))


@dataclass(frozen=True)
class DvcStage:
    """One stage of a ``dvc.lock``: its command, dependencies, params and outputs."""

    name: str
    source: str
    cmd: str
    deps: tuple[DvcOut, ...] = ()
    outs: tuple[DvcOut, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class YamlStage:
    """One stage of a ``dvc.yaml``: its command and the paths of its deps (root-relative)."""

    name: str
    source: str
    cmd: str
    deps: tuple[str, ...] = ()
    wdir: str = "."


# ---------------------------------------------------------------- YAML with lines on error


def load_yaml(path: Path, shown: str) -> Any:
    """The YAML document in ``path`` (``safe_load``); ``shown`` names it in errors.

    Raises:
        DvcFileError: the file cannot be read or is not valid YAML.
    """
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DvcFileError(shown, f"cannot read the file ({reason})") from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # a safe loader (no Python objects)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        line = mark.line + 1 if mark is not None else None
        raise DvcFileError(shown, f"not valid YAML ({problem})", line=line) from exc


def _line_of(path: Path, keys: Sequence[str | int]) -> int | None:
    """The 1-based line of the node at ``keys`` in a YAML file (for error messages only)."""
    import yaml

    try:
        node: Any = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if node is None:
            break
        line = node.start_mark.line + 1
        found = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == key:
                    line, found = key_node.start_mark.line + 1, value_node
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
            line = found.start_mark.line + 1
        node = found
    return line


class _Reader:
    """Checks one parsed file, raising :class:`DvcFileError` with the key's line."""

    def __init__(self, path: Path, shown: str) -> None:
        self.path = path
        self.shown = shown

    def fail(self, keys: Sequence[str | int], problem: str) -> DvcFileError:
        key = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        return DvcFileError(self.shown, problem, line=_line_of(self.path, keys), key=key)

    def mapping(self, value: Any, keys: Sequence[str | int]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(keys, f"expected a mapping, got {_kind(value)}")
        return value

    def items(self, value: Any, keys: Sequence[str | int]) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(keys, f"expected a list, got {_kind(value)}")
        return value

    def out(
        self, entry: Any, keys: Sequence[str | int], base: str, legacy: bool, stage: str | None
    ) -> DvcOut | None:
        """One ``outs``/``deps`` entry; ``None`` for one that is not a local path with md5."""
        item = self.mapping(entry, keys)
        raw_path = item.get("path")
        if not isinstance(raw_path, str) or not raw_path.strip():
            raise self.fail([*keys, "path"], "expected the tracked path (text)")
        if "://" in raw_path:
            return None  # a remote (external) output: nothing local to compare
        path = _inside(base, raw_path)
        if path is None:
            raise self.fail([*keys, "path"], f"{raw_path!r} leaves the project")
        md5 = item.get("md5")
        if md5 is not None and (not isinstance(md5, str) or not _MD5.match(md5)):
            raise self.fail([*keys, "md5"], f"expected 32 hex digits (+ .dir), got {md5!r}")
        hash_name = item.get("hash")
        if hash_name is None:
            scheme = "md5-dos2unix" if legacy else "md5"
        elif hash_name == "md5":
            scheme = "md5"
        else:
            raise self.fail([*keys, "hash"], f"unknown hash {hash_name!r} (expected md5)")
        numbers: dict[str, int | None] = {}
        for name in ("size", "nfiles"):
            value = item.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise self.fail([*keys, name], f"expected a whole number, got {value!r}")
            numbers[name] = value
        return DvcOut(path, md5, scheme, numbers["size"], numbers["nfiles"], self.shown, stage)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "text" if isinstance(value, str) else type(value).__name__


def _inside(base: str, relative: str) -> str | None:
    """``base/relative`` normalised, root-relative; ``None`` when it leaves the root."""
    if relative.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", relative):
        return None
    joined = os.path.normpath(os.path.join(base, relative.replace("\\", "/")))
    if joined == ".." or joined.startswith("../") or os.path.isabs(joined):
        return None
    return Path(joined).as_posix()


def _base(path: Path, root: Path) -> tuple[str, str]:
    """(root-relative directory of ``path``, root-relative ``path``)."""
    shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    parent = Path(shown).parent.as_posix()
    return ("." if parent in ("", ".") else parent), shown


# ---------------------------------------------------------------- the three files


def read_dvc_file(path: Path, root: Path) -> list[DvcOut]:
    """The outputs a ``.dvc`` file tracks (paths made root-relative).

    Raises:
        DvcFileError: not YAML, no ``outs``, or a bad entry (file, line and key).
    """
    base, shown = _base(path, root)
    reader = _Reader(path, shown)
    data = reader.mapping(load_yaml(path, shown), [])
    if "outs" not in data:
        raise reader.fail([], "no outs: expected a list of tracked paths (`dvc add PATH`)")
    found = []
    for index, entry in enumerate(reader.items(data["outs"], ["outs"])):
        out = reader.out(entry, ["outs", index], base, legacy=True, stage=None)
        if out is not None:
            found.append(out)
    return found


def read_dvc_lock(path: Path, root: Path, wdirs: Mapping[str, str] | None = None) -> list[DvcStage]:
    """The stages of a ``dvc.lock`` (``wdirs``: stage name -> ``wdir`` from ``dvc.yaml``).

    Raises:
        DvcFileError: not YAML, an unknown schema, or a bad stage (file, line and key).
    """
    base, shown = _base(path, root)
    reader = _Reader(path, shown)
    data = reader.mapping(load_yaml(path, shown) or {}, [])
    prefix: list[str | int] = []
    legacy = "schema" not in data
    if not legacy:
        if str(data["schema"]) != "2.0":
            raise reader.fail(["schema"], f"unknown schema {data['schema']!r} (expected '2.0')")
        data = reader.mapping(data.get("stages") or {}, ["stages"])
        prefix = ["stages"]
    stages = []
    for name, raw in data.items():
        keys = [*prefix, str(name)]
        stage = reader.mapping(raw, keys)
        stage_base = _inside(base, (wdirs or {}).get(str(name), ".")) or base
        cmd = stage.get("cmd", "")
        if isinstance(cmd, list):
            cmd = " && ".join(str(part) for part in cmd)
        if not isinstance(cmd, str):
            raise reader.fail([*keys, "cmd"], f"expected the command (text), got {_kind(cmd)}")
        lists: dict[str, list[DvcOut]] = {}
        for kind in ("deps", "outs"):
            lists[kind] = []
            for index, entry in enumerate(reader.items(stage.get(kind), [*keys, kind])):
                out = reader.out(entry, [*keys, kind, index], stage_base, legacy, str(name))
                if out is not None:
                    lists[kind].append(out)
        params = stage.get("params") or {}
        reader.mapping(params, [*keys, "params"])
        stages.append(
            DvcStage(str(name), shown, cmd, tuple(lists["deps"]), tuple(lists["outs"]), params)
        )
    return stages


def read_dvc_yaml(path: Path, root: Path) -> list[YamlStage]:
    """The stages of a ``dvc.yaml`` with their commands and dependency paths.

    Raises:
        DvcFileError: not YAML or a stage that is not a mapping.
    """
    base, shown = _base(path, root)
    reader = _Reader(path, shown)
    data = reader.mapping(load_yaml(path, shown) or {}, [])
    stages = []
    for name, raw in reader.mapping(data.get("stages") or {}, ["stages"]).items():
        keys: list[str | int] = ["stages", str(name)]
        stage = reader.mapping(raw, keys)
        wdir = stage.get("wdir", ".")
        stage_base = _inside(base, str(wdir)) or base
        cmd = stage.get("cmd", "")
        if isinstance(cmd, list):
            cmd = " && ".join(str(part) for part in cmd)
        deps = []
        for index, dep in enumerate(reader.items(stage.get("deps"), [*keys, "deps"])):
            text = dep if isinstance(dep, str) else None
            if isinstance(dep, dict) and len(dep) == 1:  # `- path: {cache: false}` forms
                text = str(next(iter(dep)))
            if text is None:
                raise reader.fail([*keys, "deps", index], "expected a path")
            inside = _inside(stage_base, text)
            if inside is not None:
                deps.append(inside)
        stages.append(YamlStage(str(name), shown, str(cmd), tuple(deps), str(wdir)))
    return stages


def find_dvc_files(datasets_dir: Path, root: Path) -> tuple[list[Path], list[Path]]:
    """``.dvc`` files under ``datasets_dir`` and ``dvc.lock`` files at the root or under it.

    The walk does not enter a directory a ``.dvc`` file beside it tracks (its data),
    nor ``.git``, ``.dvc``, ``.mlbook`` or hidden directories.
    """
    dvc_files: list[Path] = []
    locks: list[Path] = [root / "dvc.lock"] if (root / "dvc.lock").is_file() else []
    if not datasets_dir.is_dir():
        return dvc_files, locks
    for directory, dirnames, filenames in os.walk(datasets_dir):
        tracked = {name[:-4] for name in filenames if name.endswith(".dvc")}
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in tracked and not d.startswith(".") and d not in _SKIP_DIRS
        )
        here = Path(directory)
        dvc_files.extend(here / name for name in sorted(filenames) if name.endswith(".dvc"))
        if "dvc.lock" in filenames:
            locks.append(here / "dvc.lock")
    return dvc_files, locks


def dvc_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.dvc/`` (a DVC repository)."""
    for directory in (start, *start.parents):
        if (directory / ".dvc").is_dir():
            return directory
    return None


# ---------------------------------------------------------------- DVC's own hash state


class DvcState:
    """Read-only view of DVC's hash state: path -> md5 while inode, mtime and size still match.

    DVC 3 keeps it in ``<site_cache_dir>/repo/<token>/hashes/local/cache.db``; the token
    is DVC's md5 of (repository root, None, the mtime of ``.dvc/tmp/btime``, user, 3,
    0). When the file is not there (DVC 2, another user, no ``dvc`` run yet) every
    lookup misses and the caller hashes.
    """

    def __init__(self, repo_root: Path | None) -> None:
        self.db: sqlite3.Connection | None = None
        path = _state_file(repo_root) if repo_root is not None else None
        if path is not None and path.is_file():
            with contextlib.suppress(sqlite3.Error):
                db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0)
                db.execute("SELECT key, value FROM Cache LIMIT 0")
                self.db = db

    def close(self) -> None:
        """Close the state file."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def lookup(self, files: Iterable[tuple[str, os.stat_result]], scheme: str) -> dict[str, str]:
        """md5 of each absolute path whose recorded checksum matches its stat now."""
        wanted = dict(files)
        if self.db is None or not wanted:
            return {}
        found: dict[str, str] = {}
        paths = list(wanted)
        for start in range(0, len(paths), 900):
            chunk = paths[start : start + 900]
            try:
                rows = self.db.execute(
                    f"SELECT key, value FROM Cache WHERE raw = 1 AND key IN "
                    f"({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
            except sqlite3.Error:
                return found
            for key, value in rows:
                md5 = _state_md5(value, wanted[key], scheme) if isinstance(value, str) else None
                if md5 is not None:
                    found[key] = md5
        return found


def _state_md5(raw: str, stat: os.stat_result, scheme: str) -> str | None:
    import json

    try:
        entry = json.loads(raw)
        recorded = str(entry["checksum"])
        hash_info = entry["hash_info"]
    except (ValueError, KeyError, TypeError):
        return None
    checksum = str(
        int(
            hashlib.md5(str(([stat.st_ino, stat.st_mtime, stat.st_size],)).encode()).hexdigest(), 16
        )
    )
    if recorded != checksum or not isinstance(hash_info, dict):
        return None
    version = entry.get("version")
    name, value = next(iter(hash_info.items()), (None, None))
    if name == "md5" and version is None:
        name = "md5-dos2unix"  # DVC 2 wrote no version: its md5 was dos2unix
    if name != scheme or not isinstance(value, str) or not _MD5.match(value):
        return None
    return value


def _state_file(repo_root: Path) -> Path | None:
    site = os.environ.get("DVC_SITE_CACHE_DIR") or _configured_site_cache(repo_root)
    if site is None:
        site = "/var/tmp/dvc" if os.name == "posix" else None
    if site is None:
        return None
    try:
        btime: float | None = os.path.getmtime(repo_root / ".dvc" / "tmp" / "btime")
    except OSError:
        btime = getattr(os.stat(repo_root), "st_birthtime", None)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return None
    token = hashlib.md5(str((str(repo_root), None, btime, user, 3, 0)).encode()).hexdigest()
    return Path(site) / "repo" / token / "hashes" / "local" / "cache.db"


def _configured_site_cache(repo_root: Path) -> str | None:
    for name in ("config.local", "config"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        with contextlib.suppress(OSError, configparser.Error):
            parser.read(repo_root / ".dvc" / name, encoding="utf-8")
            value = parser.get("core", "site_cache_dir", fallback=None)
            if value:
                return value.strip().strip("'\"")
    return None


# ---------------------------------------------------------------- the dvc command


def run_dvc(
    args: Sequence[str], cwd: Path, timeout: float = DVC_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` in ``cwd`` (a subprocess; DVC is never imported).

    Raises:
        DatasetError: ``dvc`` is not on ``PATH``, or it did not finish in time.
    """
    executable = shutil.which("dvc")
    if executable is None:
        raise DatasetError(
            "dvc is not installed (not on PATH); install it with `pip install 'mlbook[dvc]'` "
            "or `pip install dvc`"
        )
    try:
        return subprocess.run(
            [executable, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"dvc {' '.join(args)} did not finish within {timeout:g} s") from exc


def walk_files(top: Path | str) -> list[tuple[str, os.stat_result]]:
    """Every file under ``top`` as DVC lists it: ``(relpath, stat)``.

    Like DVC: symbolic links to files are followed, links to directories are not
    entered, and ``.git``, ``.hg`` and ``.dvc`` directories (and files named
    ``.git``) are left out.
    """
    found: list[tuple[str, os.stat_result]] = []
    pending = [(os.fspath(top), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if name not in (".git", ".hg", ".dvc"):
                        pending.append((entry.path, f"{prefix}{name}/"))
                    continue
                if name == ".git" or (entry.is_symlink() and entry.is_dir()):
                    continue
                found.append((prefix + name, entry.stat()))
            except OSError:
                continue  # a broken link or a file that vanished
    return found
