#!/usr/bin/env bash
# Builds the documentation site strictly (any warning fails): mkdocs-material + mkdocstrings,
# with the model zoo tables generated from the registry (docs/gen_zoo.py, an mkdocs hook).
#   bash scripts/docs.sh                 # build into site/
#   bash scripts/docs.sh serve           # live preview on http://127.0.0.1:8000
# VENV=/path/to/venv uses an existing environment (with the [docs] extra) instead of .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VENV:-}" ]; then
  bash scripts/setup.sh
  VENV=.venv
fi
export NO_MKDOCS_2_WARNING=1
if [ "${1:-}" = "serve" ]; then
  shift
  exec "$VENV/bin/python" -m mkdocs serve "$@"
fi
exec "$VENV/bin/python" -m mkdocs build --strict "$@"
