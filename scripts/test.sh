#!/usr/bin/env bash
# The test command: set up .venv, then lint, type-check and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k boundaries -x`.
set -euo pipefail
MLBOOK_EXTRAS="dev,torch,onnx,serve,ui,lightning,mlflow,dvc,ray"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
# The browser tests (tests/test_ui_browser.py) drive Debian's Chromium through Playwright;
# Playwright cannot download its own browsers here, so install the system one when we can.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium (apt) for the browser tests"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null \
    || echo "warning: could not install chromium; the browser tests will be skipped" >&2
fi
echo "==> ruff"
ruff check src tests benchmarks
ruff format --check src tests benchmarks
echo "==> mypy"
mypy
echo "==> pytest"
pytest -q -p no:cacheprovider "$@"
