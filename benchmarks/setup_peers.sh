#!/usr/bin/env bash
# Create the peer tools' own environments for the side-by-side benchmarks.
# MLflow and Guild AI are never dependencies of mlbook: they live only in
# benchmarks/.venv-mlflow and benchmarks/.venv-guild.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$HERE/.venv-mlflow/bin/mlflow" ]; then
  python3 -m venv "$HERE/.venv-mlflow"
  "$HERE/.venv-mlflow/bin/pip" install -q --disable-pip-version-check "mlflow>=3,<4" 2>&1 | grep -v '^WARNING' || true
fi
"$HERE/.venv-mlflow/bin/python" -c "import mlflow; print('mlflow', mlflow.__version__)"
if [ ! -x "$HERE/.venv-guild/bin/guild" ]; then
  python3 -m venv "$HERE/.venv-guild"
  # guild 0.9 imports pkg_resources (setuptools<70), which torch 2.13's metadata refuses in
  # one resolve: install torch first, then guild with the old setuptools beside it
  "$HERE/.venv-guild/bin/pip" install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING" || true
  "$HERE/.venv-guild/bin/pip" install -q --disable-pip-version-check "guildai==0.9.0" "setuptools<70" 2>&1 | grep -v "^WARNING" || true
fi
"$HERE/.venv-guild/bin/guild" --version
if [ ! -x "$HERE/.venv-datumaro/bin/python" ]; then
  python3 -m venv "$HERE/.venv-datumaro"
  "$HERE/.venv-datumaro/bin/pip" install -q --disable-pip-version-check datumaro 2>&1 | grep -v "^WARNING" || true
fi
"$HERE/.venv-datumaro/bin/python" -c "import datumaro; print('datumaro', datumaro.__version__)"
