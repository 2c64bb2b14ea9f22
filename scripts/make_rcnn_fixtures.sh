#!/usr/bin/env bash
# Rebuild the rcnn-sat parity fixtures (tests/fixtures/rcnn/) with the real Keras code.
#
# Builds a scratch venv .venvs/tf (gitignored) with current tensorflow-cpu + tf-keras + h5py +
# numpy from PyPI, then runs tests/fixtures/rcnn/make_fixtures.py in it with
# TF_USE_LEGACY_KERAS=1 (Keras 2 semantics, as the reference code was written for).
# Nothing of TensorFlow enters the package or the main environment.
#
# Usage: scripts/make_rcnn_fixtures.sh [--install-only]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venvs/tf
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import tensorflow, tf_keras, h5py" 2>/dev/null; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet tensorflow-cpu tf-keras h5py numpy
fi
"$VENV/bin/python" -c "import tensorflow as tf, tf_keras; print('tensorflow', tf.__version__, 'tf_keras', tf_keras.__version__)"
if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi
export TF_USE_LEGACY_KERAS=1 CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2
"$VENV/bin/python" tests/fixtures/rcnn/make_fixtures.py tests/fixtures/rcnn
