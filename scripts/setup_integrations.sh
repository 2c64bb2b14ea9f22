#!/usr/bin/env bash
# Builds the environments the integration tests run in, one per tool, because their pins do not
# fit the main .venv (Brain-Score pins numpy<2 and old scikit-learn; thingsvision pins its own
# stack):
#   .venvs/brainscore    blt-models (editable) with the extra `brainscore` (brainscore-vision 2.4.x)
#   .venvs/thingsvision  blt-models (editable) with the extra `thingsvision`, + thingsvision 2.7.x
# These are the commands docs/integrations.md gives (tests/test_docs.py checks that they match).
# Each is installed in ONE resolver run together with the torch/torchvision pins, so pip cannot
# swap torch for another build. Usage: bash scripts/setup_integrations.sh [brainscore|thingsvision]
# (no argument: both). Re-running is cheap: a stamp skips an environment whose inputs are unchanged.
# The torch stack (~5.3 GB: torch, triton, nvidia-*) is hard-linked from the main .venv
# (scripts/share_torch.py), not installed again: three copies overflowed a CI disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
mkdir -p .venvs
bash scripts/setup.sh  # the main .venv, whose torch the integration environments share

build() {  # build NAME NODEPS_SPEC  (the extra NAME of pyproject.toml; NODEPS_SPEC: "" or one package)
  local name=$1 nodeps=$2
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
         "$venv/bin/python" -m pip install --no-cache-dir "${TORCH_PINS[@]}" pytest -e ".[$name]" &&
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

want=${1:-all}
if [ "$want" = all ] || [ "$want" = brainscore ]; then
  build brainscore ""
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
fi
