"""Plain scripts (no mlbook.Experiment) as experiments: options, versions, --set/--grid, runs."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlbook.cli import cli
from mlbook.errors import ConfigError, ExperimentError
from mlbook.experiments.discovery import find_experiment, read_script
from mlbook.experiments.plain import (
    Option,
    StaticOptions,
    command_line,
    options_of,
    parse_text,
    split_values,
    typed,
)
from mlbook.experiments.plans import read_plan
from mlbook.experiments.query import get_run, metric_series
from mlbook.experiments.runner import plan, run_experiments
from mlbook.experiments.static import NotStatic, read_static
from mlbook.project import Project

DATA = Path(__file__).resolve().parent / "data"

TRAIN = """
    import argparse
    import os
    import sys

    from common.helpers import HALF  # imports of Models/ modules work


    def main():
        parser = argparse.ArgumentParser(description="a plain training script")
        parser.add_argument("--lr", type=float, default=0.1, help=f"learning rate ({HALF})")
        parser.add_argument("--epochs", type=int, default=3)
        parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--fail", type=int, default=0)
        args = parser.parse_args()
        loss = 1.0
        for epoch in range(1, args.epochs + 1):
            loss *= 1 - args.lr * HALF
            print(f"epoch {epoch} loss: {loss:.4f} note: fine")
            if args.dry_run:
                break
        print("acc=0.5 lr_seen=" + str(args.lr), flush=True)
        with open("result.txt", "w") as handle:  # lands in the run's output directory
            handle.write(os.getcwd())
        if args.fail:
            print("something went wrong", file=sys.stderr)
            sys.exit(args.fail)


    if __name__ == "__main__":
        main()
"""


def write(project: Project, name: str, body: str) -> Path:
    path = project.models_dir / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def configure(project: Project, text: str) -> Project:
    config = project.root / "mlbook.toml"
    config.write_text(config.read_text() + "\n" + textwrap.dedent(text))
    return Project.open(project.root)


@pytest.fixture
def plain(project: Project) -> Project:
    (project.models_dir / "common" / "helpers.py").write_text("HALF = 0.5\n")
    write(project, "E5_train.py", TRAIN)
    return project


# -- reading the options -------------------------------------------------------------------


def test_options_are_read_from_the_source(plain: Project) -> None:
    found = read_static((plain.models_dir / "E5_train.py").read_text())
    assert [(o.dest, o.flag, o.action, o.type, o.default) for o in found.options] == [
        ("lr", "--lr", "store", "float", 0.1),
        ("epochs", "--epochs", "store", "int", 3),
        ("optimizer", "--optimizer", "store", None, "sgd"),
        ("dry_run", "--dry-run", "store_true", None, False),
        ("fail", "--fail", "store", "int", 0),
    ]
    assert found.options[2].choices == ["sgd", "adam"]
    got = read_script(plain, find_experiment(plain, "E5"))
    assert got.kind == "plain" and got.read == "static"
    assert got.versions == {
        "default": {"lr": 0.1, "epochs": 3, "optimizer": "sgd", "dry_run": False, "fail": 0}
    }


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("import mlbook\nexp = mlbook.Experiment()\n@exp.train\ndef t(run): pass\n", "experiment"),
        ("from mlbook import Experiment as E\nexp = E(versions=make())\n", "experiment"),
        ("from common import make\nexp = make()\n@exp.train\ndef t(run): pass\n", "experiment"),
        ("import torch\nmodel = torch.nn.Linear(2, 2)\nmodel.train()\nprint('loss: 1')\n", "plain"),
        ("import mlbook\nmlbook.log(loss=1.0)\n", "plain"),
    ],
)
def test_the_source_says_which_kind_of_script(source: str, kind: str) -> None:
    try:
        found = read_static(source)
    except NotStatic as exc:
        assert exc.kind == kind
    else:
        assert isinstance(found, StaticOptions) == (kind == "plain")


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("import argparse\np = argparse.ArgumentParser()\np.add_argument(NAME)\n", "is computed"),
        (
            "import argparse, os\np = argparse.ArgumentParser()\n"
            "p.add_argument('--n', default=os.cpu_count())\n",
            "os.cpu_count() is computed",
        ),
        (
            "import argparse\np = argparse.ArgumentParser()\nfor n in 'ab':\n"
            "    p.add_argument('--' + n)\n",
            "line 4: add_argument(...) inside an if or a loop",
        ),
        (
            "import argparse\np = argparse.ArgumentParser()\np.add_subparsers()\n",
            "sub-commands (add_subparsers) are not read",
        ),
        ("from helpers import parser\nparser.add_argument('--n')\n", "0 argparse.ArgumentParser"),
    ],
)
def test_options_that_are_not_literals_say_why(source: str, why: str) -> None:
    with pytest.raises(NotStatic) as caught:
        read_static(source)
    assert caught.value.kind == "plain"
    assert why in str(caught.value)


def test_computed_options_are_read_in_a_child_and_cached(plain: Project) -> None:
    write(
        plain,
        "E6_computed.py",
        """
        import argparse
        import os

        WIDTHS = [8, 16]
        parser = argparse.ArgumentParser()
        parser.add_argument("--width", type=int, default=WIDTHS[0], choices=WIDTHS)
        parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
        parser.add_argument("--tags", nargs="+", default=["a"])
        parser.add_argument("-v", "--verbose", action="count", default=0)
        parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
        args = parser.parse_args()
        raise SystemExit("the script must not run past parse_args while planning")
        """,
    )
    script = find_experiment(plain, "E6")
    first = read_script(plain, script)
    assert first.kind == "plain" and first.read == "child"
    assert "is computed" in first.why
    assert [(o.dest, o.action, o.default) for o in first.options] == [
        ("width", "store", 8),
        ("workers", "store", min(2, __import__("os").cpu_count() or 1)),
        ("tags", "store", ["a"]),
        ("verbose", "count", 0),
        ("amp", "boolean", True),
    ]
    assert read_script(plain, script).read == "cache"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "import argparse, sys\np = argparse.ArgumentParser()\np.add_argument('--n', "
            "default=len('ab'))\nsys.exit(3)\n",
            "Models/E7_bad.py: the script called sys.exit(3) before parsing its arguments",
        ),
        (
            "import argparse\np = argparse.ArgumentParser()\np.add_argument('--n', "
            "default=len('ab'))\nraise KeyError('boom')\n",
            "Models/E7_bad.py:4: the script failed before parsing its arguments: KeyError: 'boom'",
        ),
        (
            "import argparse\np = argparse.ArgumentParser()\ns = p.add_subparsers()\n"
            "s.add_parser('go')\np.parse_args()\n",
            "the script's parser has sub-commands (add_subparsers)",
        ),
    ],
)
def test_a_script_that_fails_before_parse_args_is_one_error(
    project: Project, body: str, message: str
) -> None:
    write(project, "E7_bad.py", body)
    with pytest.raises(ExperimentError) as caught:
        read_script(project, find_experiment(project, "E7"))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_options_of_a_parser() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--lr", type=float, default="0.5")
    parser.add_argument("--no-cuda", action="store_false", dest="cuda")
    parser.add_argument("--mode", action="store_const", const="fast", default="slow")
    parser.add_argument("--layer", action="append", type=int)
    parser.set_defaults(lr=0.25)
    options = {o.dest: o for o in options_of(parser)}
    assert list(options) == ["data", "lr", "cuda", "mode", "layer"]
    assert options["data"].flags == () and options["data"].required
    assert (options["lr"].default, options["lr"].type) == (0.25, "float")
    assert (options["cuda"].action, options["cuda"].default) == ("store_false", True)
    assert options["mode"].const == "fast" and options["layer"].action == "append"


# -- values and command lines --------------------------------------------------------------


def test_values_are_typed_by_the_option() -> None:
    lr = Option(dest="lr", flags=("--lr",), type="float", default=0.1)
    epochs = Option(dest="epochs", flags=("--epochs",), type="int", default=3)
    choice = Option(dest="opt", flags=("--opt",), choices=["sgd", "adam"], default="sgd")
    flag = Option(dest="dry_run", flags=("--dry-run",), action="store_true", default=False)
    assert typed(lr, "0.01") == 0.01 and typed(lr, 1) == 1.0
    assert typed(epochs, "4") == 4 and typed(epochs, 2.0) == 2
    assert typed(flag, "true") is True and typed(flag, False) is False
    with pytest.raises(ValueError, match="expected a number"):
        typed(lr, "fast")
    with pytest.raises(ValueError, match="expected an integer"):
        typed(epochs, 2.5)
    with pytest.raises(ValueError, match="rmsprop is not one of: sgd, adam"):
        typed(choice, "rmsprop")
    assert parse_text("0.1") == 0.1 and parse_text("true") is True and parse_text("x") == "x"
    assert parse_text("[64, 64]") == [64, 64] and parse_text("3", 1.0) == 3.0
    assert split_values("0.1,0.01,[1,2]") == ["0.1", "0.01", "[1,2]"]


def test_command_line_passes_what_differs_from_the_defaults() -> None:
    options = [
        Option(dest="data", required=True),
        Option(dest="lr", flags=("-l", "--lr"), type="float", default=0.1),
        Option(dest="dry_run", flags=("--dry-run",), action="store_true", default=False),
        Option(dest="cuda", flags=("--no-cuda",), action="store_false", default=True),
        Option(dest="amp", flags=("--amp",), action="boolean", default=True),
        Option(dest="verbose", flags=("-v", "--verbose"), action="count", default=0),
        Option(dest="sizes", flags=("--sizes",), type="int", nargs="+", default=[1]),
        Option(dest="tag", flags=("--tag",), action="append", default=None),
    ]
    params = {
        "data": "-odd name",
        "lr": 0.01,
        "dry_run": True,
        "cuda": False,
        "amp": False,
        "verbose": 2,
        "sizes": [3, 4],
        "tag": ["a", "b"],
    }
    assert command_line(options, params) == [
        "--lr", "0.01", "--dry-run", "--no-cuda", "--no-amp", "-vv",
        "--sizes", "3", "4", "--tag", "a", "--tag", "b", "--", "-odd name",
    ]  # fmt: skip
    defaults = {o.dest: o.default for o in options} | {"data": "d"}
    assert command_line(options, defaults) == ["d"]
    with pytest.raises(ValueError, match="--dry-run only sets dry_run to True"):
        command_line(options[2:3], {"dry_run": "maybe"} | {"dry_run": 0})
    with pytest.raises(ValueError, match=r"data .* needs a value"):
        command_line(options[:1], {"data": None})


# -- versions from mlbook.toml, --set and --grid ------------------------------------------------


def test_versions_come_from_the_config(plain: Project) -> None:
    project = configure(
        plain,
        """
        [experiments.E5]
        title = "plain training"
        test = {epochs = 1, dry-run = true}
        grid = {lr = [0.1, 0.2]}

        [experiments.E5.versions]
        short = {epochs = 2}
        adam = {optimizer = "adam", lr = 1}
        """,
    )
    got = read_script(project, find_experiment(project, "E5"))
    assert got.title == "plain training"
    assert list(got.versions) == ["short-lr=0.1", "short-lr=0.2", "adam-lr=0.1", "adam-lr=0.2"]
    assert got.versions["adam-lr=0.2"] == {
        "lr": 0.2, "epochs": 3, "optimizer": "adam", "dry_run": False, "fail": 0,
    }  # fmt: skip
    planned = plan(project, ["E5"], ["adam-lr=0.1"], mode="test")
    assert planned[0].argv == ["--epochs", "1", "--optimizer", "adam", "--dry-run"]
    assert planned[0].params["epochs"] == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "[experiments.E5.versions]\nfast = {lrr = 0.1}\n",
            "mlbook.toml:{line}: experiments.E5.versions.fast: lrr: unknown key; the script's "
            "options: dry_run, epochs, fail, lr, optimizer",
        ),
        (
            "[experiments.E5.versions]\nfast = {epochs = 'many'}\n",
            "mlbook.toml:{line}: experiments.E5.versions.fast: epochs=many: expected an integer",
        ),
        (
            "[experiments.E5]\ntest = {optimizer = 'rmsprop'}\n",
            "mlbook.toml:{line}: experiments.E5.test: optimizer=rmsprop: rmsprop is not one of",
        ),
    ],
)
def test_config_versions_that_do_not_fit_name_the_line(
    plain: Project, table: str, message: str
) -> None:
    project = configure(plain, table)
    line = len((project.root / "mlbook.toml").read_text().splitlines())
    with pytest.raises(ConfigError) as caught:
        read_script(project, find_experiment(project, "E5"))
    assert f"{project.root}/{message.format(line=line)}" in str(caught.value)


def test_config_tables_are_checked(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"\[experiments.e5\]: 'e5' is not an experiment ID"):
        configure(project, "[experiments.e5]\ntest = {a = 1}\n")
    (project.root / "mlbook.toml").write_text("[experiments.E5]\nversion = {}\n")
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: \[experiments.E5\] unknown key 'versi"):
        Project.open(project.root)
    (project.root / "mlbook.toml").write_text("[experiments]\noutput_patterns = ['(a']\n")
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: experiments.output_patterns: '\(a' is"):
        Project.open(project.root)


def test_versions_in_the_config_are_refused_for_an_experiment_script(project: Project) -> None:
    write(
        project,
        "E1_exp.py",
        "import mlbook\nexp = mlbook.Experiment(base={'lr': 0.1})\nexp.train(print)\n",
    )
    configured = configure(project, "[experiments.E1.versions]\nfast = {lr = 1}\n")
    with pytest.raises(ConfigError, match=r"versions is for plain scripts"):
        read_script(configured, find_experiment(configured, "E1"))


def test_set_and_grid_are_typed_and_checked(plain: Project) -> None:
    planned = plan(plain, ["E5"], sets={"lr": "0.5", "dry-run": "true"}, grid={"epochs": ["1", 2]})
    assert [(p.version, p.params["epochs"], p.params["lr"]) for p in planned] == [
        ("epochs=1", 1, 0.5),
        ("epochs=2", 2, 0.5),
    ]
    assert planned[0].argv == ["--lr", "0.5", "--epochs", "1", "--dry-run"]
    with pytest.raises(ExperimentError) as caught:
        plan(plain, ["E5"], sets={"momentum": "0.9"})
    assert str(caught.value) == (
        "Models/E5_train.py: --set momentum: unknown key; the script's options: "
        "dry_run, epochs, fail, lr, optimizer"
    )
    with pytest.raises(ExperimentError, match=r"--grid optimizer=rms: rms is not one of"):
        plan(plain, ["E5"], grid={"optimizer": ["sgd", "rms"]})
    write(plain, "E6_tag.py", "import argparse\nargparse.ArgumentParser().add_argument('--tag')\n")
    assert plan(plain, ["E6"], grid={"tag": ["a.b", "c"]})[0].version == "tag=a.b"
    with pytest.raises(ExperimentError) as caught:  # a version name is a directory name
        plan(plain, ["E6"], grid={"tag": ["ok", "../../x"]})
    assert str(caught.value) == (
        "Models/E6_tag.py: --grid makes the version name 'tag=../../x'; grid values in "
        "names may use letters, digits and _ . = , + - only"
    )


def test_set_on_an_experiment_script_needs_the_key(project: Project) -> None:
    write(
        project,
        "E1_exp.py",
        """
        import mlbook
        exp = mlbook.Experiment(base={"lr": 0.1, "hidden": (8, 8)}, versions={"a": {}, "b": {}})

        @exp.train
        def train(run):
            return {"lr": run.params.lr, "hidden": len(run.params.hidden)}
        """,
    )
    with pytest.raises(ExperimentError) as caught:
        plan(project, ["E1"], sets={"width": "3"})
    assert str(caught.value) == (
        "Models/E1_exp.py: --set width: unknown key; the script's params: hidden, lr"
    )
    result = run_experiments(project, ["E1"], sets={"lr": "0.5"}, grid=None, observers=[])
    assert [(r.version, r.metrics, r.params["lr"]) for r in result.runs] == [
        ("a", {"lr": 0.5, "hidden": 2.0}, 0.5),
        ("b", {"lr": 0.5, "hidden": 2.0}, 0.5),
    ]
    result = run_experiments(project, ["E1"], versions=["b"], grid={"lr": [1, 2]}, observers=[])
    assert [(r.version, r.metrics["lr"]) for r in result.runs] == [("b-lr=1", 1.0), ("b-lr=2", 2.0)]


# -- running -------------------------------------------------------------------------------------


def test_a_plain_script_runs_as_it_is(plain: Project) -> None:
    result = run_experiments(plain, ["E5"], sets={"epochs": "2"}, observers=[])
    (info,) = result.runs
    assert info.status == "completed", info.error
    record = get_run(plain, info.run_id)
    assert record.params == {
        "lr": 0.1, "epochs": 2, "optimizer": "sgd", "dry_run": False, "fail": 0,
    }  # fmt: skip
    series = metric_series(plain, record)
    assert {k: [(p.step, p.value) for p in v] for k, v in series.items()} == {
        "loss": [(1, 0.95), (2, 0.9025)],
        "acc": [(2, 0.5)],
        "lr_seen": [(2, 0.1)],
    }
    assert record.metrics == {"loss": 0.9025, "acc": 0.5, "lr_seen": 0.1}
    out = plain.root / record.outputs
    assert (out / "result.txt").read_text() == str(out)  # cwd: the run's directory
    assert "epoch 2 loss: 0.9025" in (out / "output.log").read_text()
    assert not (plain.models_dir / "result.txt").exists()


def test_a_plain_script_that_exits_non_zero_fails_with_its_last_lines(plain: Project) -> None:
    result = run_experiments(plain, ["E5"], sets={"fail": "3"}, observers=[])
    (info,) = result.runs
    assert info.status == "failed"
    assert info.error is not None
    lines = info.error.splitlines()
    assert lines[0] == "the script exited with code 3"
    assert lines[1] == "last output:"
    assert lines[-1] == "something went wrong"


def test_a_plain_script_that_raises_fails_with_its_traceback(project: Project) -> None:
    write(project, "E8_raise.py", "print('loss: 1')\nraise ValueError('bad data')\n")
    (info,) = run_experiments(project, ["E8"], observers=[]).runs
    assert info.status == "failed"
    assert info.error is not None and info.error.endswith("ValueError: bad data")
    assert "runpy" not in info.error and "mlbook" not in info.error


def test_a_plain_script_ends_like_python(project: Project) -> None:
    write(
        project,
        "E8_end.py",
        """
        import atexit, threading, time

        def late():
            time.sleep(0.3)
            print("loss: 1", flush=True)

        threading.Thread(target=late).start()  # not a daemon: python waits for it
        atexit.register(lambda: print("acc: 2", flush=True))
        """,
    )
    (info,) = run_experiments(project, ["E8"], observers=[]).runs
    assert info.status == "completed", info.error
    assert info.metrics == {"loss": 1.0, "acc": 2.0}


@pytest.mark.slow
def test_ctrl_c_interrupts_a_plain_script(project: Project) -> None:
    write(
        project,
        "E9_slow.py",
        """
        import time
        for step in range(100000):
            print(f"step {step} loss: 0.5", flush=True)
            time.sleep(0.02)
        """,
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "mlbook", "run", "E9"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    store = project.state_dir / "runs.sqlite"

    def points() -> int:
        try:
            with sqlite3.connect(store, timeout=5) as db:
                return int(db.execute("SELECT sum(count) FROM metric_summary").fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return 0

    deadline = time.monotonic() + 60
    while points() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=30)
    assert runner.returncode == 130, err
    (record,) = __import__("mlbook").runs(project)
    assert record.status == "interrupted" and "KeyboardInterrupt" in (record.error or "")
    assert record.metrics["loss"] == 0.5  # the last value before the interrupt


def test_a_plain_script_without_options_in_test_mode(project: Project) -> None:
    write(
        project,
        "E9_loop.py",
        """
        import mlbook
        for epoch in mlbook.iterate(range(100)):
            for batch in mlbook.iterate(range(100)):
                print(f"epoch={epoch} batch={batch}")
        """,
    )
    (info,) = run_experiments(project, ["E9"], mode="test", test_steps=(3, 2), observers=[]).runs
    assert info.status == "completed", info.error
    assert info.metrics == {"batch": 1.0}


def test_cli_run_set_grid_and_errors(plain: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(plain.root)
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "E5", "--set", "lr", "--quiet"])
    assert result.exit_code == 1
    assert result.output == "error: --set lr: expected KEY=VALUE, e.g. --set lr=0.1\n"
    result = runner.invoke(cli, ["run", "E5", "--steps", "2,x", "--mode", "test"])
    assert result.output == "error: --steps 2,x: expected whole numbers from 1 up, e.g. 2 or 3,2\n"
    result = runner.invoke(cli, ["ls"])
    assert result.exit_code == 0
    assert result.output.splitlines()[1].split() == [
        "E5", "Models/E5_train.py", "default", "plain:", "--lr", "--epochs", "--optimizer",
        "--dry-run", "--fail",
    ]  # fmt: skip
    rows = json.loads(runner.invoke(cli, ["ls", "--format", "json"]).output)
    assert rows[0]["kind"] == "plain"
    assert rows[0]["options"]["lr"] == {"flags": ["--lr"], "type": "float", "default": 0.1}


@pytest.mark.slow
def test_cli_run_grid_in_a_subprocess(plain: Project) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", "run", "E5", "--grid", "lr=0.2,0.4", "--set", "epochs=1"],
        cwd=plain.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "2 run(s): 2 completed" in done.stdout
    runs = {r.version: r for r in __import__("mlbook").runs(plain)}
    assert runs["lr=0.2"].metrics["lr_seen"] == 0.2 and runs["lr=0.4"].params["lr"] == 0.4


# -- a real public script: pytorch/examples mnist/main.py (see tests/data/SOURCES.md) ---------


@pytest.mark.slow
def test_the_pytorch_mnist_example_runs_unchanged(project: Project) -> None:
    pytest.importorskip("torch")
    shutil.copy(DATA / "scripts" / "mnist_main.py", project.models_dir / "E010_mnist.py")
    done = subprocess.run(
        [sys.executable, "-m", "mlbook", "run", "E010", "--set", "epochs=1"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (record,) = __import__("mlbook").runs(project)
    assert record.status == "completed"
    assert record.params == {
        "batch_size": 64, "test_batch_size": 1000, "epochs": 1, "lr": 1.0, "gamma": 0.7,
        "no_accel": False, "dry_run": False, "seed": 1, "log_interval": 10, "save_model": False,
    }  # fmt: skip
    series = metric_series(project, record)
    assert sorted(series) == ["Loss", "loss"]  # "Loss: 2.30" (train), "Average loss: 0.41" (test)
    assert [p.step for p in series["Loss"]] == [1] and [p.step for p in series["loss"]] == [1]

    # the same script with one added mlbook.log line records a series of its own
    source = (DATA / "scripts" / "mnist_main.py").read_text()
    logged = source.replace(
        "    test_loss /= len(test_loader.dataset)\n",
        "    test_loss /= len(test_loader.dataset)\n"
        "    mlbook.log(test_loss=test_loss, accuracy=correct / len(test_loader.dataset))\n",
    ).replace("import argparse\n", "import argparse\nimport mlbook\n", 1)
    assert logged.count("\n") == source.count("\n") + 2  # import mlbook, mlbook.log(...)
    (project.models_dir / "E010_mnist.py").write_text(logged)
    result = run_experiments(project, ["E010"], sets={"epochs": 2}, observers=[])
    (info,) = result.runs
    assert info.status == "completed", info.error
    series = metric_series(project, get_run(project, info.run_id))
    assert [p.step for p in series["test_loss"]] == [0, 1]
    assert 0 <= series["accuracy"][-1].value <= 1
    assert info.metrics["accuracy"] == series["accuracy"][-1].value


def test_read_plan_of_a_plain_script_outside_a_project(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--k')\n")
    got = read_plan(script, tmp_path)
    assert got.kind == "plain" and got.versions == {"default": {"k": None}}
