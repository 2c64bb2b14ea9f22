#!/usr/bin/env bash
# Static checks on blt_models/: ruff lint, ruff format check, mypy (settings in pyproject.toml).
#   bash scripts/check.sh
# VENV=/path/to/venv uses an existing environment (with the [dev] extra) instead of .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VENV:-}" ]; then
  bash scripts/setup.sh
  VENV=.venv
fi
status=0
echo "check: ruff check blt_models"
"$VENV/bin/python" -m ruff check blt_models || status=1
echo "check: ruff format --check blt_models"
"$VENV/bin/python" -m ruff format --check blt_models || status=1
echo "check: mypy blt_models"
"$VENV/bin/python" -m mypy blt_models || status=1
exit $status
