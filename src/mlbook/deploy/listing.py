"""``mlbook exports``: the bundles in ``Deployment/exports/`` with their run and status."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbook.deploy.manifest import MANIFEST_FILE, check_bundle, read_manifest
from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.project import Project

__all__ = ["ExportInfo", "list_exports"]


@dataclass(frozen=True)
class ExportInfo:
    """One bundle as listed.

    ``status`` is ``verified`` (verified at export time and every file matches its
    manifest), ``unverified`` (files match, no verification recorded) or
    ``invalid``, with the reason in ``problem``.
    """

    name: str
    path: Path
    status: str
    experiment: str = ""
    version: str = ""
    run_id: str = ""
    created: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    onnx: bool = False
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON output)."""
        data = dict(self.__dict__)
        data["path"] = str(self.path)
        return data


def list_exports(
    project: Project | None = None, directory: Path | str | None = None, *, verify: bool = False
) -> list[ExportInfo]:
    """Every bundle under ``directory`` (default: the project's exports dir), by name.

    Each bundle's files are checked against its manifest (hashes included). With
    ``verify``, each bundle whose files match is also loaded in a clean child
    process and run on its recorded sample (see :func:`~mlbook.deploy.verify.verify_bundle`).
    """
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
        try:
            manifest = read_manifest(path)
        except ExportError as exc:
            found.append(ExportInfo(path.name, path, "invalid", problem=str(exc)))
            continue
        status, problem = "verified", ""
        try:
            check_bundle(path, manifest)
        except ExportError as exc:
            status, problem = "invalid", str(exc)
        else:
            if manifest.verification is None or not manifest.verification.ok:
                status = "unverified"
            if verify:
                from mlbook.deploy.verify import verify_bundle

                try:
                    verify_bundle(path)
                    status = "verified"
                except ExportError as exc:
                    status, problem = "invalid", str(exc)
        found.append(
            ExportInfo(
                name=path.name,
                path=path,
                status=status,
                experiment=manifest.experiment,
                version=manifest.version,
                run_id=manifest.run_id,
                created=manifest.created,
                metrics=manifest.metrics,
                onnx=manifest.onnx is not None,
                problem=problem,
            )
        )
    return found
