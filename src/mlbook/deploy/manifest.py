"""The bundle manifest (``manifest.json``): what an export holds, and the checks on it.

The manifest lists every file of the bundle with its size and sha256, plus where
the bundle came from (experiment, version, run, commits, data version) and what
it needs (Python and package versions, the entry point). :func:`check_bundle`
refuses a bundle whose files differ from the list in any way: a changed,
missing or extra file, a path that leaves the bundle (``..``, absolute) or a
symbolic link anywhere inside it. :func:`check_files` does the same and hands
back the bytes it hashed for the files the caller will use, so that nothing is
read twice (see :mod:`mlbook.deploy.loader`).

Any bytes in ``manifest.json`` give a :class:`Manifest` or one
:class:`~mlbook.errors.ExportError` line naming the file: not JSON, not UTF-8,
nested too deep, too large, a wrong type or an unknown field. Its signature
(``signature.json``) is :mod:`mlbook.deploy.signing`'s business; neither file is
listed in ``files``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import msgspec

from mlbook._fs import atomic_write_bytes, sha256_file
from mlbook.errors import ExportError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "FileEntry",
    "Manifest",
    "OnnxInfo",
    "Verification",
    "check_bundle",
    "check_files",
    "check_path",
    "hash_files",
    "parse_manifest",
    "read_manifest",
    "read_manifest_bytes",
    "write_manifest",
]

FORMAT = "mlbook-export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "signature.json"
#: The two files that describe the bundle and are not listed in it.
_META_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})
#: Larger than any real manifest; a bigger file is refused before it is parsed.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class FileEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One file of the bundle: path (posix, relative to the bundle), size, sha256."""

    path: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class OnnxInfo(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ONNX copy of the model and how closely onnxruntime matched the framework."""

    file: str
    opset: int | None = None
    max_abs_diff: float | None = None


class Verification(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the clean child process did with the bundle before it was declared done."""

    ok: bool
    seconds: float
    predicted: bool
    output: str = ""
    python: str = ""


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``manifest.json``. ``files`` lists every file except the manifest itself."""

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    experiment: str
    version: str
    run_id: str
    title: str = ""
    entry_point: str
    created: str
    mlbook: str
    python: str
    packages: dict[str, str] = msgspec.field(default_factory=dict)
    commits: dict[str, str | None] = msgspec.field(default_factory=dict)
    #: set when the code changed since the run: the code was taken from this commit
    code_commit: str | None = None
    dataset: str | None = None
    data_version: str | None = None
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    weights: list[str] = msgspec.field(default_factory=list)
    weights_format: str = ""
    params_file: str = "params.json"
    labels_file: str | None = None
    sample_file: str | None = None
    onnx: OnnxInfo | None = None
    verification: Verification | None = None
    files: list[FileEntry] = msgspec.field(default_factory=list)


def check_path(path: str, where: Path | str = MANIFEST_FILE) -> PurePosixPath:
    """Refuse a manifest path that could leave the bundle; return it as a posix path.

    Raises:
        ExportError: empty, absolute, with ``..``, a backslash or a drive letter.
    """
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or "\x00" in path
        or pure.is_absolute()
        or ".." in pure.parts
        or (len(path) > 1 and path[1] == ":")
        or pure.as_posix() != path
        or path == "."
        or path in _META_FILES
    ):
        raise ExportError(
            f"{where}: path {path!r} escapes the bundle or is not a plain relative path; "
            "the export was altered, re-export it"
        )
    return pure


def _scan(root: Path) -> dict[str, Path]:
    """Every file under ``root`` (posix relative path -> path); refuses symlinks and specials."""
    found: dict[str, Path] = {}
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(directory)
        for name in [*dirnames, *filenames]:
            path = base / name
            mode = path.lstat().st_mode
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise ExportError(
                    f"{root}: {relative} is a symbolic link; an export holds plain files only"
                )
            if name in filenames and not stat.S_ISREG(mode):
                raise ExportError(f"{root}: {relative} is not a regular file")
            if name in filenames:
                found[relative] = path
    return found


def hash_files(root: Path) -> list[FileEntry]:
    """Size and sha256 of every file under ``root`` except the manifest and its
    signature, sorted by path."""
    entries = [
        FileEntry(relative, path.stat().st_size, sha256_file(path))
        for relative, path in _scan(root).items()
        if relative not in _META_FILES
    ]
    return sorted(entries, key=lambda entry: entry.path)


def read_manifest(root: Path | str) -> Manifest:
    """Read and validate ``root/manifest.json`` (not the files; see :func:`check_bundle`).

    Raises:
        ExportError: no manifest, not JSON, a wrong format or a bad path in it.
    """
    return parse_manifest(read_manifest_bytes(root), Path(root) / MANIFEST_FILE)


def read_manifest_bytes(root: Path | str) -> bytes:
    """The bytes of ``root/manifest.json`` (to check a signature on, then parse).

    Raises:
        ExportError: not a bundle directory, no manifest, a link, unreadable or too large.
    """
    path = Path(root) / MANIFEST_FILE
    if not Path(root).is_dir():
        raise ExportError(f"{root}: not a directory; give the path of an export bundle")
    if path.is_symlink():
        raise ExportError(f"{path}: is a symbolic link; an export holds plain files only")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ExportError(
            f"{path}: missing; {root} is not an export bundle (create one with `mlbook export`)"
        ) from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise ExportError(
            f"{path}: larger than {MAX_MANIFEST_BYTES // 2**20} MiB, not a manifest mlbook "
            "wrote; re-export the model"
        )
    return data


class _Header(msgspec.Struct):
    """The two fields read first, to say "not a manifest" or "too new" before anything else."""

    format: Any = None
    format_version: Any = None


def parse_manifest(data: bytes, path: Path | str = MANIFEST_FILE) -> Manifest:
    """Decode manifest bytes into a :class:`Manifest`; check every path in it.

    Raises:
        ExportError: one line naming ``path``, for any input that is not a valid manifest.
    """
    try:
        header = msgspec.json.decode(data, type=_Header)
    except msgspec.ValidationError as exc:
        raise ExportError(
            f"{path}: not an mlbook export manifest ({_short(exc)}); re-export the model"
        ) from exc
    except msgspec.DecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({_short(exc)}); re-export the model") from exc
    except RecursionError as exc:
        raise ExportError(
            f"{path}: not valid JSON (nested too deeply); re-export the model"
        ) from exc
    if header.format != FORMAT:
        raise ExportError(f"{path}: not an mlbook export manifest (format is not {FORMAT!r})")
    if header.format_version != FORMAT_VERSION:
        shown = _short(repr(header.format_version))
        raise ExportError(
            f"{path}: format_version {shown} is not supported by this "
            f"mlbook (expects {FORMAT_VERSION}); upgrade mlbook or re-export"
        )
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except (msgspec.DecodeError, RecursionError) as exc:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else _short(exc)
        raise ExportError(f"{path}: {problem}; re-export the model") from exc
    for entry in manifest.files:
        check_path(entry.path, path)
    for name in (manifest.entry_point, manifest.params_file, *manifest.weights):
        check_path(name, path)
    for optional in (manifest.labels_file, manifest.sample_file):
        if optional is not None:
            check_path(optional, path)
    return manifest


def _short(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_bundle(root: Path | str, manifest: Manifest | None = None) -> Manifest:
    """Check every file of the bundle at ``root`` against its manifest.

    Returns the manifest. Raises :class:`ExportError` naming the first file that is
    changed (size or sha256), missing, extra (not in the manifest), or a symbolic link.
    """
    manifest = manifest or read_manifest(root)
    check_files(root, manifest)
    return manifest


def check_files(
    root: Path | str, manifest: Manifest, keep: Callable[[str], bool] | None = None
) -> dict[str, bytes]:
    """Check every file of the bundle against ``manifest``; return the files ``keep`` wants.

    The kept files are read once, and their hash is taken of exactly the bytes
    returned: what the caller uses is what was checked, whatever happens on disk
    afterwards. The others are hashed as they stream by.

    Raises:
        ExportError: a changed, missing, extra or unreadable file, or a symbolic link.
    """
    base = Path(root)
    where = base / MANIFEST_FILE
    listed: dict[str, FileEntry] = {}
    for entry in manifest.files:
        if entry.path in listed:
            raise ExportError(f"{where}: {entry.path} is listed twice; re-export the model")
        listed[entry.path] = entry
    try:
        present = _scan(base)
    except OSError as exc:
        raise ExportError(f"{base}: cannot list the bundle ({exc.strerror})") from exc
    for name in _META_FILES:
        present.pop(name, None)
    for name in sorted(present):
        if name not in listed:
            raise ExportError(
                f"{base}: extra file {name} is not in the manifest; remove it or re-export"
            )
    kept: dict[str, bytes] = {}
    for name, entry in listed.items():
        path = present.get(name)
        if path is None:
            raise ExportError(f"{base}: file {name} is missing; re-export or copy the whole bundle")
        try:
            if keep is not None and keep(name):
                data = path.read_bytes()
                size, digest = len(data), hashlib.sha256(data).hexdigest()
                kept[name] = data
            else:
                size, digest = path.stat().st_size, ""
                if size == entry.size:
                    digest = sha256_file(path)
        except OSError as exc:
            raise ExportError(f"{base}: file {name} cannot be read ({exc.strerror})") from exc
        if size != entry.size or digest != entry.sha256:
            raise ExportError(
                f"{base}: file {name} was changed after export (sha256 differs from the "
                "manifest); re-export the model"
            )
    for name in (manifest.entry_point, manifest.params_file, *manifest.weights):
        if name not in listed:
            raise ExportError(f"{where}: {name} is named but not listed in files; re-export")
    return kept


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file under ``root`` into ``manifest.files`` and write ``manifest.json``."""
    sealed = msgspec.structs.replace(manifest, files=hash_files(root))
    atomic_write_bytes(
        root / MANIFEST_FILE, msgspec.json.format(msgspec.json.encode(sealed)) + b"\n"
    )
    return sealed
