"""The end-to-end demo: the whole practice on a real project, as a user would run it.

Every step runs the real `mlbook` command (or python, or git) in a temporary
directory and shows its output. Run it through `bash scripts/demo.sh`, which sets
up the environment first. `--keep` keeps the demo project to look around in.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COLOUR = sys.stdout.isatty()
STEP = 0

THREE_VERSIONS = '''"""Versions of a toy fit; one raises, to show what a failure looks like."""

import math
import time

import mlbook

exp = mlbook.Experiment(
    base={"rate": 0.5, "steps": 20, "pause": 0.0},
    versions={"slow": {"rate": 0.1}, "fast": {"rate": 0.9}, "broken": {"rate": -1.0},
              "long": {"steps": 400, "pause": 0.01}},
    title="Toy decay fits",
)


@exp.train
def train(run):
    if run.params.rate < 0:
        raise ValueError(f"rate must be positive, got {run.params.rate}")
    loss = 1.0
    for step in run.iterate(range(run.params.steps)):
        loss *= math.exp(-run.params.rate)
        run.log(step=step, loss=loss)
        time.sleep(run.params.pause)
    return {"final_loss": loss}
'''


def _style(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if COLOUR else text


def step(title: str) -> None:
    global STEP
    STEP += 1
    print("\n" + _style("1;36", f"== {STEP}. {title}"), flush=True)


def say(text: str) -> None:
    print(_style("33", text), flush=True)


def sh(*args: str, cwd: Path, expect: int | None = 0, show: int | None = None) -> str:
    """Run a command as a user would type it; print its output (``show``: first lines)."""
    print(_style("2", "$ " + " ".join(shlex.quote(a) for a in args)), flush=True)
    program = args[0]
    if program in {"mlbook", "python"}:
        program = str(BIN / program)
    env = {**os.environ, "COLUMNS": "120", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [program, *args[1:]],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output = done.stdout.rstrip("\n")
    lines = output.splitlines()
    if show is not None and len(lines) > show:
        lines = [*lines[:show], _style("2", f"... ({len(lines) - show} more lines)")]
    if lines:
        print("\n".join(lines), flush=True)
    if expect is not None and done.returncode != expect:
        sys.exit(f"demo failed: `{' '.join(args)}` exited {done.returncode}, expected {expect}")
    return done.stdout


def runs(cwd: Path, *filters: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [str(BIN / "mlbook"), "runs", "--format", "json", *filters],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: list[dict[str, object]] = json.loads(out)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def section(text: str, header: str) -> str:
    """The lines of a Markdown entry starting at ``header`` up to the next entry."""
    start = text.index(header)
    end = text.find("\n## [", start + 1)
    return text[start : end if end != -1 else len(text)].rstrip()


LOAD_BUNDLE = '''"""Load an export bundle the way deployment code does, from anywhere."""

import sys

import mlbook

try:
    model = mlbook.load(sys.argv[1])
except mlbook.ExportError as exc:
    sys.exit(f"refused: {exc}")
print(f"loaded {model.manifest.experiment}/{model.manifest.version} "
      f"(run {model.manifest.run_id}): {len(model.labels)} labels, params {dict(model.params)}")
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the demo project")
    args = parser.parse_args()
    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="mlbook-demo-"))
    demo = base / "demo"
    try:
        step("Create a project from the digits example")
        sh("mlbook", "init", "demo", "--example", "digits", cwd=base)
        sh("git", "add", "-A", cwd=demo)
        sh("git", "commit", "-q", "-m", "Start the digits project", cwd=demo)

        step("Prepare the data (Data_processing/ writes Datasets/digits/)")
        sh("python", "Data_processing/prepare_digits.py", cwd=demo)
        sh("mlbook", "data", "validate", "Datasets/digits", cwd=demo)
        sh(
            "mlbook",
            "data",
            "stats",
            "Datasets/digits",
            "--plot",
            "digits_stats.png",
            cwd=demo,
            show=14,
        )

        step("Convert a real COCO sample (openvinotoolkit/datumaro test assets, MIT)")
        raw = demo / "Datasets" / "raw" / "coco_sample"
        shutil.copytree(REPO / "tests" / "data" / "coco", raw)
        say(f"copied the COCO sample to {raw.relative_to(demo)}/")
        sh(
            "mlbook",
            "data",
            "convert",
            "Datasets/raw/coco_sample",
            "Datasets/coco_sample",
            "--from",
            "coco",
            cwd=demo,
        )
        sh("mlbook", "data", "stats", "Datasets/coco_sample", cwd=demo, show=16)
        sh(
            "mlbook",
            "data",
            "convert",
            "Datasets/coco_sample",
            "coco_roundtrip.json",
            "--from",
            "mlbook",
            "--to",
            "coco",
            cwd=demo,
        )

        step("Check the boundaries between the areas")
        sh("mlbook", "check", cwd=demo)
        bad = demo / "Models" / "E999_bad.py"
        bad.write_text("from Deployment import predict_digits\n")
        say("planted Models/E999_bad.py: from Deployment import predict_digits")
        sh("mlbook", "check", cwd=demo, expect=1)
        bad.unlink()

        step("Smoke-test every experiment in test mode (loops cut short, nothing recorded)")
        sh("mlbook", "ls", cwd=demo)
        sh("mlbook", "run", "--mode", "test", cwd=demo)

        step("Train every version for real: each in its own process, all recorded")
        sh("mlbook", "run", cwd=demo)
        sh("mlbook", "runs", cwd=demo)
        sh("mlbook", "runs", "acc>0.97", "--sort", "-acc", cwd=demo)
        best = runs(demo, "--sort", "-acc")[0]
        sh("mlbook", "show", str(best["id"]), cwd=demo, show=24)

        step("An experiment with a failing version, and a runner killed with kill -9")
        sh("mlbook", "new", "E003", "Toy decay fits", cwd=demo)
        (script,) = (demo / "Models").glob("E003_*.py")
        script.write_text(THREE_VERSIONS)
        say(f"wrote {script.relative_to(demo)}: versions slow, fast, broken (raises), long")
        sh("mlbook", "run", "E003", "--skip-version", "long", "--mode", "test", cwd=demo, expect=1)
        sh("mlbook", "run", "E003", "--skip-version", "long", cwd=demo, expect=1)
        sh("mlbook", "runs", "--experiment", "E003", cwd=demo)
        failed = runs(demo, "--experiment", "E003", "--status", "failed")[0]
        sh("mlbook", "show", str(failed["id"]), cwd=demo, show=30)
        say("now start version `long` and kill the runner with SIGKILL after 2 s")
        runner = subprocess.Popen(
            [str(BIN / "mlbook"), "run", "E003", "--version", "long", "-q"],
            cwd=demo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2.0)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        say(f"runner killed (exit {runner.returncode}); the store still opens:")
        sh("mlbook", "runs", "--experiment", "E003", "--version", "long", cwd=demo)
        crashed = runs(demo, "--experiment", "E003", "--version", "long")[0]
        sh("mlbook", "show", str(crashed["id"]), cwd=demo, show=14)

        step("Provenance: the user's branch is untouched; each run has hidden commits")
        sh("git", "log", "--oneline", cwd=demo)
        sh("git", "status", "--short", cwd=demo)
        sh("git", "for-each-ref", "--count=4", "refs/mlbook/runs", cwd=demo)
        sh(
            "git",
            "show",
            "--stat",
            "--format=%s",
            f"refs/mlbook/runs/{best['id']}/after",
            cwd=demo,
            show=12,
        )

        step("Change shared training code, train again, and diff the two runs")
        training = demo / "Models" / "common" / "training.py"
        source = training.read_text()
        old = "optimizer = torch.optim.Adam("
        if old not in source:
            sys.exit("demo failed: Models/common/training.py no longer creates an Adam optimizer")
        training.write_text(source.replace(old, "optimizer = torch.optim.AdamW("))
        say("edited Models/common/training.py: Adam -> AdamW")
        first = runs(demo, "--experiment", "E001", "--version", "narrow")[0]
        sh("mlbook", "run", "E001", "--version", "narrow", cwd=demo)
        second = runs(demo, "--experiment", "E001", "--version", "narrow")[0]
        sh("mlbook", "diff", str(first["id"]), str(second["id"]), cwd=demo)

        step("The journal, kept in step by the runs (your own text is never touched)")
        sh("mlbook", "note", "E001", "Wide beats narrow; AdamW changes little.", cwd=demo)
        sh("mlbook", "log", "E001", "--status", "done", cwd=demo)
        sh("mlbook", "log", cwd=demo)
        print(section((demo / "EXPERIMENT_LOG.md").read_text(), "## [E001]"))

        step("Export the best model with its code, weights and ONNX; verified in a clean process")
        say('E001 has Experiment(metric="acc", goal="max"): export picks its best run')
        sh("mlbook", "export", "E001", "--onnx", cwd=demo)
        (bundle,) = (demo / "Deployment" / "exports").glob("E001-*")
        sh("mlbook", "exports", cwd=demo)

        step("Deployment code loads the export (never Models/) and measures it")
        sh("python", "Deployment/predict_digits.py", str(bundle), cwd=demo)
        elsewhere = base / "shipped" / bundle.name
        shutil.copytree(bundle, elsewhere)
        (base / "load_bundle.py").write_text(LOAD_BUNDLE)
        say(f"copied the bundle to {elsewhere}, outside the project: no key is trusted there")
        sh("python", "load_bundle.py", str(elsewhere), cwd=base, expect=1)
        public = base / "shipped" / "project.pub"
        sh("mlbook", "key", "--export", str(public), cwd=demo)
        os.environ["MLBOOK_TRUSTED_KEYS"] = str(public)
        (demo / "Models").rename(demo / "Models.away")
        say(f"MLBOOK_TRUSTED_KEYS={public}, and Models/ renamed away")
        sh("python", "load_bundle.py", str(elsewhere), cwd=base)
        (demo / "Models.away").rename(demo / "Models")
        tampered = next((elsewhere / "code").glob("E001_*.py"))
        data = bytearray(tampered.read_bytes())
        data[-2] ^= 0x01
        tampered.write_bytes(bytes(data))
        say(f"flipped one byte of {tampered.relative_to(elsewhere)} in the copy")
        sh("python", "load_bundle.py", str(elsewhere), cwd=base, expect=1)
        del os.environ["MLBOOK_TRUSTED_KEYS"]

        step("Serve the export over HTTP and ask for one prediction")
        port = free_port()
        server = subprocess.Popen(
            [str(BIN / "mlbook"), "serve", str(bundle), "--port", str(port)],
            cwd=demo,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                        health = answer.read().decode()
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        sys.exit("demo failed: the server did not start")
                    time.sleep(0.2)
            say(f"GET {url}/health -> {health}")
            image = next((demo / "Datasets" / "digits" / "images").rglob("*.png"))
            body = json.dumps({"image": base64.b64encode(image.read_bytes()).decode()})
            request = urllib.request.Request(
                f"{url}/predict", data=body.encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                say(f"POST {url}/predict ({image.name}) -> {answer.read().decode()}")
        finally:
            server.terminate()
            server.wait(timeout=30)

        step("The web UI: every run, the curves and a comparison with its code diff")
        port = free_port()
        ui = subprocess.Popen(
            [str(BIN / "mlbook"), "ui", "--port", str(port)],
            cwd=demo,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/", timeout=5) as answer:
                        page = answer.read().decode()
                        break
                except OSError:
                    if ui.poll() is not None or time.monotonic() > deadline:
                        sys.exit("demo failed: mlbook ui did not start")
                    time.sleep(0.2)
            shown = sorted({r["experiment"] for r in runs(demo) if str(r["id"]) in page})
            say(f"GET {url}/ -> the runs table, runs of {', '.join(map(str, shown))}")
            # the two narrow runs from before and after the AdamW edit (step 9)
            second, first = runs(demo, "--experiment", "E001", "--version", "narrow")[:2]
            with urllib.request.urlopen(f"{url}/curves?metric=loss", timeout=30) as answer:
                say(f"GET {url}/curves?metric=loss -> {answer.status}, every run's loss")
            compare = f"{url}/compare?runs={first['id']}&runs={second['id']}"
            with urllib.request.urlopen(compare, timeout=60) as answer:
                body = answer.read().decode()
            say(f"GET {compare} -> {answer.status}; code diff shown: {'diff --git' in body}")
            look = (
                f"mlbook -C {demo} ui"
                if args.keep
                else "`bash scripts/demo.sh --keep`, then mlbook ui"
            )
            say(f"to look around yourself: {look}, and open http://127.0.0.1:8765")
        finally:
            ui.terminate()
            ui.wait(timeout=30)

        step("Where everything is")
        seconds = time.perf_counter() - started
        for place, what in [
            ("mlbook.toml", "the project config"),
            ("EXPERIMENT_LOG.md", "the journal: entries, steps with metrics and commits, notes"),
            ("Datasets/digits/", "dataset.json + records.jsonl + PNG images"),
            ("Datasets/coco_sample/", "the converted COCO sample"),
            ("Models/E001_digits_cnn.py", "an experiment: its versions and hooks"),
            ("Models/outputs/", "run outputs: weights, checkpoints, logs"),
            (".mlbook/runs.sqlite", "the run store: params, metrics, files, commits"),
            (f"Deployment/exports/{bundle.name}/", "the verified, signed export bundle"),
            (".mlbook/keys/", "the project's signing key pair (git-ignored)"),
            ("digits_stats.png", "dataset statistics, plotted"),
        ]:
            print(f"  {place:<34} {what}")
        print(f"\nThe whole demo ran in {seconds:.0f} s.")
        if args.keep:
            print(f"Project kept at {demo}")
        else:
            print("The demo project was removed (`bash scripts/demo.sh --keep` keeps it).")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
