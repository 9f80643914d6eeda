#!/usr/bin/env bash
# The main job: set up .venv (mlbook with its torch extra), then run the end-to-end
# demo in a temporary directory. Pass --keep to keep the demo project afterwards.
set -euo pipefail
MLBOOK_EXTRAS="torch,onnx,serve,coco,plot,ui"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec python "$ROOT/scripts/demo.py" "$@"
