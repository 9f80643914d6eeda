"""Bundle signatures: the project's Ed25519 key, signing at export, checking at load.

A project signs its exports with one key pair kept outside every bundle, in
``.mlbook/keys/`` (git-ignored): ``signing.key`` (private, PKCS#8 PEM, mode 0600)
and ``signing.pub`` (public, SubjectPublicKeyInfo PEM; ``openssl pkey`` reads
both). The pair is made on first use (the first export, or ``mlbook key``).

A bundle's ``signature.json`` holds an Ed25519 signature of the exact bytes of
its ``manifest.json`` (which lists the sha256 of every other file), with the
signer's public key and fingerprint. :func:`check_signature` sorts a bundle into
one of four states: ``trusted`` (signed by a key the caller trusts), ``foreign``
(a valid signature by a key it does not trust), ``unsigned`` and ``bad`` (the
signature does not match the manifest: one of them was changed after signing).

Which keys are trusted (:func:`trusted_keys`): the ones passed in; else the
public key files named in ``MLBOOK_TRUSTED_KEYS`` plus, when the bundle sits
inside a project that has a key, that project's own key.

Only the small ``ed25519`` module of ``cryptography`` is imported, and only when a
signature is made or checked; PEM files are read and written here (their DER
layout for Ed25519 is fixed).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from mlbook.deploy.manifest import MANIFEST_FILE, SIGNATURE_FILE
from mlbook.errors import ExportError

__all__ = [
    "KEY_DIR",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "SIGNATURE_FILE",
    "TRUSTED_KEYS_ENV",
    "KeySource",
    "PublicKey",
    "SignatureCheck",
    "SignatureStatus",
    "SigningKey",
    "check_signature",
    "export_public_key",
    "project_key",
    "read_public_key",
    "sign_bundle",
    "signature_bytes",
    "trusted_keys",
    "verify_signature",
]

KEY_DIR = "keys"
PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
#: Environment variable: public key files to trust, separated by ``os.pathsep``.
TRUSTED_KEYS_ENV = "MLBOOK_TRUSTED_KEYS"

#: What is signed: a fixed context, then the manifest bytes (so a project key's
#: signature over a manifest can never be taken for a signature over anything else).
_CONTEXT = b"mlbook-export-manifest-v1\n"
# DER prefixes of an Ed25519 SubjectPublicKeyInfo and PKCS#8 private key (RFC 8410).
_PUBLIC_DER = bytes.fromhex("302a300506032b6570032100")
_PRIVATE_DER = bytes.fromhex("302e020100300506032b657004220420")
_MAX_KEY_FILE = 64 * 1024

SignatureStatus = Literal["trusted", "foreign", "unsigned", "bad"]


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (32 raw bytes), where it came from, and whether it is the
    key of the project a bundle sits in."""

    raw: bytes
    source: str = ""
    project: bool = False

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64>`` of the raw key, as ``ssh-keygen -l`` prints fingerprints."""
        digest = hashlib.sha256(self.raw).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def to_pem(self) -> bytes:
        """The key as a ``-----BEGIN PUBLIC KEY-----`` PEM block."""
        return _pem("PUBLIC KEY", _PUBLIC_DER + self.raw)

    @classmethod
    def from_pem(cls, data: bytes, source: str) -> PublicKey:
        """Parse a PEM public key (Ed25519 only).

        Raises:
            ExportError: not an Ed25519 public key in PEM.
        """
        der = _unpem(data, "PUBLIC KEY")
        if der is None or len(der) != 44 or not der.startswith(_PUBLIC_DER):
            raise ExportError(
                f"{source}: not an Ed25519 public key in PEM; export one with "
                "`mlbook key --export FILE` in the project that signs the bundles"
            )
        return cls(der[len(_PUBLIC_DER) :], source)


class SigningKey:
    """The private half of a project's key pair."""

    def __init__(self, seed: bytes, path: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.path = path
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes_raw()
        self.public = PublicKey(public, str(path.with_name(PUBLIC_KEY_FILE)))

    @classmethod
    def read(cls, path: Path | str) -> SigningKey:
        """Read a private key file (PKCS#8 PEM, Ed25519).

        Raises:
            ExportError: unreadable, or not an Ed25519 private key.
        """
        where = Path(path)
        der = _unpem(_read_small(where), "PRIVATE KEY")
        if der is None or len(der) != 48 or not der.startswith(_PRIVATE_DER):
            raise ExportError(
                f"{where}: not an Ed25519 private key in PEM; move it away and run "
                "`mlbook key` to make a new key pair (bundles signed with the old one "
                "then need re-exporting)"
            )
        return cls(der[len(_PRIVATE_DER) :], where)

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data``."""
        return self._key.sign(data)


class _Signature(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``signature.json``."""

    format: Literal["mlbook-signature"] = "mlbook-signature"
    algorithm: Literal["ed25519"] = "ed25519"
    key: str
    public_key: str
    signature: str


@dataclass(frozen=True)
class SignatureCheck:
    """What :func:`check_signature` found.

    Attributes:
        status: ``trusted``, ``foreign``, ``unsigned`` or ``bad``.
        key: the signer's fingerprint (``None`` when unsigned or unreadable).
        project: the signer is the key of the project the bundle sits in.
        problem: why the bundle is not ``trusted``, as one line ("" when it is).
    """

    status: SignatureStatus
    key: str | None = None
    project: bool = False
    problem: str = ""

    @property
    def ok(self) -> bool:
        """True when a trusted key signed the manifest."""
        return self.status == "trusted"


# -- the project's key pair ---------------------------------------------------------------


def key_dir(project_root: Path) -> Path:
    """``<project>/.mlbook/keys``."""
    from mlbook.project import STATE_DIR

    return project_root / STATE_DIR / KEY_DIR


def project_key(project_root: Path | str) -> SigningKey:
    """The project's signing key, made on first use.

    Two processes making it at once end with one key: the second one finds the
    first one's files (each is written to a private temporary file and linked
    into place, never overwritten).

    Raises:
        ExportError: the key files cannot be read or written.
    """
    directory = key_dir(Path(project_root))
    private = directory / PRIVATE_KEY_FILE
    if not private.exists():
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_new(private, _pem("PRIVATE KEY", _PRIVATE_DER + seed), 0o600)
        except OSError as exc:
            raise ExportError(
                f"{directory}: cannot write the project's signing key ({exc.strerror})"
            ) from exc
    key = SigningKey.read(private)
    public = directory / PUBLIC_KEY_FILE
    try:
        current: bytes | None = read_public_key(public).raw
    except ExportError:  # missing or damaged: written again from the private key
        current = None
    if current != key.public.raw:
        try:
            from mlbook._fs import atomic_write_bytes

            atomic_write_bytes(public, key.public.to_pem())
        except OSError as exc:
            raise ExportError(f"{public}: cannot write the public key ({exc.strerror})") from exc
    return key


def export_public_key(project_root: Path | str, destination: Path | str) -> Path:
    """Write the project's public key (PEM) to ``destination``; make the key pair first
    if there is none. Returns the file written.

    Raises:
        ExportError: the key or the file cannot be written.
    """
    from mlbook._fs import atomic_write_bytes

    key = project_key(project_root)
    target = Path(destination)
    try:
        atomic_write_bytes(target, key.public.to_pem())
    except OSError as exc:
        raise ExportError(f"{target}: cannot write the public key ({exc.strerror})") from exc
    return target


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data`` unless it exists (then keep the existing file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_public_key(path: Path | str) -> PublicKey:
    """Read a public key file (PEM, Ed25519).

    Raises:
        ExportError: missing, unreadable, or not an Ed25519 public key.
    """
    where = Path(path)
    return PublicKey.from_pem(_read_small(where), str(where))


#: A trusted key as callers may give it: a public key file (PEM), or the key itself.
KeySource = Path | str | PublicKey


def trusted_keys(
    bundle: Path | str, given: Iterable[KeySource] | None = None
) -> tuple[PublicKey, ...]:
    """The keys a bundle is checked against.

    ``given`` (public key files or keys) when it is not ``None``; otherwise the
    files listed in ``MLBOOK_TRUSTED_KEYS`` plus the key of the project the
    bundle sits in (if it has one).

    Raises:
        ExportError: a named key file is missing or not a public key.
    """
    if given is not None:
        if isinstance(given, (str, Path)):
            raise ExportError(
                f"trusted_keys={str(given)!r}: give a list of key files, e.g. [{str(given)!r}]"
            )
        return tuple(k if isinstance(k, PublicKey) else read_public_key(k) for k in given)
    own = _project_public_key(Path(bundle))
    keys = [own] if own is not None else []  # first: a bundle it signed shows as the project's
    named = [p for p in os.environ.get(TRUSTED_KEYS_ENV, "").split(os.pathsep) if p.strip()]
    keys.extend(_env_key(p) for p in named)
    return tuple(keys)


def _env_key(path: str) -> PublicKey:
    try:
        return read_public_key(path.strip())
    except ExportError as exc:
        raise ExportError(f"{TRUSTED_KEYS_ENV}: {exc}") from exc


def _project_public_key(bundle: Path) -> PublicKey | None:
    from mlbook.errors import ProjectError
    from mlbook.project import find_root

    try:
        root = find_root(bundle)
    except ProjectError:
        return None
    path = key_dir(root) / PUBLIC_KEY_FILE
    if not path.is_file():
        return None
    return PublicKey(read_public_key(path).raw, str(path), project=True)


# -- signing and checking -----------------------------------------------------------------


def sign_bundle(root: Path | str, key: SigningKey) -> str:
    """Sign ``root/manifest.json`` as it is now; write ``signature.json``; return its key.

    Raises:
        ExportError: the manifest cannot be read or the signature written.
    """
    from mlbook._fs import atomic_write_bytes

    base = Path(root)
    try:
        manifest = (base / MANIFEST_FILE).read_bytes()
        atomic_write_bytes(base / SIGNATURE_FILE, signature_bytes(manifest, key))
    except OSError as exc:
        raise ExportError(f"{base}: cannot sign the bundle ({exc.strerror})") from exc
    return key.public.fingerprint


def signature_bytes(manifest: bytes, key: SigningKey, context: bytes = _CONTEXT) -> bytes:
    """The ``signature.json`` content signing ``manifest`` with ``key``.

    ``context`` is put before the manifest bytes when signing, so that a signature
    made for one kind of file (an export, a run pack) never passes for another.
    """
    signature = _Signature(
        key=key.public.fingerprint,
        public_key=base64.b64encode(key.public.raw).decode(),
        signature=base64.b64encode(key.sign(context + manifest)).decode(),
    )
    return msgspec.json.format(msgspec.json.encode(signature)) + b"\n"


def check_signature(
    root: Path | str, manifest: bytes, trusted: Sequence[PublicKey]
) -> SignatureCheck:
    """Check ``root/signature.json`` against the manifest bytes and the trusted keys.

    Never raises for a bad bundle: the result says what is wrong.
    """
    base = Path(root)
    path = base / SIGNATURE_FILE
    if not path.exists() and not path.is_symlink():
        return SignatureCheck(
            "unsigned",
            problem=f"{base}: the bundle is not signed (no {SIGNATURE_FILE}); re-export it "
            "with this mlbook, or load it with trust=True if you trust where it came from",
        )
    if path.is_symlink() or not path.is_file():
        return SignatureCheck("bad", problem=f"{path}: not a plain file; re-export the model")
    try:
        data = _read_small(path)
    except ExportError as exc:
        return SignatureCheck("bad", problem=str(exc))
    check = verify_signature(data, manifest, trusted)
    if check.status == "bad" and check.key is None:
        return SignatureCheck("bad", problem=f"{path}: {check.problem}; re-export")
    if check.status == "bad":
        return SignatureCheck(
            "bad",
            check.key,
            problem=f"{base}: {SIGNATURE_FILE} does not match {MANIFEST_FILE} (one of them "
            "was changed after signing); re-export the model",
        )
    if check.status == "foreign":
        return SignatureCheck(
            "foreign",
            check.key,
            problem=f"{base}: signed by key {check.key}, which is not trusted ({check.problem}); "
            "add its public key (`mlbook key --export FILE` in the exporting project) "
            f"to {TRUSTED_KEYS_ENV} or trusted_keys=, or load with trust=True",
        )
    return check


def verify_signature(
    data: bytes, manifest: bytes, trusted: Sequence[PublicKey], context: bytes = _CONTEXT
) -> SignatureCheck:
    """Check the bytes of a ``signature.json`` against the manifest bytes and trusted keys.

    Never raises: ``status`` is ``trusted``, ``foreign`` (``problem`` lists the
    trusted keys) or ``bad`` (``key`` is ``None`` when the signature file itself is
    not valid; ``problem`` says why).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        signature = msgspec.json.decode(data, type=_Signature)
        raw = base64.b64decode(signature.public_key, validate=True)
        signed = base64.b64decode(signature.signature, validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw)
    except (msgspec.DecodeError, binascii.Error, ValueError, RecursionError) as exc:
        return SignatureCheck("bad", problem=f"not a valid signature file ({_short(exc)})")
    signer = PublicKey(raw)
    try:
        public.verify(signed, context + manifest)
    except InvalidSignature:
        return SignatureCheck("bad", signer.fingerprint, problem="the signature does not match")
    for key in trusted:
        if key.raw == raw:
            return SignatureCheck("trusted", signer.fingerprint, key.project)
    known = ", ".join(k.fingerprint for k in trusted) or "none"
    return SignatureCheck("foreign", signer.fingerprint, problem=f"trusted: {known}")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 120 else text[:117] + "..."


# -- PEM ----------------------------------------------------------------------------------


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def _unpem(data: bytes, label: str) -> bytes | None:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    stop = text.find(end, start + len(begin))
    if start < 0 or stop < 0:
        return None
    body = "".join(text[start + len(begin) : stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def _read_small(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise ExportError(f"{path}: no such file") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) > _MAX_KEY_FILE:
        raise ExportError(f"{path}: too large for a key or signature file")
    return data
