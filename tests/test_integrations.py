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


# ------------------------------------------------------------------ plugin generator arguments
def _plugin(tmp_path, *extra, name="blt_bl_tiny.fashion_mnist", folder="plug"):
    from blt_models.cli import main

    return main(["brainscore-plugin", name, str(tmp_path / folder), "--region", "IT=layer3",
                 *extra])  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--identifier", "../evil"], "identifier"),
        (["--identifier", "a/b"], "identifier"),
        (["--identifier", "x']=1;import os#"], "identifier"),
        (["--identifier", ""], "identifier"),
        (["--step-ms", "0"], "step_ms"),
        (["--step-ms", "nan"], "step_ms"),
        (["--step-ms", "-5"], "step_ms"),
        (["--visual-degrees", "inf"], "visual_degrees"),
        (["--visual-degrees", "0"], "visual_degrees"),
        (["--onset-ms", "-1"], "onset_ms"),
        (["--onset-ms", "nan"], "onset_ms"),
        (["--region", "V3=layer2"], "V1, V2, V4, IT"),
        (["--region", "IT=layer2"], "given twice"),
    ],
)
def test_brainscore_plugin_arguments_are_validated(tmp_path, capsys, extra, message):
    assert _plugin(tmp_path, *extra) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "plug").exists()  # nothing written


def _run_generated(folder, monkeypatch):
    """Import the generated package with stand-ins for Brain-Score (not installed here) and
    run what Brain-Score calls: the registry entry, get_model, get_layers, get_bibtex."""
    import importlib
    import sys
    import types

    registry: dict = {}
    built: dict = {}
    brainscore = types.ModuleType("brainscore_vision")
    brainscore.model_registry = registry
    adapter = types.ModuleType("blt_models.integrations.brainscore")

    def to_brain_model(model, identifier, region_layer_map, **settings):
        built.update(model=model, identifier=identifier, regions=region_layer_map, **settings)
        return built

    adapter.to_brain_model = to_brain_model
    monkeypatch.setitem(sys.modules, "brainscore_vision", brainscore)
    monkeypatch.setitem(sys.modules, "blt_models.integrations.brainscore", adapter)
    monkeypatch.syspath_prepend(str(folder.parent))

    def forget() -> None:  # a package of the same name imported by an earlier case
        for name in [m for m in sys.modules if m.split(".")[0] == folder.name]:
            monkeypatch.delitem(sys.modules, name)

    forget()
    package = importlib.import_module(folder.name)
    plugin = importlib.import_module(f"{folder.name}.model")
    (identifier,) = registry
    assert registry[identifier]() is built and built["identifier"] == identifier
    assert plugin.get_layers(identifier) and plugin.get_bibtex(identifier).startswith("@misc{")
    forget()
    del package
    return identifier, built


@pytest.mark.parametrize(
    "extra, identifier, settings",
    [
        ([], "blt_bl_tiny-fashion_mnist", dict(step_ms=10.0, onset_ms=0.0, timesteps=25)),
        (["--identifier", "My.model-v2_x", "--step-ms", "2.5", "--onset-ms", "0",
          "--visual-degrees", "0.5"], "My.model-v2_x",
         dict(step_ms=2.5, onset_ms=0.0, visual_degrees=0.5, timesteps=100)),
        (["--onset-ms", "70", "--step-ms", "20", "--timesteps", "9"], "blt_bl_tiny-fashion_mnist",
         dict(onset_ms=70.0, step_ms=20.0, timesteps=9)),
        (["--onset-ms", "1e3"], "blt_bl_tiny-fashion_mnist", dict(onset_ms=1000.0, timesteps=8)),
    ],
)  # fmt: skip
def test_generated_plugin_imports_and_runs_for_accepted_values(
    tmp_path, monkeypatch, extra, identifier, settings
):
    folder = tmp_path / "plug"
    assert _plugin(tmp_path, *extra) == 0
    text = (folder / "__init__.py").read_text()
    assert f"model_registry['{identifier}']" in text  # the literal text Brain-Score looks for
    got, built = _run_generated(folder, monkeypatch)
    assert got == identifier and built["regions"] == {"IT": "layer3"}
    for key, value in settings.items():
        assert built[key] == value, key


def test_generated_plugin_for_a_local_dir_model(tmp_path, monkeypatch):
    import blt_models as bm

    model = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True)
    saved = bm.save_pretrained(model, tmp_path / "saved")
    folder = tmp_path / "local_plug"
    assert _plugin(tmp_path, name=f"local-dir:{saved}", folder="local_plug") == 0
    identifier, built = _run_generated(folder, monkeypatch)
    assert identifier == "saved"  # from the folder name, a plain name
    assert isinstance(built["model"], bm.ClockedModel)
    assert f"ZOO_NAME = 'local-dir:{saved.resolve()}'" in (folder / "model.py").read_text()
