"""The script side of an experiment: :class:`Experiment`, its versions and hooks.

A script ``Models/<ID>_<name>.py`` creates exactly one :class:`Experiment`, gives
it named versions (dicts of hyper-parameters, optionally on top of a ``base`` and
crossed with a ``grid``) and registers the hooks the runner calls::

    exp = mlbook.Experiment(base={"lr": 1e-3}, versions={"small": {"width": 16}})

    @exp.model
    def build(p): ...

    @exp.train
    def train(run, model): ...

Only ``train`` is required. The object is plain data: importing a script never
starts anything.

``seed=`` is the run's seed (a ``seed`` param in every version that sets none;
the runner applies it in the child before the model hook, see
:mod:`mlbook.experiments.seeds`); ``metric=`` and ``goal=`` say which final
metric makes a run the best one (``mlbook export`` picks that run).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from mlbook.errors import ExperimentError

if TYPE_CHECKING:
    from mlbook.experiments.run import Run

__all__ = ["GOALS", "HOOKS", "Experiment", "Params"]

F = TypeVar("F", bound=Callable[..., Any])

#: The hooks a script may register, in the order the runner uses them.
HOOKS = ("model", "train", "evaluate", "export", "predict", "sample", "onnx_input")

#: What ``goal=`` may say: the best run has the highest (``max``) or lowest (``min``) metric.
GOALS = ("max", "min")

#: What a version name may be made of (it names the run's output directory).
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")


class Params(Mapping[str, Any]):
    """A version's hyper-parameters: a read-only mapping with attribute access.

    ``p.lr`` and ``p["lr"]`` are the same; a missing name raises an
    :class:`AttributeError` that lists the names that exist.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getattr__(self, name: str) -> Any:
        data: dict[str, Any] = object.__getattribute__(self, "_data")
        try:
            return data[name]
        except KeyError:
            known = ", ".join(sorted(data)) or "none"
            raise AttributeError(f"no parameter {name!r}; this version has: {known}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only; change the version in the script")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Params({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy."""
        return dict(self._data)


class Experiment:
    """One experiment: named versions of hyper-parameters and the hooks that use them.

    Args:
        versions: name -> parameters of that version (on top of ``base``).
            Without versions (and without a grid) the experiment has one
            version, ``default``, made of ``base``.
        base: parameters every version starts from.
        grid: name -> list of values; each version is crossed with every
            combination, named ``<version>-<key>=<value>,...`` (or just
            ``<key>=<value>,...`` when there are no named versions).
        dataset: the dataset directory under ``Datasets/`` that ``run.data()``
            reads (``"digits"`` -> ``Datasets/digits``).
        view: a saved view of that dataset (``views/<name>.json``, see
            ``mlbook data view save``) that ``run.data()`` reads by default; the
            run records its name, query and hashes.
        files: extra files (paths relative to ``Models/``) the experiment needs
            at inference time, for exports to carry (label maps, vocabularies).
        title: one line saying what the experiment tries.
        seed: the seed of every version that has no ``seed`` param of its own
            (it becomes that param). The runner seeds Python's ``random``, NumPy,
            torch and ``PYTHONHASHSEED`` with it before the model hook.
        metric: the final metric that makes a run the best (``mlbook export``
            picks the best completed run by it).
        goal: ``"max"`` (higher is better, the default) or ``"min"``.

    Raises:
        ExperimentError: a version name is not usable, versions are not dicts,
            the seed is not an int from 0 to 2**32 - 1, or ``goal`` is not max/min.
    """

    def __init__(
        self,
        versions: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        base: Mapping[str, Any] | None = None,
        grid: Mapping[str, Iterable[Any]] | None = None,
        dataset: str | None = None,
        view: str | None = None,
        files: Iterable[str] = (),
        title: str = "",
        seed: int | None = None,
        metric: str | None = None,
        goal: str = "max",
    ) -> None:
        from mlbook.experiments.seeds import check_seed

        self.base: dict[str, Any] = dict(base or {})
        self.seed = None if seed is None else check_seed(seed, "Experiment(seed=...)")
        if self.seed is not None:
            if "seed" in self.base and self.base["seed"] != self.seed:
                raise ExperimentError(
                    f"Experiment(seed={self.seed}) and base seed {self.base['seed']!r} disagree; "
                    "give the seed once"
                )
            self.base = {"seed": self.seed, **self.base}
        if metric is not None and (not isinstance(metric, str) or not metric.strip()):
            raise ExperimentError(f"Experiment(metric=...) must name a metric, got {metric!r}")
        if goal not in GOALS:
            raise ExperimentError(f"Experiment(goal=...) must be 'max' or 'min', got {goal!r}")
        self.metric = metric
        self.goal = goal
        if view is not None and (dataset is None or not isinstance(view, str) or not view):
            raise ExperimentError(
                f"Experiment(view={view!r}) needs a view name and dataset='name' beside it"
            )
        self.dataset = dataset
        self.view = view
        self.files: tuple[str, ...] = tuple(files)
        self.title = title
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.versions: dict[str, Params] = _expand(self.base, versions, grid)

    # -- hooks -------------------------------------------------------------------

    def model(self, func: F) -> F:
        """Register ``build(params) -> model``: builds the model from a version's params."""
        return self._hook("model", func)

    def train(self, func: F) -> F:
        """Register ``train(run, model) -> metrics | None`` (or ``train(run)``); required."""
        return self._hook("train", func)

    def evaluate(self, func: F) -> F:
        """Register ``evaluate(run, model) -> metrics``: runs after train, merged into metrics."""
        return self._hook("evaluate", func)

    def export(self, func: F) -> F:
        """Register ``export(run, model)``: called in ``export`` mode."""
        return self._hook("export", func)

    def predict(self, func: F) -> F:
        """Register ``predict(model, inputs) -> outputs``: used by exports and serving."""
        return self._hook("predict", func)

    def sample(self, func: F) -> F:
        """Register ``sample(params) -> inputs``: one input an export is verified with."""
        return self._hook("sample", func)

    def onnx_input(self, func: F) -> F:
        """Register ``onnx_input(params) -> tensor``: the model's own input, for ``--onnx``.

        Needed when the ``predict`` hook preprocesses what it gets (the sample is
        then not what the model takes).
        """
        return self._hook("onnx_input", func)

    def _hook(self, name: str, func: F) -> F:
        if not callable(func):
            raise ExperimentError(f"@exp.{name} must decorate a function, got {func!r}")
        self.hooks[name] = func
        return func

    # -- versions ----------------------------------------------------------------

    def params(self, version: str) -> Params:
        """The params of ``version``.

        Raises:
            ExperimentError: unknown version (the message lists the versions).
        """
        try:
            return self.versions[version]
        except KeyError:
            raise ExperimentError(
                f"unknown version {version!r}; versions: {', '.join(self.versions)}"
            ) from None

    def build_model(self, version: str | Mapping[str, Any]) -> Any:
        """Build the model of ``version`` (a name or a params mapping) with the model hook.

        Returns ``None`` when the script has no model hook.
        """
        hook = self.hooks.get("model")
        if hook is None:
            return None
        params = self.params(version) if isinstance(version, str) else Params(version)
        return hook(params)

    def __repr__(self) -> str:
        return f"Experiment(versions={list(self.versions)!r}, hooks={sorted(self.hooks)!r})"


def _expand(
    base: dict[str, Any],
    versions: Mapping[str, Mapping[str, Any]] | None,
    grid: Mapping[str, Iterable[Any]] | None,
) -> dict[str, Params]:
    named: dict[str, dict[str, Any]] = {}
    if versions is not None and not isinstance(versions, Mapping):
        raise ExperimentError("Experiment(versions=...) must be a dict of name -> params dict")
    for name, overrides in (versions or {}).items():
        if not isinstance(overrides, Mapping):
            raise ExperimentError(
                f"version {name!r}: expected a dict of parameters, got {type(overrides).__name__}"
            )
        named[str(name)] = {**base, **overrides}
    if not named:
        named = {"default": dict(base)} if not grid else {"": dict(base)}
    if grid:
        axes = {key: list(values) for key, values in grid.items()}
        for key, values in axes.items():
            if not values:
                raise ExperimentError(f"grid {key!r}: expected a non-empty list of values")
        crossed: dict[str, dict[str, Any]] = {}
        for name, params in named.items():
            for combo in itertools.product(*axes.values()):
                point = dict(zip(axes, combo, strict=True))
                label = ",".join(f"{key}={value}" for key, value in point.items())
                crossed[f"{name}-{label}" if name else label] = {**params, **point}
        named = crossed
    result: dict[str, Params] = {}
    for name, params in named.items():
        if not VERSION_NAME.match(name):
            raise ExperimentError(
                f"version name {name!r}: use letters, digits and _ . = , + - "
                "(starting with a letter or digit)"
            )
        result[name] = Params(params)
    return result


def call_train(exp: Experiment, run: Run, model: Any) -> Any:
    """Call the train hook as ``train(run, model)`` or ``train(run)``."""
    hook = exp.hooks["train"]
    return hook(run, model) if _arity(hook) >= 2 else hook(run)


def _arity(func: Callable[..., Any]) -> int:
    import inspect

    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
