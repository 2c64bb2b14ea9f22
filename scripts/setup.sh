#!/usr/bin/env bash
# Creates .venv with blt-models (editable) and its dependencies in one resolver run.
# torch/torchvision are pinned to the builds served from this machine's disk; installing
# them together with everything else keeps pip from swapping torch for another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.blt-models-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet \
    "torch==2.14.1" "torchvision==0.29.1" \
    -e ".[dev,extract,analysis,train]"
  touch "$STAMP"
fi
