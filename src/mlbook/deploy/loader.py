"""``mlbook.load(path)``: rebuild an exported model from its bundle, for deployment code.

The bundle's ``code/`` is imported under a private package name that is new for
every load (``_mlbook_bundle_E012_small_1``), so two bundles whose scripts both
import ``common.training`` each get their own copy (MLflow loads the first
one's code for both: mlflow/mlflow#4061). The script's own absolute imports
(``from common.training import fit``) are redirected into that package by an
``__import__`` that only the bundle's modules see; nothing is added to
``sys.path``, and no ``__pycache__`` is written into the bundle. Each code file
is checked against its manifest hash again at the moment it is imported.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import re
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from mlbook.deploy.manifest import Manifest, check_bundle, read_manifest
from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.datasets.subsets import ClassEncoding
    from mlbook.experiments.api import Experiment, Params

__all__ = ["LoadedModel", "load", "load_sample"]

_COUNTER = itertools.count(1)
_LOCK = threading.Lock()
CODE_DIR = "code"


class _BundleLoader(importlib.abc.Loader):
    """Executes one bundle file (or an empty package) with the bundle's ``__import__``."""

    def __init__(self, finder: _BundleFinder, path: Path | None) -> None:
        self.finder = finder
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__builtins__"] = self.finder.builtins
        if self.path is None:
            return
        data = self.path.read_bytes()
        relative = self.path.relative_to(self.finder.root).as_posix()
        expected = self.finder.hashes.get(relative)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ExportError(
                f"{self.finder.root}: file {relative} changed while the bundle was loading; "
                "re-export the model"
            )
        code = compile(data, str(self.path), "exec", dont_inherit=True)
        exec(code, module.__dict__)


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Finds ``<package>.<name>`` modules inside one bundle's ``code/`` directory."""

    def __init__(self, package: str, root: Path, hashes: Mapping[str, str]) -> None:
        self.package = package
        self.root = root
        self.code = root / CODE_DIR
        self.hashes = dict(hashes)
        self.tops = frozenset(_top_names(self.code))
        self.builtins: dict[str, Any] = dict(builtins.__dict__)
        self.builtins["__import__"] = self._import

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.package:
            spec = importlib.machinery.ModuleSpec(
                fullname, _BundleLoader(self, None), is_package=True
            )
            spec.submodule_search_locations = [str(self.code)]
            return spec
        if not fullname.startswith(self.package + "."):
            return None
        base = self.code.joinpath(*fullname.split(".")[1:])
        init = base / "__init__.py"
        if init.is_file():
            return importlib.util.spec_from_file_location(
                fullname,
                init,
                loader=_BundleLoader(self, init),
                submodule_search_locations=[str(base)],
            )
        module = base.with_suffix(".py")
        if module.is_file():
            return importlib.util.spec_from_file_location(
                fullname, module, loader=_BundleLoader(self, module)
            )
        if base.is_dir():  # a directory without __init__.py, like a namespace package
            spec = importlib.machinery.ModuleSpec(
                fullname, _BundleLoader(self, None), is_package=True
            )
            spec.submodule_search_locations = [str(base)]
            return spec
        return None

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: tuple[str, ...] | list[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        top = name.partition(".")[0]
        if level != 0 or top not in self.tops:
            return builtins.__import__(name, globals, locals, fromlist or (), level)
        module = importlib.import_module(f"{self.package}.{name}")
        if not fromlist:
            return sys.modules[f"{self.package}.{top}"]
        if hasattr(module, "__path__"):
            for item in fromlist:
                if item != "*" and not hasattr(module, item):
                    try:
                        importlib.import_module(f"{module.__name__}.{item}")
                    except ModuleNotFoundError as exc:
                        if exc.name != f"{module.__name__}.{item}":
                            raise
        return module


def _top_names(code: Path) -> set[str]:
    names: set[str] = set()
    if not code.is_dir():
        return names
    for child in code.iterdir():
        if child.is_dir() and child.name.isidentifier():
            names.add(child.name)
        elif child.suffix == ".py" and child.stem.isidentifier():
            names.add(child.stem)
    return names


class LoadedModel:
    """An exported model, rebuilt and ready for inference.

    Attributes:
        model: what the experiment's model hook built, with the exported weights loaded
            (a PyTorch module is put in eval mode).
        params: the version's hyper-parameters (attribute access: ``params.lr``).
        labels: the class encoding the run trained with (``None`` when there is none).
        manifest: the bundle's manifest.
        path: the bundle directory.
        experiment: the script's :class:`~mlbook.Experiment` (its hooks).
        module: the script module, imported under the bundle's private package.
    """

    def __init__(
        self,
        *,
        model: Any,
        params: Params,
        labels: ClassEncoding | None,
        manifest: Manifest,
        path: Path,
        experiment: Experiment,
        module: ModuleType,
    ) -> None:
        self.model = model
        self.params = params
        self.labels = labels
        self.manifest = manifest
        self.path = path
        self.experiment = experiment
        self.module = module

    @property
    def has_predict(self) -> bool:
        """True when the experiment defined a predict hook."""
        return "predict" in self.experiment.hooks

    def predict(self, inputs: Any) -> Any:
        """Run the experiment's predict hook ``predict(model, inputs)``.

        Without a predict hook a PyTorch module is called as ``model(inputs)`` and
        an object with a ``predict`` method (scikit-learn) as ``model.predict(inputs)``.
        PyTorch runs without gradients.

        Raises:
            ExportError: there is no way to predict with this model.
        """
        hook: Callable[..., Any] | None = self.experiment.hooks.get("predict")
        torch = sys.modules.get("torch")
        if hook is None:
            if torch is not None and isinstance(self.model, torch.nn.Module):
                hook = _call_module
            elif callable(getattr(self.model, "predict", None)):
                hook = _call_predict
            else:
                raise ExportError(
                    f"{self.path}: {self.manifest.experiment} has no predict hook; "
                    "add @exp.predict to the script and re-export"
                )
        if torch is not None:
            with torch.no_grad():
                return hook(self.model, inputs)
        return hook(self.model, inputs)

    def sample(self) -> Any:
        """The sample input recorded at export time (``None`` when there is none)."""
        return load_sample(self.path, self.manifest)

    def __repr__(self) -> str:
        m = self.manifest
        return f"LoadedModel({m.experiment}/{m.version} run={m.run_id} from {self.path})"


def _call_module(model: Any, inputs: Any) -> Any:
    return model(inputs)


def _call_predict(model: Any, inputs: Any) -> Any:
    return model.predict(inputs)


def load_sample(root: Path, manifest: Manifest) -> Any:
    """Read the bundle's recorded sample input (JSON or a torch file), else ``None``."""
    if manifest.sample_file is None:
        return None
    path = root / manifest.sample_file
    if path.suffix == ".json":
        return orjson.loads(path.read_bytes())
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def load(path: Path | str, *, check: bool = True) -> LoadedModel:
    """Load an export bundle: check it, import its code, rebuild the model, load the weights.

    Args:
        path: the bundle directory (``Deployment/exports/E012-small``).
        check: verify every file against the manifest first (default). Turn off only
            for a bundle you have just checked yourself.

    Returns:
        A :class:`LoadedModel` with ``.model``, ``.params``, ``.labels``, ``.manifest``
        and ``.predict(inputs)``.

    Raises:
        ExportError: a changed, missing or extra file, a path escaping the bundle,
            a symbolic link, or code/weights that fail to load (with the cause).
    """
    from mlbook.experiments.api import Experiment, Params

    root = Path(path).resolve()
    manifest = check_bundle(root) if check else read_manifest(root)
    params = Params(_read_json(root, manifest.params_file))
    labels = _read_labels(root, manifest.labels_file)
    entry = Path(manifest.entry_point)
    if entry.parts[0] != CODE_DIR or entry.suffix != ".py":
        raise ExportError(f"{root}/manifest.json: entry_point {entry} is not a code/*.py file")
    stem = re.sub(r"\W", "_", f"{manifest.experiment}_{manifest.version}")
    with _LOCK:
        package = f"_mlbook_bundle_{stem}_{next(_COUNTER)}"
        finder = _BundleFinder(package, root, {f.path: f.sha256 for f in manifest.files})
        sys.meta_path.insert(0, finder)
    dotted = ".".join([package, *entry.with_suffix("").parts[1:]])
    try:
        module, experiment = _import_entry(root, manifest, dotted, Experiment)
        model = _build(root, manifest, experiment, params)
    except BaseException:
        _forget(finder)
        raise
    return LoadedModel(
        model=model,
        params=params,
        labels=labels,
        manifest=manifest,
        path=root,
        experiment=experiment,
        module=module,
    )


def _import_entry(
    root: Path, manifest: Manifest, dotted: str, kind: type[Experiment]
) -> tuple[ModuleType, Experiment]:
    try:
        module = importlib.import_module(dotted)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"{root}: importing {manifest.entry_point} failed: {type(exc).__name__}: {exc}"
        ) from exc
    found = [v for v in vars(module).values() if isinstance(v, kind)]
    if len(found) != 1:
        raise ExportError(
            f"{root}: {manifest.entry_point} defines {len(found)} mlbook.Experiment objects; "
            "expected exactly one"
        )
    return module, found[0]


def _forget(finder: _BundleFinder) -> None:
    """Undo a failed load: drop the finder and the modules it imported."""
    with _LOCK:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
    prefix = finder.package + "."
    for name in [n for n in sys.modules if n == finder.package or n.startswith(prefix)]:
        del sys.modules[name]


def _read_json(root: Path, name: str) -> Any:
    try:
        return orjson.loads((root / name).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ExportError(f"{root / name}: cannot read ({exc}); re-export the model") from exc


def _read_labels(root: Path, name: str | None) -> ClassEncoding | None:
    if name is None:
        return None
    from mlbook.datasets.subsets import ClassEncoding
    from mlbook.errors import DatasetError

    try:
        return ClassEncoding.load(root / name)
    except DatasetError as exc:
        raise ExportError(f"{root / name}: {exc}") from exc


def _build(root: Path, manifest: Manifest, experiment: Experiment, params: Params) -> Any:
    hook = experiment.hooks.get("model")
    try:
        model = hook(params) if hook is not None else None
    except Exception as exc:
        raise ExportError(
            f"{root}: the model hook of {manifest.entry_point} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for name in manifest.weights:
        model = _load_weights(root / name, manifest.weights_format, model)
    eval_mode = getattr(model, "eval", None)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module) and callable(eval_mode):
        model.eval()
    return model


def _load_weights(path: Path, kind: str, model: Any) -> Any:
    try:
        if kind == "pickle":
            import pickle

            with open(path, "rb") as handle:
                return pickle.load(handle)
        if kind == "safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif kind == "torch":
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ExportError(f"{path}: unknown weights format {kind!r}; re-export the model")
        if model is None or not hasattr(model, "load_state_dict"):
            raise ExportError(
                f"{path}: weights need a model to load into; the script's @exp.model hook "
                "must build it"
            )
        model.load_state_dict(state)
        return model
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"{path}: loading the weights failed: {type(exc).__name__}: {exc}"
        ) from exc
