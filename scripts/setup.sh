#!/usr/bin/env bash
# Creates .venv with blt-models (editable) and its dependencies in one resolver run, plus the
# system data the examples use. torch/torchvision are pinned to the builds served from this
# machine's disk; installing them together with everything else keeps pip from swapping torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=.venv-setup.log
# Fashion-MNIST (training recipe, the packaged blt_bl_tiny.fashion_mnist model and its tests) comes
# from Debian's dataset-fashion-mnist package: /usr/share/datasets/fashion-mnist/*.gz
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] || [ ! -f "$FMNIST/t10k-labels-idx1-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's dataset-fashion-mnist (log: $LOG)"
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; } >>"$LOG" 2>&1 \
      || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
  else
    echo "note: no apt-get; Fashion-MNIST files missing under $FMNIST (tests that need them are skipped)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (the first run installs PyTorch and friends; a few minutes)"
  "$PY" -m venv .venv
fi
STAMP=.venv/.blt-models-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/setup.sh -nt "$STAMP" ]; then
  echo "setup: installing blt-models and its dependencies into .venv (log: $LOG)"
  if ! { .venv/bin/python -m pip install --no-cache-dir --upgrade pip &&
         .venv/bin/python -m pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" \
           -e ".[dev,extract,analysis,train,docs]"; } >>"$LOG" 2>&1; then
    tail -n 30 "$LOG"
    echo "setup: pip install failed; full log in $LOG" >&2
    exit 1
  fi
  touch "$STAMP"
fi
