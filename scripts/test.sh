#!/usr/bin/env bash
# The test command: set up .venv, then lint, type-check and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k boundaries -x`.
set -euo pipefail
MLBOOK_EXTRAS="dev,torch,onnx,serve,mlflow"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
echo "==> ruff"
ruff check src tests benchmarks
ruff format --check src tests benchmarks
echo "==> mypy"
mypy
echo "==> pytest"
pytest -q -p no:cacheprovider "$@"
