"""scikit-learn autolog(), with the real library: params, fit time, CV scores, weights, export."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("sklearn")

import mlbook
from mlbook.experiments.query import get_run, metric_series
from mlbook.experiments.runner import run_experiments
from mlbook.project import Project

pytestmark = pytest.mark.slow  # fits models and exports a bundle

PLAIN = """
    import argparse

    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlbook.integrations.sklearn import autolog

    autolog()
    from sklearn.model_selection import GridSearchCV, cross_val_score  # after autolog()

    parser = argparse.ArgumentParser()
    parser.add_argument("--C", type=float, default=1.0)
    args = parser.parse_args()
    X, y = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=args.C, max_iter=500))
    print("cv:", cross_val_score(model, X, y, cv=3).mean())
    search = GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}, cv=3).fit(X, y)
    model.fit(X, y)
"""

SHAPED = """
    import mlbook
    from mlbook.integrations.sklearn import autolog
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    exp = mlbook.Experiment(versions={"shallow": {"depth": 2}})

    @exp.train
    def train(run):
        autolog()
        X, y = load_iris(return_X_y=True)
        DecisionTreeClassifier(max_depth=run.params.depth, random_state=0).fit(X, y)

    @exp.sample
    def sample(params):
        return load_iris().data[:3]
"""


def test_autolog_records_fits_and_scores(project: Project) -> None:
    (project.models_dir / "E1_iris.py").write_text(textwrap.dedent(PLAIN))
    (info,) = run_experiments(project, ["E1"], sets={"C": "0.5"}, observers=[]).runs
    assert info.status == "completed", info.error
    record = get_run(project, info.run_id)
    params = record.params
    assert params["C"] == 0.5  # the script's option
    assert params["logisticregression__C"] == 0.5  # the pipeline's, deep
    assert params["best_C"] in (0.1, 1.0) and "cv" in params  # the search's
    series = metric_series(project, record)
    assert [p.step for p in series["cv_test_score"]] == [0, 1, 2]
    assert len(series["mean_test_score"]) == 2
    assert [len(series[k]) for k in ("fit_time", "training_score", "best_cv_score")] == [2, 2, 1]
    assert 0.8 < record.metrics["cv_test_score_mean"] <= 1
    assert record.metrics["training_score"] > 0.9
    assert record.weights is not None and record.weights.endswith("weights/model.pkl")
    from mlbook.deploy.bundle import export_run
    from mlbook.errors import ExportError

    with pytest.raises(
        ExportError, match=r"^E1_iris.py is a plain script \(no mlbook.Experiment\)"
    ):
        export_run(project, "E1")


def test_an_autologged_estimator_exports(project: Project) -> None:
    (project.models_dir / "E2_tree.py").write_text(textwrap.dedent(SHAPED))
    (info,) = run_experiments(project, ["E2"], observers=[]).runs
    assert info.status == "completed", info.error
    from mlbook.deploy.bundle import export_run

    result = export_run(project, "E2", "shallow")
    loaded = mlbook.load(result.path)
    assert type(loaded.model).__name__ == "DecisionTreeClassifier"
    assert list(loaded.predict([[5.1, 3.5, 1.4, 0.2]])) == [0]


def test_autolog_outside_a_run_and_undone() -> None:
    from sklearn.linear_model import LinearRegression

    from mlbook.integrations.sklearn import autolog

    autolog()
    try:
        assert hasattr(LinearRegression.fit, "__mlbook_autolog__")
        LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])  # no run: nothing recorded, no error
    finally:
        autolog(False)
    assert not hasattr(LinearRegression.fit, "__mlbook_autolog__")
