"""``mlbook.load(path)``: rebuild an exported model from its bundle, for deployment code.

Before anything runs, the bundle must be signed by a trusted key (see
:mod:`mlbook.deploy.signing`; ``trust=True`` accepts an unsigned or foreign
bundle, never one whose signature does not match), and every file must match
its manifest hash. The code, params, labels, sample and weights are read once,
hashed, and used from those bytes in memory: a file written into the bundle
after the check never runs, whenever the code imports it (lazily in the predict
hook included). Weights load with safetensors (or ``torch.load(weights_only=True)``);
a pickle (scikit-learn) is read only from a bundle a trusted key signed, since
reading a pickle can run any code.

The code is imported under a private package name that is new for every load
(``_mlbook_bundle_E012_small_1``), so two bundles whose scripts both import
``common.training`` each get their own copy (MLflow loads the first one's code
for both: mlflow/mlflow#4061). A meta-path finder serves that package's modules
from the verified bytes; the script's own absolute imports (``from
common.training import fit``) are redirected into the package by an
``__import__`` that only the bundle's modules see. Nothing is added to
``sys.path``, and nothing is read from or written to the bundle's ``code/``
after the check (no ``__pycache__``).
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import io
import itertools
import linecache
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from mlbook.deploy.manifest import (
    MANIFEST_FILE,
    Manifest,
    check_files,
    parse_manifest,
    read_manifest_bytes,
)
from mlbook.errors import ExportError

if TYPE_CHECKING:
    from mlbook.datasets.subsets import ClassEncoding
    from mlbook.deploy.signing import KeySource, SignatureCheck
    from mlbook.experiments.api import Experiment, Params

__all__ = ["LoadedModel", "load", "load_sample"]

_COUNTER = itertools.count(1)
_LOCK = threading.Lock()
CODE_DIR = "code"


class _BundleLoader(importlib.abc.Loader):
    """Executes one module from its verified bytes (or an empty package) with the
    bundle's ``__import__``."""

    def __init__(self, finder: _BundleFinder, key: str | None) -> None:
        self.finder = finder
        self.key = key

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__builtins__"] = self.finder.builtins
        if self.key is None:
            return
        filename = str(self.finder.code / self.key)
        code = compile(self.finder.sources[self.key], filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname: str) -> str | None:
        """The verified source (for tracebacks and ``inspect``)."""
        if self.key is None:
            return None
        return self.finder.sources[self.key].decode("utf-8", "replace")


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Finds ``<package>.<name>`` modules among one bundle's verified code files.

    ``sources`` maps paths relative to ``code/`` (``common/training.py``) to their
    bytes. A name under the package that is not among them is not found, and since
    every package's ``__path__`` is empty, no other finder looks on disk for it.
    """

    def __init__(self, package: str, root: Path, sources: Mapping[str, bytes]) -> None:
        self.package = package
        self.code = root / CODE_DIR
        self.sources = dict(sources)
        self.dirs = {
            parent.as_posix()
            for key in self.sources
            for parent in PurePosixPath(key).parents
            if parent.as_posix() != "."
        }
        self.tops = frozenset(_top_names(self.sources))
        self.builtins: dict[str, Any] = dict(builtins.__dict__)
        self.builtins["__import__"] = self._import

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.package:
            return self._spec(fullname, None, package=True)
        if not fullname.startswith(self.package + "."):
            return None
        relative = "/".join(fullname.split(".")[1:])
        if f"{relative}/__init__.py" in self.sources:
            return self._spec(fullname, f"{relative}/__init__.py", package=True)
        if f"{relative}.py" in self.sources:
            return self._spec(fullname, f"{relative}.py", package=False)
        if relative in self.dirs:  # a directory without __init__.py, like a namespace package
            return self._spec(fullname, None, package=True)
        return None

    def _spec(
        self, fullname: str, key: str | None, *, package: bool
    ) -> importlib.machinery.ModuleSpec:
        origin = str(self.code / key) if key is not None else None
        spec = importlib.machinery.ModuleSpec(
            fullname, _BundleLoader(self, key), origin=origin, is_package=package
        )
        if key is not None:
            spec.has_location = True  # sets __file__, so code can find its data files
            source = self.sources[key].decode("utf-8", "replace")
            linecache.cache[str(self.code / key)] = (
                len(source),
                None,  # no mtime: linecache keeps the verified lines, never rereads the file
                source.splitlines(keepends=True),
                str(self.code / key),
            )
        return spec

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


def _top_names(sources: Iterable[str]) -> set[str]:
    names: set[str] = set()
    for key in sources:
        first, _, rest = key.partition("/")
        if rest and first.isidentifier():
            names.add(first)
        elif not rest and first.endswith(".py") and first[:-3].isidentifier():
            names.add(first[:-3])
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
        signature: who signed the bundle (``signature.status``, ``signature.key``).
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
        signature: SignatureCheck,
        sample_bytes: bytes | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.labels = labels
        self.manifest = manifest
        self.path = path
        self.experiment = experiment
        self.module = module
        self.signature = signature
        self._sample_bytes = sample_bytes

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
        if self.manifest.sample_file is None or self._sample_bytes is None:
            return None
        return load_sample(self.manifest.sample_file, self._sample_bytes)

    def __repr__(self) -> str:
        m = self.manifest
        return f"LoadedModel({m.experiment}/{m.version} run={m.run_id} from {self.path})"


def _call_module(model: Any, inputs: Any) -> Any:
    return model(inputs)


def _call_predict(model: Any, inputs: Any) -> Any:
    return model.predict(inputs)


def load_sample(name: str, data: bytes) -> Any:
    """Decode a recorded sample input: JSON (``sample.json``) or a torch file read with
    ``weights_only=True`` (``sample.pt``)."""
    if name.endswith(".json"):
        return orjson.loads(data)
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load(
    path: Path | str,
    *,
    trusted_keys: Iterable[KeySource] | None = None,
    trust: bool = False,
) -> LoadedModel:
    """Load an export bundle: check it, import its code, rebuild the model, load the weights.

    Args:
        path: the bundle directory (``Deployment/exports/E012-small``).
        trusted_keys: public key files (PEM, as ``mlbook key --export`` writes them)
            whose signatures are accepted. Default:
            the files listed in ``MLBOOK_TRUSTED_KEYS`` (separated by ``os.pathsep``)
            and, when the bundle sits inside a project that has a key, that project's
            own key (``.mlbook/keys/signing.pub``).
        trust: also load a bundle that is unsigned or signed by a key not trusted
            (its files must still match its manifest; pickled weights are still refused).

    Returns:
        A :class:`LoadedModel` with ``.model``, ``.params``, ``.labels``, ``.manifest``
        and ``.predict(inputs)``.

    Raises:
        ExportError: unsigned, signed by an unknown key (with its fingerprint), a
            signature that does not match, a changed, missing or extra file, a path
            escaping the bundle, a symbolic link, or code/weights that fail to load.
    """
    from mlbook.deploy.signing import check_signature
    from mlbook.deploy.signing import trusted_keys as default_keys
    from mlbook.experiments.api import Experiment, Params

    root = Path(path).resolve()
    data = read_manifest_bytes(root)
    manifest = parse_manifest(data, root / MANIFEST_FILE)
    signature = check_signature(root, data, default_keys(root, trusted_keys))
    if signature.status == "bad" or (not signature.ok and not trust):
        raise ExportError(signature.problem)
    if manifest.weights_format == "pickle" and not signature.ok:
        raise ExportError(_pickle_refusal(root, manifest, signature))
    entry = PurePosixPath(manifest.entry_point)
    if entry.parts[0] != CODE_DIR or entry.suffix != ".py":
        raise ExportError(f"{root}/manifest.json: entry_point {entry} is not a code/*.py file")
    used = {manifest.params_file, *manifest.weights}
    used.update(name for name in (manifest.labels_file, manifest.sample_file) if name)
    files = check_files(
        root, manifest, keep=lambda name: name.startswith(f"{CODE_DIR}/") or name in used
    )
    params = Params(_read_json(root, manifest.params_file, files[manifest.params_file]))
    labels = _read_labels(root, manifest.labels_file, files)
    sources = {
        name[len(CODE_DIR) + 1 :]: data
        for name, data in files.items()
        if name.startswith(f"{CODE_DIR}/")
    }
    stem = re.sub(r"\W", "_", f"{manifest.experiment}_{manifest.version}")[:100]
    with _LOCK:
        package = f"_mlbook_bundle_{stem}_{next(_COUNTER)}"
        finder = _BundleFinder(package, root, sources)
        sys.meta_path.insert(0, finder)
    dotted = ".".join([package, *entry.with_suffix("").parts[1:]])
    try:
        module, experiment = _import_entry(root, manifest, dotted, Experiment)
        model = _build(root, manifest, experiment, params, files)
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
        signature=signature,
        sample_bytes=files.get(manifest.sample_file or ""),
    )


def _pickle_refusal(root: Path, manifest: Manifest, signature: SignatureCheck) -> str:
    why = (
        "is not signed"
        if signature.status == "unsigned"
        else f"is signed by key {signature.key}, which is not trusted"
    )
    names = ", ".join(manifest.weights)
    return (
        f"{root}: {names} is a pickle, and reading a pickle can run any code; mlbook reads "
        f"one only from a bundle signed by a trusted key, and this bundle {why} (trust=True "
        "does not cover pickles); add the exporting project's public key to "
        "MLBOOK_TRUSTED_KEYS or trusted_keys=, or re-export it in this project"
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


def _read_json(root: Path, name: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"{root / name}: not valid JSON ({exc}); re-export the model") from exc


def _read_labels(root: Path, name: str | None, files: Mapping[str, bytes]) -> ClassEncoding | None:
    if name is None:
        return None
    from mlbook.datasets.subsets import ClassEncoding
    from mlbook.errors import DatasetError

    try:
        return ClassEncoding.from_json(files[name], str(root / name))
    except DatasetError as exc:
        raise ExportError(str(exc)) from exc


def _build(
    root: Path,
    manifest: Manifest,
    experiment: Experiment,
    params: Params,
    files: Mapping[str, bytes],
) -> Any:
    hook = experiment.hooks.get("model")
    try:
        model = hook(params) if hook is not None else None
    except Exception as exc:
        raise ExportError(
            f"{root}: the model hook of {manifest.entry_point} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for name in manifest.weights:
        model = _load_weights(root / name, files[name], manifest.weights_format, model)
    eval_mode = getattr(model, "eval", None)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module) and callable(eval_mode):
        model.eval()
    return model


def _load_weights(path: Path, data: bytes, kind: str, model: Any) -> Any:
    """Load weights from their verified bytes (``path`` only names them in errors)."""
    try:
        if kind == "pickle":  # load() has checked the signature: a trusted key signed it
            import pickle

            return pickle.loads(data)
        if kind == "safetensors":
            from safetensors.torch import load as load_safetensors

            state = load_safetensors(data)
        elif kind == "torch":
            import torch

            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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
