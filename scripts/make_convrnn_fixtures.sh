#!/usr/bin/env bash
# Rebuild the ConvRNN parity fixtures (tests/fixtures/convrnn/) with the real reference code.
#
# Builds a scratch venv .venvs/tf-convrnn (gitignored) with current tensorflow-cpu + tf-keras +
# tf-slim + networkx + numpy from PyPI, then runs tests/fixtures/convrnn/make_fixtures.py in it
# (tensorflow.compat.v1 graph mode; TF_USE_LEGACY_KERAS=1 for tf.compat.v1.nn.rnn_cell).
# The reference code (github.com/neuroailab/convrnns, MIT) is not part of this project: point
# CONVRNNS_REFERENCE (or the first argument) at a checkout of it. Nothing of TensorFlow enters the
# package or the main environment. tests/fixtures/convrnn/README.md says what the fixtures hold.
#
# Usage: scripts/make_convrnn_fixtures.sh [REFERENCE_DIR] [--models a,b,...]
#        scripts/make_convrnn_fixtures.sh --install-only
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venvs/tf-convrnn
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import tensorflow, tf_keras, tf_slim, networkx" 2>/dev/null; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet tensorflow-cpu tf-keras tf-slim networkx numpy
fi
"$VENV/bin/python" -c "import tensorflow as tf, tf_slim, networkx; print('tensorflow', tf.__version__, 'networkx', networkx.__version__)"
if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi
REFERENCE=${CONVRNNS_REFERENCE:-}
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
    REFERENCE=$1
    shift
fi
if [ -z "$REFERENCE" ]; then
    echo "give the path of a neuroailab/convrnns checkout (argument or CONVRNNS_REFERENCE)" >&2
    exit 2
fi
export TF_USE_LEGACY_KERAS=1 CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2
"$VENV/bin/python" tests/fixtures/convrnn/make_fixtures.py tests/fixtures/convrnn --reference "$REFERENCE" "$@"
