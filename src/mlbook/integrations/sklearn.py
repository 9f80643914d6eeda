"""scikit-learn: ``autolog()`` records what a script fits into the current mlbook run.

::

    from mlbook.integrations.sklearn import autolog

    autolog()
    clf = LogisticRegression(C=1.0).fit(X, y)

After :func:`autolog`, inside a run, each ``fit`` made by the script itself (not
the fits an estimator makes inside its own ``fit``, a pipeline's steps or a
search's candidates) records:

- the estimator's params (``get_params()``; nested estimators as their
  ``pipeline__step__param`` keys) as the run's params;
- ``fit_time`` (seconds) and, with a ``y``, ``training_score``
  (``estimator.score(X, y)``) as metrics;
- for a search (``GridSearchCV``, ``RandomizedSearchCV``): ``best_cv_score``, the
  ``mean_test_score`` of every candidate as a series, and its ``best_params_`` as
  params named ``best_<param>``;
- the fitted estimator as the run's weights (``weights/model.pkl``), so
  ``mlbook export`` can bundle it (the last estimator fitted wins).

``cross_validate`` (and ``cross_val_score``, which calls it) records each
fold's scores as series ``cv_<key>`` (``cv_test_score`` at steps 0, 1, ...) and
their means as ``cv_<key>_mean``. Call :func:`autolog` before ``from
sklearn.model_selection import cross_validate`` (a name imported earlier keeps
the unpatched function); estimator classes defined later are covered.

Outside a run the patched methods call the originals and record nothing.
``autolog(False)`` removes the patches.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import sklearn.base
import sklearn.model_selection
import sklearn.model_selection._validation

from mlbook import _active

__all__ = ["autolog"]

_PATCHED = "__mlbook_autolog__"
_lock = threading.Lock()
_depth = 0  # fits (or cross-validations) in progress: inner fits are not recorded
_enabled = False
_original_init_subclass: Any = None


def autolog(enable: bool = True) -> None:
    """Record every top-level ``fit`` and ``cross_validate`` in the current run.

    Idempotent; ``autolog(False)`` restores scikit-learn's own methods.
    """
    global _enabled, _original_init_subclass
    with _lock:
        if enable == _enabled:
            return
        _enabled = enable
        base = sklearn.base.BaseEstimator
        if enable:
            for cls in _estimator_classes():
                _patch_class(cls)
            _original_init_subclass = base.__dict__.get("__init_subclass__")
            base.__init_subclass__ = classmethod(_init_subclass)
            for module in (sklearn.model_selection, sklearn.model_selection._validation):
                module.cross_validate = _wrap_cross_validate(module.cross_validate)
        else:
            for cls in _estimator_classes():
                original = cls.__dict__.get("fit")
                if original is not None and hasattr(original, _PATCHED):
                    cls.fit = getattr(original, _PATCHED)
            if _original_init_subclass is None:
                del base.__init_subclass__
            else:
                base.__init_subclass__ = _original_init_subclass
            for module in (sklearn.model_selection, sklearn.model_selection._validation):
                wrapped = module.cross_validate
                module.cross_validate = getattr(wrapped, _PATCHED, wrapped)


def _estimator_classes() -> list[type[Any]]:
    found: list[type[Any]] = []
    todo = [sklearn.base.BaseEstimator]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _init_subclass(cls: type[Any], /, **kwargs: Any) -> None:
    super(sklearn.base.BaseEstimator, cls).__init_subclass__(**kwargs)
    if _enabled:
        _patch_class(cls)


def _patch_class(cls: type[Any]) -> None:
    original = cls.__dict__.get("fit")
    if original is None or not callable(original) or hasattr(original, _PATCHED):
        return
    cls.fit = _wrap_fit(original)


def _wrap_fit(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _depth
        if _depth or _active.current_run() is None:
            return original(self, *args, **kwargs)
        with _lock:
            _depth += 1
        start = time.perf_counter()
        try:
            result = original(self, *args, **kwargs)
        finally:
            with _lock:
                _depth -= 1
        _record_fit(self, args, kwargs, time.perf_counter() - start)
        return result

    setattr(fit, _PATCHED, original)
    return fit


def _wrap_cross_validate(original: Callable[..., Any]) -> Callable[..., Any]:
    if hasattr(original, _PATCHED):
        return original

    @functools.wraps(original)
    def cross_validate(*args: Any, **kwargs: Any) -> Any:
        global _depth
        if _depth or _active.current_run() is None:
            return original(*args, **kwargs)
        with _lock:
            _depth += 1
        try:
            result = original(*args, **kwargs)
        finally:
            with _lock:
                _depth -= 1
        _record_scores(result)
        return result

    setattr(cross_validate, _PATCHED, original)
    return cross_validate


def _record_fit(
    estimator: Any, args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float
) -> None:
    run = _active.current_run()
    if run is None:
        return
    params = {
        key: value
        for key, value in estimator.get_params(deep=True).items()
        if not hasattr(value, "get_params")
    }
    run.log_params(**params)
    metrics: dict[str, Any] = {"fit_time": seconds}
    x = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    if y is not None and x is not None and hasattr(estimator, "score"):
        with contextlib.suppress(Exception):  # one that cannot score its training data: no score
            metrics["training_score"] = float(estimator.score(x, y))
    if hasattr(estimator, "best_score_"):
        metrics["best_cv_score"] = float(estimator.best_score_)
        run.log_params(**{f"best_{k}": v for k, v in estimator.best_params_.items()})
        for index, score in enumerate(estimator.cv_results_.get("mean_test_score", [])):
            run.log(step=index, mean_test_score=score)
    run.log(**metrics)
    run.save_weights(estimator)


def _record_scores(result: dict[str, Any]) -> None:
    run = _active.current_run()
    if run is None:
        return
    series = {
        f"cv_{key}": list(values)
        for key, values in result.items()
        if key not in ("estimator", "indices") and hasattr(values, "__len__")
    }
    folds = max((len(v) for v in series.values()), default=0)
    for fold in range(folds):
        run.log(step=fold, **{key: values[fold] for key, values in series.items()})
    run.log(
        **{f"{key}_mean": sum(values) / len(values) for key, values in series.items() if values}
    )
