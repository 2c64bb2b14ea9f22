"""Brain-Score and thingsvision adapters, tested against the real packages in their own venvs.

Their pins (numpy<2, old scikit-learn, thingsvision's torchvision pin) do not fit the main
environment, so each runs in ``.venvs/NAME`` built by ``bash scripts/setup_integrations.sh``;
these slow tests run the checks there with that venv's python, offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _venv_python(name: str) -> Path:
    python = ROOT / ".venvs" / name / "bin" / "python"
    if not python.exists():
        pytest.skip(
            f".venvs/{name} is missing: build it with `bash scripts/setup_integrations.sh {name}` "
            "(the slow CI target does)"
        )
    return python


def _run_check(venv: str, check: str, *extra: str) -> None:
    env = dict(os.environ, RESULTCACHING_DISABLE="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [str(_venv_python(venv)), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "integrations" / check), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"{check} failed in .venvs/{venv}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")


@pytest.mark.slow
def test_brainscore_against_brainscore_vision():
    _run_check("brainscore", "check_brainscore.py")


@pytest.mark.slow
def test_thingsvision_against_thingsvision():
    _run_check("thingsvision", "check_thingsvision.py")


def test_integration_modules_are_optional():
    """The package imports without either tool; the adapters say what to install."""
    code = (
        "import blt_models, blt_models.integrations, sys; "
        "assert 'brainscore_vision' not in sys.modules and 'thingsvision' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
