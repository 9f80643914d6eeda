#!/usr/bin/env bash
# Create the peer tools' own environment for the side-by-side benchmarks.
# MLflow is never a dependency of mlbook: it lives only in benchmarks/.venv-mlflow.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$HERE/.venv-mlflow/bin/mlflow" ]; then
  python3 -m venv "$HERE/.venv-mlflow"
  "$HERE/.venv-mlflow/bin/pip" install -q --disable-pip-version-check "mlflow>=3,<4" 2>&1 | grep -v '^WARNING' || true
fi
"$HERE/.venv-mlflow/bin/python" -c "import mlflow; print('mlflow', mlflow.__version__)"
