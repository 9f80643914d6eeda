"""The project: its root, its config and its four areas.

A project is a directory holding ``mlbook.toml``. It has four areas, each a
directory whose name is configurable: datasets, models, deployment and
data processing. :meth:`Project.find` locates the root from any directory
inside it.

Every area and output directory stays inside the root: the config refuses
absolute paths and ``..`` that leave it, and :meth:`Project.open` resolves
symbolic links and refuses a directory that lands outside (or on the root
itself). One exception: the datasets area may be a symbolic link to another
disk, where data often lives; mlbook only reads there unless told to write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlbook.config import CONFIG_FILE, Config, config_line, load_config
from mlbook.errors import ConfigError, ProjectError

__all__ = [
    "AREAS",
    "DEFAULT_AREA_DIRS",
    "JOURNAL_FILE",
    "NOTES_FILE",
    "STATE_DIR",
    "Area",
    "Project",
    "find_root",
]

Area = Literal["datasets", "models", "deployment", "data_processing"]
AREAS: tuple[Area, ...] = ("datasets", "models", "deployment", "data_processing")
DEFAULT_AREA_DIRS: dict[Area, str] = {
    "datasets": "Datasets",
    "models": "Models",
    "deployment": "Deployment",
    "data_processing": "Data_processing",
}
JOURNAL_FILE = "EXPERIMENT_LOG.md"
NOTES_FILE = "NOTES.md"
STATE_DIR = ".mlbook"


def find_root(start: Path | str | None = None) -> Path:
    """Return the nearest directory at or above ``start`` holding ``mlbook.toml``.

    Raises:
        ProjectError: no such directory up to the filesystem root.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / CONFIG_FILE).is_file():
            return directory
    raise ProjectError(
        f"not an mlbook project: no {CONFIG_FILE} in {here} or any parent; "
        "run `mlbook init NAME` to create one, or cd into a project"
    )


@dataclass(frozen=True)
class Project:
    """An mlbook project: root directory plus validated config."""

    root: Path
    config: Config

    @classmethod
    def find(cls, start: Path | str | None = None) -> Project:
        """Find the project containing ``start`` (default: the current directory)."""
        return cls.open(find_root(start))

    @classmethod
    def open(cls, root: Path | str) -> Project:
        """Open the project whose root is ``root``.

        Raises:
            ProjectError: ``root`` has no ``mlbook.toml``.
            ConfigError: the config is not valid, or an area or output directory
                resolves outside the project (symbolic links followed).
        """
        root = Path(root).resolve()
        config_path = root / CONFIG_FILE
        if not config_path.is_file():
            raise ProjectError(
                f"not an mlbook project: {config_path} does not exist; run `mlbook init {root}`"
            )
        project = cls(root=root, config=load_config(config_path))
        project._check_inside(config_path)
        return project

    def _check_inside(self, config_path: Path) -> None:
        """Refuse an area or output directory that resolves outside the root (or onto it)."""
        checks: list[tuple[str, str, Path]] = [
            ("layout", area, self.area_dir(area)) for area in AREAS if area != "datasets"
        ]
        checks += [
            ("experiments", "outputs", self.outputs_dir),
            ("export", "dir", self.exports_dir),
        ]
        for section, key, directory in checks:
            try:
                resolved = directory.resolve()
            except (OSError, RuntimeError) as exc:  # a symlink loop
                problem = f"cannot be resolved ({exc})"
            else:
                if resolved != self.root and resolved.is_relative_to(self.root):
                    continue
                where = "is the project root" if resolved == self.root else "is outside the project"
                problem = f"resolves to {resolved}, which {where}"
            shown = self.relative(directory)
            raise ConfigError(
                config_path,
                f"{section}.{key}: {shown} {problem} (a symbolic link?); "
                "use a directory inside the project",
                config_line(config_path, section, key),
            )

    def area_name(self, area: Area) -> str:
        """The directory name of ``area`` relative to the root.

        A name set in ``[layout]`` wins; otherwise the default (``Models``) is used,
        or its lower-case variant (``models``) when only that one exists.
        """
        configured: str | None = getattr(self.config.layout, area)
        if configured:
            return configured
        default = DEFAULT_AREA_DIRS[area]
        if not (self.root / default).is_dir() and (self.root / default.lower()).is_dir():
            return default.lower()
        return default

    def area_dir(self, area: Area) -> Path:
        """Absolute path of an area directory."""
        return self.root / self.area_name(area)

    @property
    def datasets_dir(self) -> Path:
        """``Datasets/``: data, metadata and pre-trained weights."""
        return self.area_dir("datasets")

    @property
    def models_dir(self) -> Path:
        """``Models/``: experiment scripts, shared training code, run outputs."""
        return self.area_dir("models")

    @property
    def deployment_dir(self) -> Path:
        """``Deployment/``: code around exported models."""
        return self.area_dir("deployment")

    @property
    def data_processing_dir(self) -> Path:
        """``Data_processing/``: cleaning and conversion scripts."""
        return self.area_dir("data_processing")

    @property
    def outputs_dir(self) -> Path:
        """Where run outputs go (``Models/outputs/``)."""
        return self.models_dir / self.config.experiments.outputs

    @property
    def exports_dir(self) -> Path:
        """Where export bundles go (``Deployment/exports/``)."""
        return self.deployment_dir / self.config.export.dir

    @property
    def state_dir(self) -> Path:
        """``.mlbook/``: machine state (run store, caches); git-ignored."""
        return self.root / STATE_DIR

    @property
    def journal_path(self) -> Path:
        """The experiment journal, ``EXPERIMENT_LOG.md``."""
        return self.root / JOURNAL_FILE

    @property
    def name(self) -> str:
        """The project's name from the config, else its directory name."""
        return self.config.project.name or self.root.name

    def area_of(self, path: Path | str) -> Area | None:
        """The area a path lies in, or ``None`` when it is in none (or outside)."""
        resolved = Path(os.path.abspath(path))
        for area in AREAS:
            if resolved.is_relative_to(self.area_dir(area)):
                return area
        return None

    def relative(self, path: Path | str) -> str:
        """``path`` relative to the root, with forward slashes when inside it."""
        absolute = Path(os.path.abspath(path))
        if absolute.is_relative_to(self.root):
            return absolute.relative_to(self.root).as_posix()
        return str(path)
