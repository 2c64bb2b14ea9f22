#!/usr/bin/env bash
# Builds the environments the integration tests run in, one per tool, because their pins do not
# fit the main .venv (Brain-Score pins numpy<2 and old scikit-learn; thingsvision pins its own
# stack):
#   .venvs/brainscore    blt-models (editable) with the extra `brainscore` (brainscore-vision 2.4.x)
#   .venvs/thingsvision  blt-models (editable) with the extra `thingsvision`, + thingsvision 2.7.x
# These are the commands docs/integrations.md gives (tests/test_docs.py checks that they match).
# Each is installed in ONE resolver run together with the torch/torchvision pins, so pip cannot
# swap torch for another build.
# Usage: bash scripts/setup_integrations.sh [brainscore|thingsvision|timm] (no argument: all
# three; `timm` fetches timm's own tests/test_models.py from the sdist of the timm in .venv into
# .venvs/timm-tests, for tests/test_timm_suite.py). Re-running is cheap: a stamp skips an
# environment whose inputs are unchanged.
# The torch stack (~5.3 GB: torch, triton, nvidia-*) is hard-linked from the main .venv
# (scripts/share_torch.py), not installed again: three copies overflowed a CI disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
mkdir -p .venvs
bash scripts/setup.sh  # the main .venv, whose torch the integration environments share

build() {  # build NAME NODEPS_SPEC [TEST_PACKAGE...]  (the extra NAME of pyproject.toml; NODEPS_SPEC:
  # "" or one package; TEST_PACKAGEs: what the peer's own tests need, in the same resolver run)
  local name=$1 nodeps=$2
  shift 2
  local venv=.venvs/$name log=.venvs/$name-setup.log stamp=.venvs/$name/.blt-models-installed
  if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && [ ! scripts/setup_integrations.sh -nt "$stamp" ]; then
    echo "setup_integrations: $venv is up to date"
    return 0
  fi
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  echo "setup_integrations: installing -e .[$name] into $venv (log: $log)"
  local start=$SECONDS
  # Exit 3: no hard links possible here; pip then installs its own copy of torch.
  local rc=0
  .venv/bin/python scripts/share_torch.py "$venv" >>"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
    tail -n 20 "$log"
    echo "setup_integrations: sharing torch into $venv failed; full log in $log" >&2
    return 1
  fi
  if ! { "$venv/bin/python" -m pip install --no-cache-dir --upgrade pip setuptools wheel &&
         "$venv/bin/python" -m pip install --no-cache-dir "${TORCH_PINS[@]}" pytest "$@" -e ".[$name]" &&
         { [ -z "$nodeps" ] || "$venv/bin/python" -m pip install --no-cache-dir --no-deps "$nodeps"; }; } >>"$log" 2>&1; then
    tail -n 40 "$log"
    echo "setup_integrations: pip install into $venv failed; full log in $log" >&2
    return 1
  fi
  # The import is the check that the resolver's choice works, not just that it resolved.
  "$venv/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" >>"$log" 2>&1
  touch "$stamp"
  # du counts a hard-linked file once, under the first path given: the second line is what
  # this environment adds on disk.
  echo "setup_integrations: $venv built in $((SECONDS - start)) s; disk: $(du -sh .venv "$venv" | tail -n 1 | cut -f1) of its own"
}

fetch_timm_tests() {  # timm's own tests/test_models.py, of the timm version in .venv
  local ver dest log=.venvs/timm-tests-setup.log
  ver=$(.venv/bin/python -c "import timm; print(timm.__version__)")
  dest=.venvs/timm-tests/timm-$ver
  if [ -f "$dest/tests/test_models.py" ]; then
    echo "setup_integrations: $dest/tests/test_models.py is there"
    return 0
  fi
  mkdir -p .venvs/timm-tests
  # The sdist carries the tests (the wheel does not); only test_models.py is extracted.
  if ! { .venv/bin/python -m pip download --no-cache-dir --no-deps --no-binary :all: "timm==$ver" \
           -d .venvs/timm-tests &&
         tar -xzf ".venvs/timm-tests/timm-$ver.tar.gz" -C .venvs/timm-tests "timm-$ver/tests/test_models.py"; } >>"$log" 2>&1; then
    tail -n 20 "$log"
    echo "setup_integrations: fetching timm $ver's tests failed; full log in $log" >&2
    return 1
  fi
  echo "setup_integrations: timm $ver's tests/test_models.py in $dest"
}

want=${1:-all}
if [ "$want" = all ] || [ "$want" = brainscore ]; then
  # pytest-check: what Brain-Score's generic plugin tests import (its own test extra).
  build brainscore "" pytest-check
  .venvs/brainscore/bin/python -c "import brainscore_vision.model_helpers.brain_transformation" \
    >>.venvs/brainscore-setup.log 2>&1 || { tail -n 30 .venvs/brainscore-setup.log; exit 1; }
fi
if [ "$want" = all ] || [ "$want" = thingsvision ]; then
  # thingsvision 2.7.x pins torchvision==0.15.2 (a build for torch 2.0) and nothing else that
  # clashes: its other requirements (the `thingsvision` extra of pyproject.toml, from its
  # METADATA) resolve with the torch pins in one run, and thingsvision itself is then added with
  # --no-deps. Its test runs against torchvision 0.29.1, which is what makes this sound
  # (tests/integrations/thingsvision_check.py).
  build thingsvision "thingsvision>=2.7,<2.8"
  .venvs/thingsvision/bin/python -c "import thingsvision" \
    >>.venvs/thingsvision-setup.log 2>&1 || { tail -n 30 .venvs/thingsvision-setup.log; exit 1; }
  # thingsvision's own tests (from its sdist; the wheel has none), for its offline custom-model
  # tests in tests/integrations/check_thingsvision.py.
  tv_ver=$(.venvs/thingsvision/bin/python -c "from importlib.metadata import version; print(version('thingsvision'))")
  if [ ! -d ".venvs/thingsvision-tests/thingsvision-$tv_ver/tests" ]; then
    mkdir -p .venvs/thingsvision-tests
    { .venvs/thingsvision/bin/python -m pip download --no-cache-dir --no-deps --no-binary :all: \
        "thingsvision==$tv_ver" -d .venvs/thingsvision-tests &&
      tar -xzf ".venvs/thingsvision-tests/thingsvision-$tv_ver.tar.gz" -C .venvs/thingsvision-tests \
        "thingsvision-$tv_ver/tests"; } >>.venvs/thingsvision-setup.log 2>&1 \
      || { tail -n 30 .venvs/thingsvision-setup.log; exit 1; }
  fi
fi
if [ "$want" = all ] || [ "$want" = timm ]; then
  fetch_timm_tests
fi
