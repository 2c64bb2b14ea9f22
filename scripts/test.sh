#!/usr/bin/env bash
# Runs the default test suite (slow tests excluded; `bash scripts/test.sh -m slow` runs those).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
