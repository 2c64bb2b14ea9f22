"""Run inside .venvs/brainscore (real brainscore-vision 2.4), offline, on the shipped samples.

Invoked by tests/test_integrations.py; by hand:
``RESULTCACHING_DISABLE=1 .venvs/brainscore/bin/python -m pytest -q tests/integrations/check_brainscore.py``
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("RESULTCACHING_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import brainscore_vision  # noqa: E402
from brainscore_core.supported_data_standards.brainio.stimuli import StimulusSet  # noqa: E402
from brainscore_vision.model_interface import BrainModel  # noqa: E402

import blt_models as bm  # noqa: E402
from blt_models.integrations.brainscore import to_brain_model  # noqa: E402

SAMPLES = Path(bm.__file__).parent / "samples" / "fashion_mnist"


def _stimulus_set(n: int = 6) -> StimulusSet:
    paths = sorted(SAMPLES.glob("*.png"))[:n]
    ids = [p.stem for p in paths]
    stimuli = StimulusSet({"stimulus_id": ids, "image_label": list(range(n))})
    stimuli.stimulus_paths = {i: str(p) for i, p in zip(ids, paths, strict=True)}
    stimuli.identifier = "blt-models.fashion_mnist_samples"
    return stimuli


@pytest.fixture(scope="module")
def tiny():
    return bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True).eval()


def _expected(model, stimuli, layer, timesteps=None):
    tf = bm.create_transform(model)
    from PIL import Image

    x = torch.stack([tf(Image.open(stimuli.get_stimulus(i))) for i in stimuli["stimulus_id"]])
    with torch.no_grad():
        out = model.forward_timesteps(x, timesteps=timesteps, layers=[layer])
    return out.features[layer]  # [T, N, C, H, W]


def test_brainscore_is_the_real_package():
    assert brainscore_vision.__file__.endswith("brainscore_vision/__init__.py")
    from brainscore_vision.model_helpers.brain_transformation import TemporalAligned

    assert TemporalAligned.__module__.startswith("brainscore_vision")


def test_time_bins_and_responses_equal_forward_timesteps(tiny):
    stimuli = _stimulus_set()
    brain = to_brain_model(
        tiny,
        "blt_bl_tiny",
        {"V4": "layer2", "IT": "layer3"},
        step_ms=10,
        onset_ms=50,
        visual_degrees=4,
    )
    assert brain.visual_degrees() == 4 and brain.identifier == "blt_bl_tiny"
    # layer3 first active at step 3 -> bins from 80 ms; clock of 8 steps -> until 130 ms.
    bins = [(80, 90), (90, 100), (120, 130)]
    brain.start_recording("IT", time_bins=bins)
    resp = brain.look_at(stimuli)
    assert set(resp.dims) == {"presentation", "neuroid", "time_bin"}
    assert list(resp["time_bin_start"].values) == [80, 90, 120]
    assert list(resp["time_bin_end"].values) == [90, 100, 130]
    assert list(resp["stimulus_id"].values) == list(stimuli["stimulus_id"])
    assert set(resp["region"].values) == {"IT"} and set(resp["layer"].values) == {"layer3"}
    feats = _expected(tiny, stimuli, "layer3")
    resp = resp.transpose("presentation", "neuroid", "time_bin")
    for k, step in enumerate((3, 4, 7)):
        want = feats[step].reshape(len(stimuli), -1).numpy()
        np.testing.assert_allclose(resp.values[:, :, k], want, rtol=1e-5, atol=1e-6)
    # A 20 ms bin averages its two steps (Brain-Score's own alignment).
    brain.start_recording("V4", time_bins=[(80, 100)])
    v4 = brain.look_at(stimuli).transpose("presentation", "neuroid")
    feats = _expected(tiny, stimuli, "layer2")
    want = ((feats[3] + feats[4]) / 2).reshape(len(stimuli), -1).numpy()
    np.testing.assert_allclose(v4.values, want, rtol=1e-5, atol=1e-6)


def test_bins_before_a_layer_is_active_or_beyond_the_clock_are_refused(tiny):
    brain = to_brain_model(tiny, "tiny", {"IT": "layer3"}, step_ms=10, onset_ms=50)
    with pytest.raises(bm.TimestepsError, match=r"reaches it at step 3, i.e. 80 ms"):
        brain.start_recording("IT", time_bins=[(70, 80)])
    with pytest.raises(bm.TimestepsError, match=r"needs 15 steps.*timesteps=15"):
        brain.start_recording("IT", time_bins=[(120, 200)])
    longer = to_brain_model(tiny, "tiny", {"IT": "layer3"}, step_ms=10, onset_ms=50, timesteps=15)
    longer.start_recording("IT", time_bins=[(190, 200)])
    resp = longer.look_at(_stimulus_set(2))
    want = _expected(tiny, _stimulus_set(2), "layer3", timesteps=15)[14].reshape(2, -1).numpy()
    np.testing.assert_allclose(
        resp.transpose("presentation", "neuroid").values, want, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(KeyError, match="regions: IT"):
        brain.start_recording("V1", time_bins=[(80, 90)])
    with pytest.raises(ValueError, match="region_layer_map is required"):
        to_brain_model(tiny, "tiny", {})
    with pytest.raises(KeyError, match="Did you mean"):
        to_brain_model(tiny, "tiny", {"IT": "layr3"})


def test_fixed_clock_area_finishes_early():
    model = bm.create_model("cornet_s", num_classes=10).eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(input_size=(3, 32, 32))
    brain = to_brain_model(model, "cornet_s", {"V2": "V2"}, step_ms=10, onset_ms=0)
    brain.start_recording("V2", time_bins=[(10, 20), (20, 30)])  # V2's inner steps 1, 2
    resp = brain.look_at(_stimulus_set(2)).transpose("presentation", "neuroid", "time_bin")
    feats = _expected(model, _stimulus_set(2), "V2")
    np.testing.assert_allclose(
        resp.values[..., 1], feats[2].reshape(2, -1).numpy(), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(bm.TimestepsError, match="finishes at step 2"):
        brain.start_recording("V2", time_bins=[(30, 40)])


def test_behaviour_from_the_last_readout(tiny):
    stimuli = _stimulus_set(6)
    brain = to_brain_model(tiny, "tiny", {"IT": "layer3"})
    brain.start_task(BrainModel.Task.probabilities, stimuli)
    probs = brain.look_at(stimuli)
    assert probs.shape[0] == len(stimuli)
    np.testing.assert_allclose(probs.values.sum(axis=1), 1.0, rtol=1e-5)
    logits = brain.activations_model(stimuli, layers=["logits"])
    tf = bm.create_transform(tiny)
    from PIL import Image

    x = torch.stack([tf(Image.open(stimuli.get_stimulus(i))) for i in stimuli["stimulus_id"]])
    with torch.no_grad():
        np.testing.assert_allclose(logits.values, tiny(x).numpy(), rtol=1e-5, atol=1e-6)
    brain.start_task(BrainModel.Task.passive)
    brain.start_recording("IT", time_bins=[(30, 40)])
    assert brain.look_at(stimuli).shape[0] == len(stimuli)


def test_logits_of_a_model_without_classifier_are_refused():
    """Its forward_timesteps "logits" are the pooled features: not class scores."""
    headless = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True, num_classes=0)
    brain = to_brain_model(headless.eval(), "headless", {"IT": "layer3"})
    with pytest.raises(bm.InputError, match="no classifier.*'pre_logits'"):
        brain.activations_model(_stimulus_set(2), layers=["logits"])
    assert brain.activations_model(_stimulus_set(2), layers=["pre_logits"]).shape[0] == 2


def test_generated_plugin_registers_and_runs(tmp_path, monkeypatch):
    import importlib
    import sys

    from brainscore_vision import model_registry

    from blt_models.cli import main

    out = tmp_path / "blt_bl_tiny_fashion_mnist"
    assert main(["brainscore-plugin", "blt_bl_tiny.fashion_mnist", str(out), "--region",
                 "IT=layer3", "--onset-ms", "50", "--visual-degrees", "4"]) == 0  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("blt_bl_tiny_fashion_mnist")  # registers the model
    plugin = importlib.import_module("blt_bl_tiny_fashion_mnist.model")
    ident = "blt_bl_tiny-fashion_mnist"
    assert plugin.get_layers(ident) == ["layer0", "layer1", "layer2", "layer3"]
    assert plugin.get_bibtex(ident).startswith("@misc{")
    brain = model_registry[ident]()
    assert brain.identifier == ident and brain.visual_degrees() == 4
    brain.start_recording("IT", time_bins=[(80, 90)])
    resp = brain.look_at(_stimulus_set(3))
    assert resp.sizes["presentation"] == 3 and set(resp["region"].values) == {"IT"}
    sys.modules.pop("blt_bl_tiny_fashion_mnist.model", None)
    sys.modules.pop("blt_bl_tiny_fashion_mnist", None)


# ------------------------------------------------------------------ generated plugin, as Brain-Score
PLUGIN_DIR = "blt_models_generated_check"  # a folder name no real plugin has
TINY_ID = "blt_bl_tiny-fashion_mnist"
TINY_REGIONS = ["--region", "V1=layer0", "--region", "V2=layer1", "--region", "V4=layer2",
                "--region", "IT=layer3"]  # fmt: skip


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """The plugin the CLI writes, inside brainscore_vision/models/ as Brain-Score expects it (for
    the duration of the test), with Brain-Score's dependency installation off (offline)."""
    import shutil
    import sys

    from blt_models.cli import main

    monkeypatch.setenv("BS_INSTALL_DEPENDENCIES", "no")
    out = tmp_path / PLUGIN_DIR
    assert main(["brainscore-plugin", "blt_bl_tiny.fashion_mnist", str(out), *TINY_REGIONS]) == 0
    target = Path(brainscore_vision.__file__).parent / "models" / PLUGIN_DIR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out, target)
    # The three images Brain-Score's generic tests show are in its repository but not in the
    # PyPI wheel or sdist: stand-ins (the shipped samples as RGB) where they are missing.
    resources = Path(brainscore_vision.__file__).parent / "model_helpers" / "generic_plugin_tests_resources"
    made = not resources.exists()
    if made:
        from PIL import Image

        resources.mkdir()
        samples = sorted(SAMPLES.glob("*.png"))[:3]
        for sample, filename in zip(samples, ("rgb1.jpg", "rgb2.jpg", "rgb3.png"), strict=True):
            Image.open(sample).convert("RGB").resize((64, 64)).save(resources / filename)
    try:
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)
        if made:
            shutil.rmtree(resources, ignore_errors=True)
        for name in [m for m in sys.modules if PLUGIN_DIR in m]:
            sys.modules.pop(name)
        brainscore_vision.model_registry.pop(TINY_ID, None)


def test_brainscore_load_model_finds_the_generated_plugin(installed_plugin):
    text = (installed_plugin / "__init__.py").read_text()
    assert f"model_registry['{TINY_ID}']" in text  # the literal text Brain-Score searches for
    brain = brainscore_vision.load_model(TINY_ID)
    assert brain.identifier == TINY_ID
    # The default clock covers the generic tests' bins and the standard temporal benchmarks'.
    kar2019 = [(t, t + 10) for t in range(70, 250, 10)]
    for bins in ([(50, 100)], [(100, 200)], [(70, 170)], kar2019):
        for region in ("V1", "V2", "V4", "IT"):
            brain.start_recording(region, time_bins=bins)
    # Brain-Score's generic tests skip silently what its probe says a model cannot do: it can.
    from brainscore_vision.model_helpers.generic_plugin_tests import ProbeModel, _make_stimulus_set

    probe = ProbeModel()
    assert probe.can_start_recording_region(brain, BrainModel.RecordingTarget.V1)
    assert probe.can_start_task_specific(
        brain, BrainModel.Task.probabilities, fitting_stimuli=_make_stimulus_set()
    )
    brain.start_task(BrainModel.Task.passive)
    brain.start_recording("IT", time_bins=kar2019)
    resp = brain.look_at(_stimulus_set(2))
    assert list(resp["time_bin_start"].values) == list(range(70, 250, 10))


def test_brainscore_generic_plugin_tests_pass(installed_plugin):
    """Brain-Score's own generic plugin tests, run as Brain-Score's CI runs them."""
    import subprocess
    import sys

    tests = Path(brainscore_vision.__file__).parent / "model_helpers" / "generic_plugin_tests.py"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
         f"--plugin_directory={installed_plugin}", "-rA"],
        capture_output=True, text=True, timeout=1200,
        env=dict(os.environ, BS_INSTALL_DEPENDENCIES="no", RESULTCACHING_DISABLE="1"),
    )  # fmt: skip
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "5 passed" in proc.stdout, proc.stdout[-3000:]


def test_too_short_clock_advice_covers_the_latest_bin(tiny):
    brain = to_brain_model(tiny, "tiny", {"IT": "layer3"}, step_ms=10, onset_ms=50)
    bins = [(120, 140), (180, 200), (140, 160)]  # not in order: the advice is for 200 ms
    with pytest.raises(bm.TimestepsError, match=r"\(180, 200\).*timesteps=15") as err:
        brain.start_recording("IT", time_bins=bins)
    assert "timesteps=15" in str(err.value)
    longer = to_brain_model(tiny, "tiny", {"IT": "layer3"}, step_ms=10, onset_ms=50, timesteps=15)
    longer.start_recording("IT", time_bins=bins)  # following the advice works the first time
