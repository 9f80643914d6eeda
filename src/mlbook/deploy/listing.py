"""``mlbook exports``: the bundles in ``Deployment/exports/`` with their run and signature.

Each bundle gets one status, the one :func:`mlbook.load` would act on:

- ``signed``: this project's key signed it and every file matches its manifest;
- ``trusted``: the same, with another key listed in ``MLBOOK_TRUSTED_KEYS``;
- ``foreign``: a valid signature by a key that is not trusted (its fingerprint is shown);
- ``unsigned``: no ``signature.json``;
- ``tampered``: the signature does not match the manifest, or a file does not match
  its hash (changed, missing, extra);
- ``invalid``: the manifest cannot be read, or (with ``verify``) the bundle failed
  in a clean process.

A bad bundle never stops the listing: it is shown with the reason in ``problem``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlbook.deploy.manifest import (
    MANIFEST_FILE,
    check_bundle,
    parse_manifest,
    read_manifest_bytes,
)
from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.deploy.signing import KeySource, PublicKey
    from mlbook.project import Project

__all__ = ["ExportInfo", "ExportStatus", "list_exports"]

ExportStatus = Literal["signed", "trusted", "foreign", "unsigned", "tampered", "invalid"]


@dataclass(frozen=True)
class ExportInfo:
    """One bundle as listed: its status (see the module docs), the reason when it is
    not ``signed`` or ``trusted``, and the signer's key fingerprint when there is one."""

    name: str
    path: Path
    status: ExportStatus
    experiment: str = ""
    version: str = ""
    run_id: str = ""
    created: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    onnx: bool = False
    key: str = ""
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON output)."""
        data = dict(self.__dict__)
        data["path"] = str(self.path)
        return data


def list_exports(
    project: Project | None = None,
    directory: Path | str | None = None,
    *,
    verify: bool = False,
    trusted_keys: list[KeySource] | None = None,
) -> list[ExportInfo]:
    """Every bundle under ``directory`` (default: the project's exports dir), by name.

    Each bundle's signature is checked against ``trusted_keys`` (default: those of
    :func:`mlbook.load`) and its files against its manifest (hashes included).
    With ``verify``, each ``signed`` or ``trusted`` bundle is also loaded in a
    clean child process and run on its recorded sample (see
    :func:`~mlbook.deploy.verify.verify_bundle`).

    Raises:
        ExportError: a key named in ``trusted_keys`` or ``MLBOOK_TRUSTED_KEYS`` is unreadable.
    """
    from mlbook.deploy.signing import trusted_keys as keys_for
    from mlbook.project import Project

    if directory is None:
        directory = (project or Project.find()).exports_dir
    base = Path(directory)
    if not base.is_dir():
        return []
    found: list[ExportInfo] = []
    for path in sorted(base.iterdir()):
        if path.name.startswith(".") or not (path / MANIFEST_FILE).is_file():
            continue
        found.append(_inspect(path, keys_for(path, trusted_keys), verify))
    return found


def _inspect(path: Path, trusted: tuple[PublicKey, ...], verify: bool) -> ExportInfo:
    from mlbook.deploy.signing import check_signature

    try:
        data = read_manifest_bytes(path)
        manifest = parse_manifest(data, path / MANIFEST_FILE)
    except ExportError as exc:
        return ExportInfo(path.name, path, "invalid", problem=str(exc))
    signature = check_signature(path, data, trusted)
    status: ExportStatus
    problem = signature.problem
    if signature.status == "bad":
        status = "tampered"
    elif signature.ok:
        status = "signed" if signature.project else "trusted"
    else:
        status = signature.status
    try:
        check_bundle(path, manifest)
    except ExportError as exc:
        status, problem = "tampered", str(exc)
    if verify and status in ("signed", "trusted"):
        from mlbook.deploy.verify import verify_bundle

        try:
            verify_bundle(path, trusted_keys=trusted)
        except ExportError as exc:
            status, problem = "invalid", str(exc)
    return ExportInfo(
        name=path.name,
        path=path,
        status=status,
        experiment=manifest.experiment,
        version=manifest.version,
        run_id=manifest.run_id,
        created=manifest.created,
        metrics=manifest.metrics,
        onnx=manifest.onnx is not None,
        key=signature.key or "",
        problem=problem,
    )
