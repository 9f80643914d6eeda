"""``mlbook init``: lay out a new project, or adopt an existing directory.

Nothing that exists is ever overwritten: files already there are kept and
reported, so ``mlbook init .`` is safe on a directory with work in it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from mlbook._fs import atomic_write_text
from mlbook.config import CONFIG_FILE
from mlbook.errors import ProjectError
from mlbook.project import AREAS, DEFAULT_AREA_DIRS, Area, Project, find_root

__all__ = ["EXAMPLES", "InitResult", "init_project"]

_TEMPLATE_PACKAGE = "mlbook.templates"
#: Example projects for ``mlbook init NAME --example NAME``: name -> journal entries
#: ``(experiment ID, title, description)`` added to ``EXPERIMENT_LOG.md``.
EXAMPLES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "digits": (
        (
            "E001",
            "Small CNN on digits",
            "Two 3x3 convolutions on scikit-learn's 8x8 digits, in two widths "
            "(narrow: 8 channels, wide: 32). Does a CNN beat an MLP on images this small?",
        ),
        (
            "E002",
            "MLP on digits",
            "A multi-layer perceptron on the 64 pixels, one small hidden layer (h64) "
            "and two wide ones (h256x2): the baseline for E001.",
        ),
    ),
}
# template path -> path in the project; area directories are mapped at render time
_RENAMES = {"gitignore": ".gitignore"}


@dataclass
class InitResult:
    """What ``init_project`` did."""

    project: Project
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    git: str = ""  # "initialised", "existing repository at ...", or why not


def init_project(
    path: Path | str, name: str | None = None, example: str | None = None
) -> InitResult:
    """Create the mlbook layout at ``path`` (created if missing) and return what was done.

    Args:
        path: the project directory; may exist and hold files.
        name: the project name written to ``mlbook.toml`` (default: the directory name).
        example: also write an example project (``"digits"``: data preparation,
            two experiments, shared training code, deployment script and test, and
            their journal entries); see :data:`EXAMPLES`.

    Raises:
        ProjectError: ``path`` is a file, or lies inside another mlbook project; an
            unknown example.
    """
    if example is not None and example not in EXAMPLES:
        raise ProjectError(f"unknown example {example!r}; examples: {', '.join(sorted(EXAMPLES))}")
    root = Path(path).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ProjectError(f"cannot create a project at {root}: it is a file")
    _refuse_nested(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProjectError(f"cannot create {root}: {exc.strerror}") from exc

    area_names = {area: _area_dir_for(root, area) for area in AREAS}
    values: dict[str, str] = {"name": name or root.name}
    for area, dirname in area_names.items():
        values[area] = dirname
    created: list[Path] = []
    kept: list[Path] = []
    templates = resources.files(_TEMPLATE_PACKAGE)
    walked = _walk_templates(templates.joinpath("project"))
    if example is not None:
        walked += _walk_templates(templates.joinpath("examples").joinpath(example))
    for relative, text in walked:
        target = root / _map_path(relative, area_names)
        if target.exists():
            kept.append(target)
            continue
        if relative in (CONFIG_FILE, "gitignore"):
            for key, value in values.items():
                text = text.replace("{" + key + "}", value.replace('"', '\\"'))
        try:
            atomic_write_text(target, text)
        except OSError as exc:
            raise ProjectError(f"cannot write {target}: {exc.strerror}") from exc
        created.append(target)

    created.sort(key=lambda p: (len(p.relative_to(root).parts) > 1, p.relative_to(root).as_posix()))
    kept.sort(key=lambda p: (len(p.relative_to(root).parts) > 1, p.relative_to(root).as_posix()))
    project = Project.open(root)
    for area in AREAS:
        project.area_dir(area).mkdir(parents=True, exist_ok=True)
    if example is not None:
        from mlbook.provenance.journal import add_entry

        for ident, title, description in EXAMPLES[example]:
            add_entry(project.journal_path, ident, title, description)
    return InitResult(project=project, created=created, kept=kept, git=_git_init(root))


def _refuse_nested(root: Path) -> None:
    try:
        outer = find_root(root.parent)
    except ProjectError:
        return
    if outer != root:
        raise ProjectError(
            f"{root} is inside the mlbook project at {outer}; "
            "nested projects are not supported: choose a directory outside it"
        )


def _area_dir_for(root: Path, area: Area) -> str:
    default = DEFAULT_AREA_DIRS[area]
    if not (root / default).exists() and (root / default.lower()).is_dir():
        return default.lower()
    return default


def _walk_templates(node: Traversable, prefix: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name.startswith(".") or child.name == "__pycache__" or child.name.endswith(".pyc"):
            continue
        relative = f"{prefix}{child.name}"
        if child.is_dir():
            found.extend(_walk_templates(child, relative + "/"))
        else:
            found.append((relative, child.read_text(encoding="utf-8")))
    return found


def _map_path(relative: str, area_names: dict[Area, str]) -> str:
    first, _, rest = relative.partition("/")
    for area, default in DEFAULT_AREA_DIRS.items():
        if first == default:
            first = area_names[area]
    first = _RENAMES.get(first, first)
    return f"{first}/{rest}" if rest else first


def _git_init(root: Path) -> str:
    git = shutil.which("git")
    if git is None:
        return "git not found: install git so that runs can record their code"
    inside = subprocess.run(
        [git, "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True
    )
    if inside.returncode == 0:
        return f"existing repository at {inside.stdout.strip()}"
    done = subprocess.run([git, "init", "-q"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        return f"git init failed: {done.stderr.strip()}"
    return "initialised"
