#!/usr/bin/env bash
# Sets everything up (.venv, package, data) and runs the main job: the demo on the shipped samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/blt-models demo "$@"
