"""Property-based: random config.json values and random checkpoint args either give a model that
agrees with itself or one of the library's named errors (BltModelsError), never anything else."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import blt_models as bm
from blt_models._convert import convert_checkpoint
from blt_models._registry import get_model_entrypoint

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.integers(10**6, 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=6),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
small_ints = st.sampled_from([0, 1, 2, 3, 4, 5, 8, 10, 16, 32, 64])
int_lists = st.lists(small_ints, min_size=0, max_size=5)

PLAUSIBLE = {
    "model_args": {
        "num_layers": small_ints | st.floats(0, 8),
        "channels": int_lists,
        "sizes": int_lists,
        "nominal_size": small_ints,
        "timesteps": small_ints | st.just(10_001),
        "num_classes": small_ints,
        "in_chans": small_ints,
        "pool": st.sampled_from(["max", "avg", "blur", "mean", ""]),
        "unroll": st.sampled_from(["biological", "standard", "other"]),
        "connectivity": st.sampled_from(["bl", "blt", "x"]),
        "colour": st.text(max_size=3),
    },
    "pretrained_cfg": {
        "input_size": int_lists,
        "mean": st.lists(st.floats(-1, 1), max_size=4),
        "std": st.lists(st.floats(-1, 1), max_size=4),
        "num_classes": small_ints,
        "timesteps": small_ints,
        "crop_pct": st.floats(-1, 2),
        "interpolation": st.sampled_from(["bilinear", "bicubic", "cubic"]),
        "class_names": st.lists(st.text(max_size=3), max_size=3),
        "unroll": st.sampled_from(["biological", "standard"]),
        "metrics": json_values,
        "model_args": json_values,
    },
    "weights": {
        "sha256": st.text("0123456789abcdefg", max_size=70),
        "size": small_ints,
        "file": st.sampled_from(["model.safetensors", "w.bin"]),
    },  # fmt: skip
    "top": {
        "format": st.sampled_from(["blt-models", "timm"]),
        "format_version": st.sampled_from([0, 1, 2, "1", 1.0]),
        "architecture": st.sampled_from(["blt_bl_tiny", "blt_bl", "nope", "hf-hub:a/b", ""]),
        "model_args": json_values,
        "pretrained_cfg": json_values,
        "weights": json_values,
    },
}


@st.composite
def mutations(draw):
    out = []
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(PLAUSIBLE)))
        key = draw(st.sampled_from(sorted(PLAUSIBLE[section])))
        value = draw(PLAUSIBLE[section][key] | json_values)
        out.append((section, key, value))
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return bm.save_pretrained(bm.create_model("blt_bl_tiny"), tmp_path_factory.mktemp("f") / "m")


def _self_consistent(model) -> None:
    cfg = model.pretrained_cfg
    conv = model.get_submodule(model.first_conv_name)
    assert conv.weight.shape[1] == model.in_chans == cfg.input_size[0]
    assert model.num_classes == cfg.num_classes
    if model.num_classes:  # 0: timm's "no classifier" (pooled features)
        assert model.get_classifier().out_features == model.num_classes
    assert type(model.timesteps) is int and 1 <= model.timesteps <= 10_000
    assert len(cfg.mean) in (1, model.in_chans) and len(cfg.std) in (1, model.in_chans)
    with torch.device("meta"):  # the recorded arguments rebuild exactly this architecture
        rebuilt = get_model_entrypoint(cfg.architecture)(**model.model_args)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    side = max(cfg.input_size[1:])
    if side <= 64 and model.timesteps <= 16:
        try:
            logits = model.eval()(torch.zeros(1, model.in_chans, *cfg.input_size[1:]))
        except bm.BltModelsError:  # e.g. an input size the architecture cannot take
            return
        assert logits.shape[0] == 1
        if model.num_classes:
            assert logits.shape == (1, model.num_classes)


@SETTINGS
@given(edits=mutations(), pretrained=st.booleans(), verify=st.booleans())
def test_random_config_json(published, edits, pretrained, verify):
    config = json.loads((published / "config.json").read_text())
    for section, key, value in edits:
        target = config if section == "top" else config.setdefault(section, {})
        if isinstance(target, dict):
            target[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "m"
        shutil.copytree(published, folder)
        (folder / "config.json").write_text(json.dumps(config))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = bm.create_model(f"local-dir:{folder}", pretrained=pretrained, verify=verify)
            except bm.BltModelsError as err:
                event(type(err).__name__)
                return
    event("built")
    _self_consistent(model)


ARG_VALUES = {
    "model": st.sampled_from(
        [
            "blt_bl_tiny",
            "blt_bl",
            "cornet_z",
            "blt_b",
            "hf-hub:a/b",
            "local-dir:/",
            "blt_bl.imagenet",
            "",
            "nope",
        ]
    ),  # fmt: skip
    "num_layers": small_ints | st.just(4),
    "recurrent_steps": small_ints | st.just([10]),
    "num_classes": small_ints | st.just(10),
    "pool": st.sampled_from(["max", "avg", "blur", "average", None, "mean"]),
    "dataset": st.sampled_from(["imagenet", "vggface2", "x.y", "hf-hub:a/b"]),
    "img_channels": small_ints,
}


@st.composite
def reference_args(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not a Namespace at all
    # What the reference script records for the tiny model, then some fields changed or dropped.
    values = {"model": "blt_bl_tiny", "num_layers": 4, "recurrent_steps": 8, "num_classes": 10,
              "pool": "max", "dataset": "fashion_mnist"}  # fmt: skip
    for key in draw(st.sets(st.sampled_from(sorted(ARG_VALUES)), max_size=3)):
        values[key] = draw(ARG_VALUES[key] | json_values)
    for key in draw(st.sets(st.sampled_from(sorted(values)), max_size=2)):
        del values[key]
    return argparse.Namespace(**values)


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return bm.create_model("blt_bl_tiny").state_dict()


@settings(SETTINGS, max_examples=30)
@given(args=reference_args(), extras=st.dictionaries(st.sampled_from(["epoch", "val_perf", "arch"]),
                                                      json_values, max_size=2))  # fmt: skip
def test_random_checkpoint_args(tiny_state, args, extras):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pth"
        torch.save({"model": tiny_state, "args": args, **extras}, path)
        for load in (bm.load_reference_checkpoint, lambda p: convert_checkpoint(p)[0]):
            try:
                model = load(path)
            except bm.BltModelsError as err:
                event(type(err).__name__)
                continue
            event("built")
            _self_consistent(model)
