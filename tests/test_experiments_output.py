"""Metrics read from output lines: the built-in patterns, custom ones, the tee, in a run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlbook.experiments.output import LineParser, pattern_problem
from mlbook.experiments.query import get_run, metric_series
from mlbook.experiments.runner import run_experiments
from mlbook.project import Project


@pytest.mark.parametrize(
    ("line", "step", "values"),
    [
        ("loss: 0.12", 0, {"loss": 0.12}),
        ("acc=0.97 val_acc=0.95", 0, {"acc": 0.97, "val_acc": 0.95}),
        ("epoch 3 loss: 0.12 acc: 0.97", 3, {"loss": 0.12, "acc": 0.97}),
        ("Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.300024", 1, {"Loss": 2.300024}),
        ("Test set: Average loss: 0.0270, Accuracy: 9914/10000 (99%)", 0, {"loss": 0.027}),
        ("Epoch 4/10 - loss: 1e-3 - acc: 97.5%", 4, {"loss": 0.001, "acc": 97.5}),
        ('{"loss": 0.5, "step": 9}', 9, {"loss": 0.5}),
        ("[step=7] lr=-2.5E-4;", 7, {"lr": -0.00025}),
        ("a: -inf b: +3 c: .5", 0, {"a": -math.inf, "b": 3.0, "c": 0.5}),
        ("loss: 0.5 (best) | lr: 1e-4 - step 7", 7, {"loss": 0.5, "lr": 0.0001}),
    ],
)
def test_the_built_in_patterns(line: str, step: int, values: dict[str, float]) -> None:
    assert LineParser().parse(line) == (step, values)


@pytest.mark.parametrize(
    "line",
    [
        "loss: abc",
        "version: 1.2.3",
        "time 12:30:01",
        "see http://host:80/path",
        "Downloading 50 files, please wait",
        "12lr: 3",
        "ratio: 3/4",
        "TPU available: False, using: 0 TPU cores",
        "took: 5 seconds",
        "",
    ],
)
def test_lines_that_look_like_metrics_but_are_not_give_nothing(line: str) -> None:
    assert LineParser().parse(line) == (None, {})


def test_nan_is_a_value_and_steps_carry_over() -> None:
    parser = LineParser()
    step, values = parser.parse("loss: nan")
    assert step == 0 and math.isnan(values["loss"])
    assert parser.parse("acc: 1") == (1, {"acc": 1.0})  # no step yet: lines count
    assert parser.parse("epoch 5") == (5, {})
    assert parser.parse("acc: 2") == (5, {"acc": 2.0})  # the last step a line gave


def test_custom_patterns() -> None:
    parser = LineParser(
        [r"^iter (?P<step>\d+): (?P<key>\w+) is (?P<value>\S+)", r"top1 (?P<top1>\S+)"]
    )
    assert parser.parse("iter 12: loss is 0.5") == (12, {"loss": 0.5})
    assert parser.parse("top1 0.75 loss: 3") == (12, {"top1": 0.75})
    assert parser.parse("top1 n/a") == (None, {})


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a", "is not a valid regular expression"),
        (r"loss (\S+)", "has no named group"),
        (r"(?P<step>\d+)", "has no named group"),
        (r"(?P<key>\w+)", "has only one of the groups key and value"),
        (r"(?P<loss>\S+)", ""),
    ],
)
def test_pattern_problems(pattern: str, problem: str) -> None:
    assert pattern_problem(pattern).startswith(problem)


@given(st.text(max_size=300))
def test_any_line_parses_without_error(line: str) -> None:
    step, values = LineParser().parse(line)
    assert step is None or isinstance(step, int)
    assert all(isinstance(v, float) for v in values.values())


@given(st.text(alphabet="abcdelos:= 0123456789.-+eE%,/()[]\t", max_size=80))
def test_metric_like_lines_parse_without_error(line: str) -> None:
    parser = LineParser()
    for _ in range(2):
        step, values = parser.parse(line)
        assert (step is None) == (not values) or step is not None


TEE = """
import json, os, subprocess, sys
from mlbook.experiments.output import LineParser, OutputTee
parser = LineParser()
seen = []
tee = OutputTee(lambda line: seen.append(parser.parse(line)))
tee.start()
print("loss: 1", flush=True)
os.write(2, b"acc=0.5\\rprogress 50%\\rloss: 2\\n")
subprocess.run([sys.executable, "-c", "print('loss: 3')"], check=True)
sys.stdout.write("partial: 4")
sys.stdout.flush()
tee.stop()
print("\\n" + json.dumps({"seen": seen, "tail": list(tee.tail)}))
"""


def test_the_tee_copies_and_reads_every_line(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    with open(log, "wb") as handle:
        done = subprocess.run(
            [sys.executable, "-c", TEE], stdout=handle, stderr=subprocess.STDOUT, timeout=60
        )
    assert done.returncode == 0
    lines = log.read_bytes().decode().split("\n")
    assert lines[:2] == ["loss: 1", "acc=0.5\rprogress 50%\rloss: 2"]
    got = json.loads(lines[-2])
    assert got["seen"] == [
        [0, {"loss": 1.0}],
        [1, {"acc": 0.5}],
        [None, {}],
        [2, {"loss": 2.0}],
        [3, {"loss": 3.0}],
        [4, {"partial": 4.0}],
    ]
    assert got["tail"] == ["loss: 1", "acc=0.5", "progress 50%", "loss: 2", "loss: 3", "partial: 4"]


def test_in_a_run_keys_the_script_logs_are_not_read_twice(project: Project) -> None:
    (project.models_dir / "E1_both.py").write_text(
        textwrap.dedent(
            """
            import mlbook
            mlbook.log(step=10, loss=0.5)
            mlbook.current_run().flush()
            print("loss: 9 acc: 0.25", flush=True)
            print("loss: bad acc: nan", flush=True)
            """
        )
    )
    (info,) = run_experiments(project, ["E1"], observers=[]).runs
    assert info.status == "completed", info.error
    series = metric_series(project, get_run(project, info.run_id))
    assert [(p.step, p.value) for p in series["loss"]] == [(10, 0.5)]
    assert [p.step for p in series["acc"]] == [0, 1]
    assert math.isnan(series["acc"][-1].value)


def test_output_metrics_can_be_turned_off_or_on(project: Project) -> None:
    script = "import mlbook\nprint('loss: 1')\n"
    (project.models_dir / "E1_quiet.py").write_text(script)
    (project.models_dir / "E2_exp.py").write_text(
        "import mlbook\nexp = mlbook.Experiment()\n@exp.train\ndef t(run):\n    print('acc: 1')\n"
    )
    config = project.root / "mlbook.toml"
    config.write_text(config.read_text() + "\n[experiments.E1]\noutput_metrics = false\n")
    project = Project.open(project.root)
    runs = run_experiments(project, ["E1", "E2"], observers=[]).runs
    assert [metric_series(project, get_run(project, r.run_id)) for r in runs] == [{}, {}]
    config.write_text(
        config.read_text().replace("output_metrics = false", "output_metrics = true")
        + "\n[experiments.E2]\noutput_metrics = true\noutput_patterns = ['acc: (?P<top1>\\S+)']\n"
    )
    project = Project.open(project.root)
    runs = run_experiments(project, ["E1", "E2"], observers=[]).runs
    got = [sorted(metric_series(project, get_run(project, r.run_id))) for r in runs]
    assert got == [["loss"], ["top1"]]
