"""The run pack file (``runs.mlbook``): its members, its manifest, writing and checking it.

A pack is an uncompressed tar (POSIX pax) whose members come in this order:

- ``manifest.json``: what the pack holds (:class:`PackManifest`): the packing
  project's name and root commits, the runs with their content hashes, and every
  other member with its size and sha256;
- ``signature.json``: the manifest signed with the packing project's Ed25519 key
  (:mod:`mlbook.deploy.signing`, with a context of its own, so an export
  signature never passes for a pack's or the other way round);
- ``runs.msgpack``: the store rows of the runs (:class:`Rows`), metric chunks
  as they are stored;
- ``refs.bundle``: a git bundle of the runs' ``refs/mlbook/runs/<id>/{before,after}``
  (absent when no run has a snapshot);
- ``outputs/<run-id>/<path>``: files from the runs' output directories.

:func:`read_pack` reads a pack as a stream (a file, a pipe from ``ssh``) and
refuses it before the caller writes anything: a signature that does not match,
a key nobody trusts (unless ``trust``), a member that is not listed, has another
size or sha256, comes twice or is missing, a truncated stream. Members are
staged under a directory the caller gives (inside ``.mlbook/tmp/``), never
under their own names.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Literal

import msgspec

from mlbook.errors import TransferError
from mlbook.experiments.query import ExperimentRow, StoredRun

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_MEMBER",
    "OUTPUTS_PREFIX",
    "REFS_MEMBER",
    "ROWS_MEMBER",
    "SIGNATURE_MEMBER",
    "SIGNING_CONTEXT",
    "Member",
    "PackManifest",
    "PackedRun",
    "ReadPack",
    "Rows",
    "Source",
    "read_pack",
    "safe_relative",
    "write_pack",
]

FORMAT = "mlbook-pack"
FORMAT_VERSION = 1
MANIFEST_MEMBER = "manifest.json"
SIGNATURE_MEMBER = "signature.json"
ROWS_MEMBER = "runs.msgpack"
REFS_MEMBER = "refs.bundle"
OUTPUTS_PREFIX = "outputs/"
#: Signed before the manifest bytes: a pack signature is never an export signature.
SIGNING_CONTEXT = b"mlbook-run-pack-v1\n"
_MAX_MANIFEST = 64 * 1024 * 1024
_MAX_SIGNATURE = 64 * 1024
#: the rows are decoded in memory: a larger pack is refused (split it by experiment)
_MAX_ROWS = 2 * 1024 * 1024 * 1024
_BLOCK = 1 << 20

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class Member(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One member of the pack after the signature: path, size, sha256."""

    path: str
    size: Annotated[int, msgspec.Meta(ge=0)]
    sha256: Sha256


class PackedRun(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A run in the pack: ID, experiment, version and content hash."""

    id: str
    experiment: str
    version: str
    sha256: Sha256


class PackManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``manifest.json``: what the pack holds and where it came from."""

    format: Literal["mlbook-pack"] = "mlbook-pack"
    format_version: int = FORMAT_VERSION
    created: str
    mlbook: str
    project: str
    #: root commits of the packing clone's HEAD: the same project shares them
    roots: list[str] = msgspec.field(default_factory=list)
    schema: int
    outputs: Literal["none", "small", "all"]
    runs: list[PackedRun] = msgspec.field(default_factory=list)
    members: list[Member] = msgspec.field(default_factory=list)


class _Head(msgspec.Struct):
    format: str = ""
    format_version: int = 0


class Rows(msgspec.Struct, frozen=True):
    """``runs.msgpack``: the runs' store rows and the rows of their experiments."""

    runs: list[StoredRun]
    experiments: list[ExperimentRow]


@dataclass(frozen=True)
class Source:
    """What a member is made from: bytes, or a file whose sha256 is already known."""

    member: Member
    data: bytes | None = None
    path: Path | None = None


def write_pack(
    out: IO[bytes], manifest: bytes, signature: bytes, sources: Sequence[Source]
) -> None:
    """Write the pack to ``out`` as a tar stream (manifest, signature, then ``sources``).

    A file that changed since it was hashed fails the pack.

    Raises:
        TransferError: a source file changed or vanished while it was packed.
    """
    stamp = int(time.time())
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST_MEMBER, manifest, stamp)
        _add_bytes(tar, SIGNATURE_MEMBER, signature, stamp)
        for source in sources:
            if source.data is not None:
                _add_bytes(tar, source.member.path, source.data, stamp)
                continue
            assert source.path is not None
            info = _info(source.member.path, source.member.size, stamp)
            try:
                with open(source.path, "rb") as handle:
                    reader = _HashingReader(handle)
                    tar.addfile(info, reader)
            except OSError as exc:
                raise TransferError(
                    f"{source.path}: cannot be packed ({exc.strerror or exc}); try again"
                ) from exc
            if reader.digest.hexdigest() != source.member.sha256:
                raise TransferError(
                    f"{source.path}: changed while it was packed; pack again when it is written"
                )


def _info(name: str, size: int, stamp: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = stamp
    info.mode = 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, stamp: int) -> None:
    tar.addfile(_info(name, len(data), stamp), io.BytesIO(data))


class _HashingReader:
    """A file reader that hashes what is read (the tar writer reads exactly ``size``)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


@dataclass(frozen=True)
class ReadPack:
    """A pack that passed every check: its manifest, signer and staged members.

    Attributes:
        manifest: the parsed manifest.
        signer: the fingerprint of the key that signed it (``None``: unsigned, trusted anyway).
        files: member path -> the staged file holding its bytes (every member but the rows).
        rows: the bytes of ``runs.msgpack``, kept in memory (they are decoded at once).
    """

    manifest: PackManifest
    signer: str | None
    files: dict[str, Path]
    rows: bytes = b""


def read_pack(
    stream: IO[bytes],
    name: str,
    staging: Path,
    trusted: Sequence[object],
    *,
    trust: bool = False,
) -> ReadPack:
    """Read and check a pack from ``stream``, staging its members under ``staging``.

    Args:
        stream: the pack's bytes (read once, front to back).
        name: what to call the pack in messages (its path, or ``HOST:PATH``).
        staging: an existing empty directory for the members' bytes.
        trusted: the public keys (:class:`mlbook.deploy.signing.PublicKey`) to trust.
        trust: accept an unsigned pack or one signed by a key not in ``trusted``
            (a signature that does not match is refused all the same).

    Raises:
        TransferError: one line saying what is wrong with the pack.
    """
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return _read(tar, name, staging, trusted, trust)
    except (tarfile.TarError, EOFError) as exc:
        raise TransferError(
            f"{name}: not a complete run pack ({exc}); the file is truncated or damaged, "
            "copy or make it again"
        ) from exc
    except OSError as exc:
        raise TransferError(f"{name}: cannot read the pack ({exc.strerror or exc})") from exc


def _read(
    tar: tarfile.TarFile, name: str, staging: Path, trusted: Sequence[object], trust: bool
) -> ReadPack:
    from mlbook.deploy.signing import PublicKey, verify_signature

    members = iter(tar)
    first = next(members, None)
    if first is None or first.name != MANIFEST_MEMBER or not first.isreg():
        raise TransferError(
            f"{name}: not a run pack (it does not start with {MANIFEST_MEMBER}); "
            "make one with `mlbook pack`"
        )
    manifest_bytes = _read_member(tar, first, _MAX_MANIFEST, name)
    second = next(members, None)
    signer: str | None = None
    pending = second
    if second is not None and second.name == SIGNATURE_MEMBER and second.isreg():
        data = _read_member(tar, second, _MAX_SIGNATURE, name)
        keys = [key for key in trusted if isinstance(key, PublicKey)]
        check = verify_signature(data, manifest_bytes, keys, SIGNING_CONTEXT)
        if check.status == "bad":
            raise TransferError(
                f"{name}: the signature does not match the manifest ({check.problem}); "
                "the pack was changed after it was made: refused, nothing was written"
            )
        if check.status == "foreign" and not trust:
            raise TransferError(
                f"{name}: signed by key {check.key}, which is not trusted ({check.problem}); "
                "run `mlbook key --export FILE` in the packing project and pass "
                "--trust-key FILE (or list it in MLBOOK_TRUSTED_KEYS), or --trust"
            )
        signer = check.key
        pending = None
    elif not trust:
        raise TransferError(
            f"{name}: the pack is not signed; unpack it with --trust only if you know "
            "where it came from"
        )
    manifest = _parse_manifest(manifest_bytes, name)
    expected = {member.path: member for member in manifest.members}
    if len(expected) != len(manifest.members):
        raise TransferError(f"{name}: {MANIFEST_MEMBER} lists a member twice; make the pack again")
    for path in expected:
        _check_member_name(path, name)
    files: dict[str, Path] = {}
    seen: set[str] = set()
    rows = b""
    rest: Iterable[tarfile.TarInfo] = members if pending is None else chain([pending], members)
    for info in rest:
        listed = expected.get(info.name)
        if listed is None or info.name in seen:
            raise TransferError(
                f"{name}: member {info.name!r} is not listed in {MANIFEST_MEMBER}"
                + (" (or comes twice)" if listed is not None else "")
                + "; the pack was changed after it was made: refused, nothing was written"
            )
        if not info.isreg() or info.size != listed.size:
            raise TransferError(
                f"{name}: member {info.name!r} is not the {listed.size}-byte file the manifest "
                "lists; the pack was changed after it was made: refused, nothing was written"
            )
        if info.name == ROWS_MEMBER:
            rows = _read_member(tar, info, _MAX_ROWS, name)
            digest = hashlib.sha256(rows).hexdigest()
        else:
            target = staging / f"{len(files):06d}"
            digest = _stage(tar, info, target)
        if digest != listed.sha256:
            raise TransferError(
                f"{name}: member {info.name!r} has sha256 {digest[:12]}…, the manifest says "
                f"{listed.sha256[:12]}…; the pack was changed or damaged: refused, "
                "nothing was written"
            )
        seen.add(info.name)
        if info.name != ROWS_MEMBER:
            files[info.name] = target
    missing = sorted(set(expected) - seen)
    if missing:
        raise TransferError(
            f"{name}: {len(missing)} member(s) listed in {MANIFEST_MEMBER} are missing "
            f"(first: {missing[0]}); the pack is truncated: copy or make it again"
        )
    return ReadPack(manifest, signer, files, rows)


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, limit: int, name: str) -> bytes:
    if info.size > limit:
        raise TransferError(
            f"{name}: {info.name} is too large ({info.size} bytes); "
            "pack fewer runs at a time (by experiment, or with filters)"
        )
    handle = tar.extractfile(info)
    assert handle is not None
    data = handle.read()
    if len(data) != info.size:
        raise EOFError(f"{info.name} is cut short")
    return data


def _stage(tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path) -> str:
    """Copy a member's bytes to ``target``; return their sha256."""
    handle = tar.extractfile(info)
    assert handle is not None
    digest = hashlib.sha256()
    written = 0
    with open(target, "xb") as out:
        while block := handle.read(_BLOCK):
            digest.update(block)
            out.write(block)
            written += len(block)
    if written != info.size:
        raise EOFError(f"{info.name} is cut short")
    return digest.hexdigest()


def _parse_manifest(data: bytes, name: str) -> PackManifest:
    try:
        head = msgspec.json.decode(data, type=_Head)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise TransferError(f"{name}: {MANIFEST_MEMBER} is not valid ({exc})") from exc
    if head.format != FORMAT:
        raise TransferError(f"{name}: not a run pack (format {head.format!r})")
    if head.format_version > FORMAT_VERSION:
        raise TransferError(
            f"{name}: pack format {head.format_version} is newer than this mlbook reads "
            f"({FORMAT_VERSION}); upgrade mlbook"
        )
    try:
        return msgspec.json.decode(data, type=PackManifest)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise TransferError(f"{name}: {MANIFEST_MEMBER} is not valid ({exc})") from exc


def _check_member_name(path: str, name: str) -> None:
    fixed = (MANIFEST_MEMBER, SIGNATURE_MEMBER)
    if path in fixed or (
        path not in (ROWS_MEMBER, REFS_MEMBER)
        and not (path.startswith(OUTPUTS_PREFIX) and safe_relative(path) is not None)
    ):
        raise TransferError(
            f"{name}: {MANIFEST_MEMBER} lists {path!r}, which a run pack cannot hold; refused"
        )


def safe_relative(path: str) -> PurePosixPath | None:
    """``path`` as a plain relative posix path, or ``None`` when it could leave its directory."""
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or "\x00" in path
        or pure.is_absolute()
        or any(part in ("..", ".") for part in path.split("/"))
        or pure.as_posix() != path
    ):
        return None
    return pure
