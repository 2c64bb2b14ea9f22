#!/usr/bin/env bash
# Builds the documentation site strictly (any warning fails): mkdocs-material + mkdocstrings,
# with the model zoo tables generated from the registry (docs/gen_zoo.py, an mkdocs hook).
#   bash scripts/docs.sh                 # build into site/, then check it in Chromium at 1400 px
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
"$VENV/bin/python" -m mkdocs build --strict "$@"

# The rendered pages in a real browser: Chromium from Debian (installed like setup.sh installs
# its Debian package), then scripts/check_docs_layout.py at 1400 px (a laptop screen): no raw
# Sphinx role in the HTML, no table or code block wider than its box; screenshots of every page
# go to site-screenshots/ to look at. SITE=DIR when "$@" builds elsewhere (-d DIR).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "docs: installing Debian's chromium for the layout check (log: .docs-chromium.log)"
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium; } >>.docs-chromium.log 2>&1 \
      || { echo "docs: could not install chromium (see .docs-chromium.log)" >&2; exit 1; }
  else
    echo "docs: no chromium and no apt-get: install Chromium for the layout check" >&2
    exit 1
  fi
fi
exec "$VENV/bin/python" scripts/check_docs_layout.py "${SITE:-site}" --width 1400 --screenshots site-screenshots
