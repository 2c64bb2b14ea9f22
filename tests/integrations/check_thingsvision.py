"""Run inside .venvs/thingsvision (real thingsvision 2.7), on the shipped samples.

Invoked by tests/test_integrations.py; by hand:
``.venvs/thingsvision/bin/python -m pytest -q tests/integrations/check_thingsvision.py``
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import thingsvision  # noqa: E402
from thingsvision.utils.data import DataLoader, ImageDataset  # noqa: E402

import blt_models as bm  # noqa: E402
from blt_models.integrations.thingsvision import get_extractor  # noqa: E402

SAMPLES = Path(bm.__file__).parent / "samples" / "fashion_mnist"


@pytest.fixture(scope="module")
def tiny():
    return bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True).eval()


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    root = tmp_path_factory.mktemp("stimuli")
    names = sorted(p.name for p in SAMPLES.glob("*.png"))[:7]
    for n in names:
        (root / n).symlink_to(SAMPLES / n)
    return root, names


def _expected(model, root, names, layers, timesteps=None):
    from PIL import Image

    tf = bm.create_transform(model)
    x = torch.stack([tf(Image.open(root / n).convert("RGB")) for n in names])
    with torch.no_grad():
        return model.forward_timesteps(x, timesteps=timesteps, layers=layers)


def _batches(extractor, root, out, batch_size=3):
    dataset = ImageDataset(
        root=str(root), out_path=str(out), backend="pt", transforms=extractor.get_transformations()
    )
    return DataLoader(dataset=dataset, batch_size=batch_size, backend="pt")


def test_thingsvision_is_the_real_package():
    assert thingsvision.__version__.startswith("2.7")
    assert thingsvision.get_extractor_from_model.__module__.startswith("thingsvision")


def test_layer_at_a_step_and_across_steps_equal_forward_timesteps(tiny, stimuli, tmp_path):
    root, names = stimuli
    extractor = get_extractor(tiny)
    assert {"layer3@t7", "layer3", "layer0@t0"} <= set(extractor.get_module_names())
    feats = extractor.extract_features(
        batches=_batches(extractor, root, tmp_path),
        module_names=["layer3@t7", "layer3", "layer1@t2", "output_2@t-1"],
        flatten_acts=False,
    )
    out = _expected(tiny, root, names, ["layer1", "layer2", "layer3"])
    np.testing.assert_allclose(
        feats["layer3@t7"], out.features["layer3"][7].numpy(), rtol=1e-4, atol=1e-5
    )
    across = out.features["layer3"].transpose(0, 1).numpy()  # [N, T, C, H, W]
    assert feats["layer3"].shape == across.shape == (7, 8, 64, 4, 4)
    np.testing.assert_allclose(feats["layer3"], across, rtol=1e-4, atol=1e-5)
    assert np.abs(feats["layer3"][:, :3]).max() == 0  # absent before its first step (3)
    np.testing.assert_allclose(
        feats["layer1@t2"], out.features["layer1"][2].numpy(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        feats["output_2@t-1"], out.features["layer2"][7].numpy(), rtol=1e-4, atol=1e-5
    )
    # Different steps of one layer differ: thingsvision did not keep "the last call" of a module.
    assert not np.allclose(feats["layer3@t7"], feats["layer3"][:, 3])


def test_flattened_and_single_module(tiny, stimuli, tmp_path):
    root, names = stimuli
    extractor = get_extractor(tiny, timesteps=10)
    flat = extractor.extract_features(
        batches=_batches(extractor, root, tmp_path), module_name="layer2@t9", flatten_acts=True
    )
    out = _expected(tiny, root, names, ["layer2"], timesteps=10)
    np.testing.assert_allclose(
        flat, out.features["layer2"][9].reshape(len(names), -1).numpy(), rtol=1e-4, atol=1e-5
    )


def test_bad_addresses_fail_clearly(tiny, stimuli, tmp_path):
    root, _ = stimuli
    extractor = get_extractor(tiny)
    with pytest.raises(bm.StepOutOfRangeError, match="outside the clock 0..7.*timesteps=9"):
        extractor.extract_features(
            batches=_batches(extractor, root, tmp_path), module_name="layer3@t8"
        )
    with pytest.raises(KeyError, match="Did you mean"):
        extractor.extract_features(
            batches=_batches(extractor, root, tmp_path), module_names=["layr3@t2"]
        )


# ------------------------------------------------------------------ thingsvision's own tests
ROOT = Path(__file__).resolve().parents[2]
# thingsvision's offline tests of custom models (get_extractor_from_model and a custom model
# swapped into an extractor); its other tests download pretrained models.
CUSTOM_MODEL_TESTS = ("tests/extractor/extraction/test_model_extractor.py",
                      "tests/extractor/extraction/test_custom_model.py")  # fmt: skip


def test_thingsvision_own_custom_model_tests_pass(tmp_path):
    import shutil
    import subprocess
    import sys

    source = ROOT / ".venvs" / "thingsvision-tests" / f"thingsvision-{thingsvision.__version__}"
    if not (source / "tests").is_dir():
        pytest.skip(f"{source}/tests is missing: `bash scripts/setup_integrations.sh thingsvision`")
    shutil.copytree(source / "tests", tmp_path / "tests")
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", *CUSTOM_MODEL_TESTS],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "5 passed" in proc.stdout, proc.stdout[-3000:]


def test_raw_hook_on_a_shared_recurrent_module_warns(tiny, stimuli, tmp_path):
    """thingsvision's own path on the bare model: a module the clock calls at every step keeps
    the last call (one step of one edge of a sum). That is flagged, and the message names the
    adapter; the adapter's address gives the layer itself."""
    from thingsvision import get_extractor_from_model

    root, names = stimuli
    raw = get_extractor_from_model(model=tiny, device="cpu", backend="pt",
                                   preprocess=bm.create_transform(tiny))  # fmt: skip
    with pytest.warns(bm.PartialHookWarning, match=r"conv_1_1.*get_extractor\(model\)"):
        raw.extract_features(batches=_batches(raw, root, tmp_path), module_name="conv_1_1",
                             flatten_acts=False)  # fmt: skip
    extractor = get_extractor(tiny)
    feats = extractor.extract_features(batches=_batches(extractor, root, tmp_path),
                                       module_name="layer1@t-1", flatten_acts=False)  # fmt: skip
    out = _expected(tiny, root, names, ["layer1"])
    np.testing.assert_allclose(feats, out.features["layer1"][-1].numpy(), rtol=1e-4, atol=1e-5)
