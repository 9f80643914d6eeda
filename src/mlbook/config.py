"""Read and validate ``mlbook.toml`` into typed settings.

Every section is a :class:`msgspec.Struct` that refuses unknown keys, so a typo
is caught with the file, the line and the keys that would have been accepted.
Every number has bounds (:data:`BOUNDS`) and every path must stay inside the
project (absolute paths and ``..`` that leave it are refused here; symbolic
links are resolved by :meth:`mlbook.project.Project.open`). Whatever the text,
:func:`parse_config` returns a :class:`Config` or raises one :class:`ConfigError`.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from mlbook.errors import ConfigError

__all__ = [
    "BOUNDS",
    "CONFIG_FILE",
    "MAX_FILE_SIZE_BOUNDS",
    "Config",
    "DataSettings",
    "ExperimentSettings",
    "ExportSettings",
    "GitSettings",
    "LayoutSettings",
    "ProjectSettings",
    "RaySettings",
    "RunnerSettings",
    "ScriptSettings",
    "config_line",
    "load_config",
    "parse_config",
    "parse_size",
]

CONFIG_FILE = "mlbook.toml"


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ProjectSettings(_Section):
    """``[project]``: who the project is."""

    name: str = ""
    description: str = ""


class LayoutSettings(_Section):
    """``[layout]``: the four area directories, relative to the project root.

    A name left unset falls back to its lower-case variant when only that exists.
    """

    datasets: str | None = None
    models: str | None = None
    deployment: str | None = None
    data_processing: str | None = None


class ScriptSettings(_Section):
    """``[experiments.<ID>]``: settings of one experiment script.

    ``versions`` and ``grid`` name the versions of a plain script (one without
    ``mlbook.Experiment``); ``test`` holds params every version gets in test mode
    (``{epochs = 1, dry_run = true}``); ``output_metrics`` and ``output_patterns``
    override ``[experiments]`` for this script.
    """

    title: str = ""
    dataset: str | None = None
    versions: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    grid: dict[str, list[Any]] = msgspec.field(default_factory=dict)
    test: dict[str, Any] = msgspec.field(default_factory=dict)
    output_metrics: bool | None = None
    output_patterns: list[str] | None = None


class ExperimentSettings(_Section):
    """``[experiments]``: which scripts are experiments and which `mlbook run` runs.

    ``output_metrics``: read metric points from the output lines of plain scripts
    (``loss: 0.12``); ``output_patterns``: regular expressions that replace the
    built-in ones (:mod:`mlbook.experiments.output`). ``scripts`` holds the
    ``[experiments.<ID>]`` tables, keyed by ID.
    ``seed`` seeds every run whose version has no ``seed`` param; ``metric`` and
    ``goal`` pick the best run (``mlbook export``) when the script names none.
    """

    id_pattern: str = r"[A-Z]\d+"
    include: list[str] = msgspec.field(default_factory=list)
    exclude: list[str] = msgspec.field(default_factory=list)
    test_steps: int = 2
    outputs: str = "outputs"
    output_metrics: bool = True
    output_patterns: list[str] = msgspec.field(default_factory=list)
    scripts: dict[str, ScriptSettings] = msgspec.field(default_factory=dict)
    seed: int | None = None
    metric: str | None = None
    goal: Literal["max", "min"] = "max"

    def script(self, ident: str) -> ScriptSettings:
        """The ``[experiments.<ident>]`` table (defaults when there is none)."""
        return self.scripts.get(ident) or ScriptSettings()


class RunnerSettings(_Section):
    """``[runner]``: where versions run."""

    backend: Literal["local", "ray"] = "local"
    jobs: int = 1


class RaySettings(_Section):
    """``[ray]``: the Ray backend (``mlbook run --backend ray``); see docs/ray.md.

    ``address`` empty: a local Ray head is started for the command and stopped
    after it. Resources are per version (one Ray task each); ``retries`` is how
    often a version whose worker died is started again. ``data``: ``"ship"``
    sends each run's dataset files through Ray's object store, ``"shared"``
    passes their path (every node sees the same filesystem). Sizes are bytes or
    text such as ``"100 MB"``.
    """

    address: str = ""
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | str = 0
    retries: int = 1
    data: Literal["ship", "shared"] = "ship"
    max_snapshot_size: int | str = "100 MB"
    max_data_size: int | str = "1 GB"
    max_output_size: int | str = "1 GB"

    def size(self, key: str) -> int:
        """A size setting in bytes (checked when the config is read)."""
        size = parse_size(getattr(self, key))
        assert size is not None, "checked by parse_config"
        return size


class GitSettings(_Section):
    """``[git]``: how each run's code is recorded.

    A file over ``max_file_size`` (bytes, or text such as ``"1 MB"``) is recorded
    in a snapshot as a pointer (path, sha256, size), its bytes left where they are.
    """

    commits: Literal["refs", "branch", "off"] = "refs"
    max_file_size: int | str = "1 MB"
    snapshot_data: bool = False

    @property
    def max_file_bytes(self) -> int:
        """``max_file_size`` in bytes (checked when the config is read)."""
        size = parse_size(self.max_file_size)
        assert size is not None, "checked by parse_config"
        return size


class DataSettings(_Section):
    """``[data]``: dataset hashing."""

    hash_images: bool = False


class ExportSettings(_Section):
    """``[export]``: where bundles go, relative to the deployment area."""

    dir: str = "exports"
    onnx: bool = False


class Config(_Section):
    """The whole of ``mlbook.toml``."""

    project: ProjectSettings = msgspec.field(default_factory=ProjectSettings)
    layout: LayoutSettings = msgspec.field(default_factory=LayoutSettings)
    experiments: ExperimentSettings = msgspec.field(default_factory=ExperimentSettings)
    runner: RunnerSettings = msgspec.field(default_factory=RunnerSettings)
    ray: RaySettings = msgspec.field(default_factory=RaySettings)
    git: GitSettings = msgspec.field(default_factory=GitSettings)
    data: DataSettings = msgspec.field(default_factory=DataSettings)
    export: ExportSettings = msgspec.field(default_factory=ExportSettings)


_SECTIONS: dict[str, type[_Section]] = {
    "project": ProjectSettings,
    "layout": LayoutSettings,
    "experiments": ExperimentSettings,
    "runner": RunnerSettings,
    "ray": RaySettings,
    "git": GitSettings,
    "data": DataSettings,
    "export": ExportSettings,
}

#: keys that were replaced: what to write instead
_RENAMED = {
    ("runner", "ray_address"): "it moved to [ray] address (docs/ray.md)",
    ("git", "max_file_mb"): (
        'it was replaced by max_file_size (bytes or text such as "1 MB"); '
        "larger files are now kept as pointers, not left out"
    ),
}

_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?")
_AT = re.compile(r" - at `\$(?P<at>[^`]*)`")


def load_config(path: Path) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: unreadable file, bad TOML, an unknown key or a wrong type.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(path, f"cannot read the config ({exc}); check the file") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path | str = CONFIG_FILE) -> Config:
    """Validate config text; ``path`` only names the file in errors.

    Raises:
        ConfigError: bad TOML (nesting too deep included), an unknown key, a wrong
            type, a number out of bounds, or a path leaving the project.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _line_of_decode_error(str(exc))
        detail = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise _error(path, f"not valid TOML: {detail}", line) from exc
    except RecursionError as exc:
        raise _error(path, "not valid TOML: arrays or tables nested too deep") from exc
    except ValueError as exc:  # an integer of more than 4300 digits
        digits = re.search(r"\d{4300}", text)
        line = text.count("\n", 0, digits.start()) + 1 if digits else None
        raise _error(path, "not valid TOML: a number has more than 4300 digits", line) from exc
    scripts = _script_tables(raw, text, path)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise _explain(exc, text, path) from exc
    config.experiments.scripts = scripts
    _check_values(config, text, path)
    return config


def _script_tables(raw: dict[str, Any], text: str, path: Path | str) -> dict[str, ScriptSettings]:
    """Take the ``[experiments.<ID>]`` tables out of the raw TOML, each read on its own."""
    section = raw.get("experiments")
    if not isinstance(section, dict):
        return {}
    scripts: dict[str, ScriptSettings] = {}
    for ident in [key for key, value in section.items() if isinstance(value, dict)]:
        table = section.pop(ident)
        try:
            scripts[ident] = msgspec.convert(table, ScriptSettings)
        except msgspec.ValidationError as exc:
            where = f"experiments.{ident}"
            message = str(exc)
            unknown = _UNKNOWN.search(message)
            if unknown and not (unknown["at"] or "").strip("."):
                fields = ", ".join(ScriptSettings.__struct_fields__)
                problem = f"[{where}] unknown key '{unknown['key']}'; expected one of: {fields}"
                raise _error(path, problem, _find_line(text, where, unknown["key"])) from exc
            at = _AT.search(message)
            dotted = at["at"].lstrip(".") if at else ""
            key = re.split(r"[.\[]", dotted)[0] if dotted else None
            problem = _AT.sub("", message).replace("`", "").lower()
            shown = (f"{where}.{dotted}" if dotted else where).replace("[...]", ".<name>")
            line = _find_line(text, where, key) or _find_line(text, f"{where}.{key}", None)
            raise _error(path, f"{shown}: {problem}", line) from exc
    return scripts


#: every number in mlbook.toml: (section, key) -> (lowest, highest, what to write); never NaN
BOUNDS: dict[tuple[str, str], tuple[float, float, str]] = {
    ("runner", "jobs"): (1, 1024, "a whole number from 1 to 1024"),
    ("experiments", "test_steps"): (1, 1_000_000, "a whole number from 1 to 1000000"),
    ("ray", "num_cpus"): (0, 1024, "a number of CPUs from 0 to 1024, e.g. 1 or 0.5"),
    ("ray", "num_gpus"): (0, 1024, "a number of GPUs from 0 to 1024, e.g. 1 or 0.5"),
    ("ray", "retries"): (0, 100, "a whole number from 0 to 100"),
}
#: the ``[ray]`` sizes: (key, smallest); the largest is 1 TB
_RAY_SIZES = (
    ("memory", 0),
    ("max_snapshot_size", 1),
    ("max_data_size", 1),
    ("max_output_size", 1),
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
#: the smallest and largest ``[git] max_file_size`` (a pointer itself is about 200 bytes)
MAX_FILE_SIZE_BOUNDS = (512, 10**12)


def parse_size(value: int | str) -> int | None:
    """A size in bytes from an int or text like ``"1 MB"``, ``"500kB"``, ``"2 MiB"`` (or None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    found = _SIZE.match(value)
    if found is None:
        return None
    return int(float(found[1]) * _UNITS[(found[2] or "b").lower()])


def _check_values(config: Config, text: str, path: Path | str) -> None:
    for (section, key), (low, high, what) in BOUNDS.items():
        value = getattr(getattr(config, section), key)
        if not low <= value <= high:  # NaN fails every comparison
            raise _error(
                path,
                f"{section}.{key}: expected {what}, got {value!r}",
                _find_line(text, section, key),
            )
    _check_git_and_seed(config, text, path)
    for key, smallest in _RAY_SIZES:
        raw = getattr(config.ray, key)
        size = parse_size(raw)
        if size is None or not smallest <= size <= 10**12:
            raise _error(
                path,
                f"ray.{key}: expected a size up to 1 TB such as 100000000 or "
                f'"100 MB" (units B, kB, MB, GB, KiB, MiB, GiB), got {raw!r}',
                _find_line(text, "ray", key),
            )
    try:
        re.compile(config.experiments.id_pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise _error(
            path,
            f"experiments.id_pattern: not a valid regular expression ({exc})",
            _find_line(text, "experiments", "id_pattern"),
        ) from exc
    _check_scripts(config, text, path)
    if config.experiments.include and config.experiments.exclude:
        raise _error(
            path,
            "experiments: set include or exclude, not both",
            _find_line(text, "experiments", "exclude"),
        )
    _check_paths(config, text, path)


def _check_scripts(config: Config, text: str, path: Path | str) -> None:
    """``[experiments.<ID>]`` tables name experiments; output patterns compile."""
    settings = config.experiments
    for ident, script in settings.scripts.items():
        if not re.fullmatch(settings.id_pattern, ident):
            raise _error(
                path,
                f"[experiments.{ident}]: {ident!r} is not an experiment ID "
                f"(id_pattern {settings.id_pattern!r}); name a script's ID: [experiments.E005]",
                _find_line(text, f"experiments.{ident}", None),
            )
        if script.output_patterns is not None:
            _check_patterns(script.output_patterns, f"experiments.{ident}", text, path)
    _check_patterns(settings.output_patterns, "experiments", text, path)


def _check_patterns(patterns: list[str], section: str, text: str, path: Path | str) -> None:
    if not patterns:
        return
    from mlbook.experiments.output import pattern_problem

    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem:
            raise _error(
                path,
                f"{section}.output_patterns: {pattern!r} {problem}",
                _find_line(text, section, "output_patterns"),
            )


def _check_git_and_seed(config: Config, text: str, path: Path | str) -> None:
    low, high = MAX_FILE_SIZE_BOUNDS
    raw = config.git.max_file_size
    size = parse_size(raw)
    if size is None or not low <= size <= high:
        raise _error(
            path,
            f"git.max_file_size: expected a size from 512 bytes to 1 TB such as 1000000 or "
            f'"1 MB" (units B, kB, MB, GB, KiB, MiB, GiB), got {raw!r}',
            _find_line(text, "git", "max_file_size"),
        )
    seed = config.experiments.seed
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise _error(
            path,
            f"experiments.seed: expected an int from 0 to {2**32 - 1}, got {seed}",
            _find_line(text, "experiments", "seed"),
        )
    metric = config.experiments.metric
    if metric is not None and not metric.strip():
        raise _error(
            path,
            "experiments.metric: expected the name of a final metric such as \"acc\", got ''",
            _find_line(text, "experiments", "metric"),
        )


def _check_paths(config: Config, text: str, path: Path | str) -> None:
    """Paths are relative and stay inside the project (symbolic links: ``Project.open``)."""
    models = config.layout.models or "Models"
    deployment = config.layout.deployment or "Deployment"
    checks = [
        ("layout", area, getattr(config.layout, area), "")
        for area in ("datasets", "models", "deployment", "data_processing")
    ]
    checks += [
        ("experiments", "outputs", config.experiments.outputs, models),
        ("export", "dir", config.export.dir, deployment),
    ]
    for section, key, value, base in checks:
        if value is None or (value == "" and not base):
            continue  # an area left unset: its default name
        problem = _path_problem(value, base)
        if problem:
            raise _error(
                path,
                f"{section}.{key}: {value!r} {problem}; use a relative path inside the project",
                _find_line(text, section, key),
            )


def _path_problem(value: str, base: str) -> str:
    """Why ``value`` (relative to ``base``, itself relative to the root) is refused, or ``""``."""
    if "\0" in value:
        return "contains a NUL character"
    if value.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", value):
        return "is absolute"
    inside = posixpath.normpath(posixpath.join(base, value.replace("\\", "/")))
    if inside == ".." or inside.startswith("../"):
        return "leaves the project"
    if inside == "." or inside == posixpath.normpath(base or "."):
        where = "the project root" if inside == "." else f"{base}/ itself"
        return f"is {where}, not a directory inside it"
    if inside.split("/")[0] in {".mlbook", ".git"}:
        return "is inside mlbook's or git's own directory"
    return ""


def config_line(path: Path, section: str, key: str | None) -> int | None:
    """The 1-based line of ``key`` in ``[section]`` of the config file at ``path`` (or None)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return _find_line(text, section, key)


def _error(path: Path | str, problem: str, line: int | None = None) -> ConfigError:
    """A :class:`ConfigError` whose message stays short, whatever value the file holds."""
    if len(problem) > _MAX_PROBLEM:
        problem = problem[: _MAX_PROBLEM - 1] + "…"
    return ConfigError(path, problem, line)


_MAX_PROBLEM = 300


def _explain(exc: msgspec.ValidationError, text: str, path: Path | str) -> ConfigError:
    message = str(exc)
    unknown = _UNKNOWN.search(message)
    if unknown:
        key = unknown["key"]
        section = (unknown["at"] or "").lstrip(".")
        if not section:
            known = ", ".join(f"[{name}]" for name in _SECTIONS)
            return _error(
                path,
                f"unknown section [{key}]; expected one of {known}",
                _find_line(text, key, None),
            )
        fields = ", ".join(_SECTIONS[section].__struct_fields__) if section in _SECTIONS else ""
        renamed = _RENAMED.get((section, key), "")
        return _error(
            path,
            f"[{section}] unknown key '{key}'; " + (renamed or f"expected one of: {fields}"),
            _find_line(text, section, key),
        )
    at = _AT.search(message)
    dotted = at["at"].lstrip(".") if at else ""
    problem = _AT.sub("", message)
    problem = problem.replace("`", "")
    section, _, key = dotted.partition(".")
    line = _find_line(text, section, key or None) if section else None
    return _error(path, f"{dotted}: {problem.lower()}" if dotted else problem, line)


def _find_line(text: str, section: str, key: str | None) -> int | None:
    """Return the 1-based line of ``key`` in ``[section]`` (or of the header)."""
    current = ""
    header_line: int | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            current = header[1].strip()
            if current == section:
                header_line = number
            continue
        if key is None:
            continue
        if current == section and re.match(rf"^[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
        if current == "" and re.match(rf"^{re.escape(section)}\.{re.escape(key)}\s*=", line):
            return number
    if header_line is None and key is not None:  # an inline table: `git = {jobs = 1}`
        pattern = re.compile(rf"^{re.escape(section)}\s*=.*\b{re.escape(key)}\s*=")
        for number, raw in enumerate(text.splitlines(), start=1):
            if pattern.match(raw.strip()):
                return number
    return header_line


def _line_of_decode_error(message: str) -> int | None:
    found = re.search(r"at line (\d+)", message)
    return int(found[1]) if found else None
