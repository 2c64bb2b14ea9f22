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
        pytest.fail(
            f"{check} failed in .venvs/{venv}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        )


@pytest.mark.slow
def test_brainscore_against_brainscore_vision():
    _run_check("brainscore", "check_brainscore.py")


@pytest.mark.slow
def test_thingsvision_against_thingsvision():
    _run_check("thingsvision", "check_thingsvision.py")


@pytest.mark.slow
@pytest.mark.parametrize("venv", ["brainscore", "thingsvision"])
def test_integration_envs_share_the_main_torch(venv):
    """The 5 GB torch stack is hard-linked from .venv, not a second copy (a CI disk overflowed),
    and the environment's pip still counts it as installed at the pinned version."""
    python = _venv_python(venv)
    rel = "lib/python*/site-packages/torch/lib/libtorch_cpu.so"
    main, env = next((ROOT / ".venv").glob(rel)), next((ROOT / ".venvs" / venv).glob(rel))
    assert env.stat().st_ino == main.stat().st_ino, f"{env} is a copy, not a link of {main}"
    code = "from importlib.metadata import version; print(version('torch'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2.14.1"


def test_integration_modules_are_optional():
    """The package imports without either tool; the adapters say what to install."""
    code = (
        "import blt_models, blt_models.integrations, sys; "
        "assert 'brainscore_vision' not in sys.modules and 'thingsvision' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )


# ------------------------------------------------------------------ Brain-Score plugin generator
def test_brainscore_plugin_layout_for_cornet(tmp_path):
    import json
    import py_compile

    from blt_models.cli import main

    out = tmp_path / "cornet_s_imagenet"
    assert main(["brainscore-plugin", "cornet_s.imagenet", str(out), "--step-ms", "20"]) == 0
    assert {p.name for p in out.iterdir()} == {
        "__init__.py",
        "model.py",
        "region_layer_map",
        "requirements.txt",
        "test.py",
    }
    mapping = json.loads((out / "region_layer_map" / "cornet_s-imagenet.json").read_text())
    assert mapping == {"V1": "V1", "V2": "V2", "V4": "V4", "IT": "IT"}
    for f in ("__init__.py", "model.py", "test.py"):
        py_compile.compile(str(out / f), doraise=True)
    text = (out / "model.py").read_text()
    assert "MODEL_ID = 'cornet_s-imagenet'" in text and "'step_ms': 20.0" in text
    assert "def get_model(" in text and "def get_layers(" in text and "def get_bibtex(" in text
    assert "Kubilius" in text  # the citation of the weights


def test_brainscore_plugin_refuses_what_would_be_wrong(tmp_path, capsys):
    from blt_models.cli import main

    # BLT layers are not brain areas: the map must be given.
    assert main(["brainscore-plugin", "blt_bl_tiny.fashion_mnist", str(tmp_path / "a")]) == 1
    assert "--region V1=layer1" in capsys.readouterr().err
    # No published weights, unknown layer, bad folder name, non-empty folder.
    assert main(["brainscore-plugin", "blt_bl.vggface2", str(tmp_path / "b")]) == 1
    assert "published weights" in capsys.readouterr().err
    assert main(["brainscore-plugin", "blt_bl_tiny.fashion_mnist", str(tmp_path / "c"),
                 "--region", "IT=layr3"]) == 1  # fmt: skip
    assert "Did you mean" in capsys.readouterr().err
    assert main(["brainscore-plugin", "cornet_z.imagenet", str(tmp_path / "my-model")]) == 1
    assert "my_model" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    assert main(["brainscore-plugin", "cornet_z.imagenet", str(tmp_path / "d")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
