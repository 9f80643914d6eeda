# Sourced by scripts/test.sh and scripts/demo.sh: make .venv and install mlbook into it.
# Re-installs only when pyproject.toml changed (a stamp file holds its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLBOOK_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.mlbook-install-stamp"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)-${MLBOOK_EXTRAS}"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "==> installing mlbook[${MLBOOK_EXTRAS}] (torch pinned to 2.13.0, CPU build)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING' || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[${MLBOOK_EXTRAS}]" 2>&1 | grep -v '^WARNING' || true
  "$VENV/bin/python" -c "import mlbook" || { echo "error: installing mlbook failed" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
