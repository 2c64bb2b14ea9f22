"""timm's model contract, for every registered model (in the style of timm's tests/test_models.py).

Every architecture of ``list_models()`` is built in a small configuration of its own family
(narrow BLT layer tables at 32 px, BLT-VS at its 128 px layout, CORnet and ResNet at 32 px, a
clock just long enough that every connection reaches a readout), so the whole sweep stays in
the default run. ``torch.export`` and ``torch.compile`` run on one model per family by default
and on every model in the slow target; inductor only in the slow target.

Deviations from timm's conventions, per model, and why (asserted below, not just listed):

* ``feature_info[i]["module"]`` is a layer name as ``forward_timesteps`` takes it, not a
  submodule path: most layers are not submodules (BLT's ``layer3`` is a step of a recurrence).
  timm's hook-based ``FeatureHookNet`` therefore works only where a layer *is* a submodule called
  once per forward (CORnet-Z, ResNet's ``layer1..4``, CORnet-S's ``V1``); elsewhere it fails
  loudly (timm's KeyError for a layer that is no module, our RuntimeError for a module the clock
  does not call as a whole). ``FeatureGetterNet`` works for every model.
* ``prune_intermediate_layers`` removes the layers after the last index only where none of
  them feeds a kept one back (BLT without top-down); elsewhere it refuses.
* torch.fx (torchvision's ``create_feature_extractor``) is refused with an InputError that
  names the alternatives: the clock is a Python loop whose schedule depends on the input.
* BLT-VS with ``readout_type="single"``: ``forward_head`` without ``pre_logits`` is undefined
  (its logits weigh every readout step; one feature map cannot give them).
"""

from __future__ import annotations

import copy
import fnmatch
from functools import cache

import pytest
import torch
from torch import nn

import blt_models as bm

SMALL_BLT = dict(num_layers=4, channels=(32, 32, 32, 32), sizes=(8, 8, 4, 2), nominal_size=32)

# Parameters that the reference architecture leaves unused, by model (glob on the parameter name).
REFERENCE_UNUSED = {
    # Nothing reaches the Retina's TD stream and nothing reads LGN's (the Retina has no TD input),
    # so their norms never touch a readout (reference too).
    "blt_vs*": ("retina.norm_td.*", "lgn.norm_td.*"),
    # Standard unrolling: the reference never applies the V4 -> V1 top-down skip.
    "blt_vs": ("v1.td_skip.*",),
    "blt_vs-single": ("v1.td_skip.*",),
}

# One or two models per family for the wrapper checks of the default run (all in the slow target).
FAMILY_REPS = {
    "blt_bl", "blt_b", "blt_b3lt3", "blt_b_pm", "blt_bl_tiny", "cornet_z", "cornet_r",
    "cornet_rt", "cornet_s", "resnet50", "blt_vs",
}  # fmt: skip
# torch.export / torch.compile in the default run (the others, and inductor, in the slow target).
REPRESENTATIVES = {"blt_bl_tiny", "cornet_rt"}
COMPILE_SLOW = {"blt_bl", "blt_b", "cornet_s", "resnet50", "blt_vs"}


def _case(name: str) -> tuple[str, dict, int]:
    """(architecture, constructor kwargs, input side) of the small configuration of ``name``."""
    if name.startswith("blt_vs"):
        variants = {
            "blt_vs": dict(timesteps=3),
            "blt_vs-bio": dict(unroll="biological", timesteps=10),  # every edge reaches a readout
            "blt_vs-single": dict(readout_type="single", timesteps=3),
        }
        return "blt_vs", dict(image_size=128, num_classes=7, **variants[name]), 128
    if name == "blt_bl_tiny":
        return name, dict(timesteps=6), 32
    if name.startswith("blt_"):
        if "top2linear" in name:  # a Linear over a fixed 4x4 map: only the 224 px table exists
            return name, dict(num_classes=7), 224
        if "pm" in name:
            return name, dict(num_classes=7), 64
        model = bm.create_model(name, num_classes=7, **SMALL_BLT)
        # Just long enough that every connection reaches a readout: the slowest bottom-up chain
        # (one layer per step, even where skips wake the top earlier), then a lateral or
        # top-down edge out of the last layer needs 1 + shift more steps to come back up.
        steps = max(model.min_timesteps, model.num_layers) + 1 + max(0, *model.shifts)
        return name, dict(num_classes=7, timesteps=steps, **SMALL_BLT), 32
    if name.startswith("rcnn_"):  # pools 6 times by 2: 64 px is its smallest input
        layers = 14 if name == "rcnn_b_d" else 7
        small = dict(num_classes=7, channels=[3 + i // 2 for i in range(layers)])
        return name, dict(small, timesteps=3) if name == "rcnn_bl" else small, 64
    if name.startswith("convrnn_"):  # narrow layers; shallow readouts need >= 65 px
        from blt_models.models.convrnn import convrnn_spec

        spec = convrnn_spec(name)
        n = 5 if spec.depth == "shallow" else 10
        # A clock just past the decoders' window (steps >= number of nodes): every edge reached.
        small = dict(num_classes=7, channels=[4] * n, timesteps=n + 3)
        if spec.cell in ("simplernn", "lstm", "rgc"):
            small["cell_channels"] = [4] * (3 if spec.depth == "shallow" else 7)
        if spec.cell == "lstm" and spec.depth == "shallow":
            small["image_size"] = 72
        return name, small, 72 if spec.depth == "shallow" else 32
    return name, dict(num_classes=7), 32


CASES = [*bm.list_models(), "blt_vs-bio", "blt_vs-single"]
# Costly configurations (224 px and 7 steps; BLT-VS's 350-576-channel maps): their forward
# checks run in the slow target, their pretrained_cfg / feature_info checks by default; the
# default BLT-VS runs every check but backward.
HEAVY = {"blt_bl_top2linear", "blt_vs-bio", "blt_vs-single"}
NO_DEFAULT_BACKWARD = HEAVY | {"blt_vs"}


def _params(names, slow=HEAVY):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


@cache
def _built(name: str) -> nn.Module:
    arch, kwargs, side = _case(name)
    torch.manual_seed(0)
    model = bm.create_model(arch, **kwargs)
    # Probe and preprocess at the test size (as `blt-models extract --img-size` does).
    if model.fixed_input_size is None:
        model.pretrained_cfg = model.pretrained_cfg.replace(input_size=(model.in_chans, side, side))
    return model.eval()


def _model(name: str) -> nn.Module:
    return copy.deepcopy(_built(name))


def _input(model: nn.Module, name: str, batch: int = 2) -> torch.Tensor:
    batch = 1 if name in NO_DEFAULT_BACKWARD else batch
    side = _case(name)[2]
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, model.in_chans, side, side, generator=gen)


def _unused(name: str) -> tuple[str, ...]:
    return tuple(p for key, pats in REFERENCE_UNUSED.items() if fnmatch.fnmatch(name, key)
                 for p in pats)  # fmt: skip


def test_every_registered_model_is_covered():
    assert set(bm.list_models()) <= set(CASES)


# --------------------------------------------------------------------------- forward / backward
@pytest.mark.parametrize("name", _params(CASES, slow=NO_DEFAULT_BACKWARD))
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = _model(name).train()
    x = _input(model, name)
    out = model.forward_timesteps(x)
    assert out.logits.shape == (len(model.readout_steps()), x.shape[0], model.num_classes)
    assert torch.isfinite(out.logits).all()
    out.logits.square().mean().backward()
    unused = _unused(name)
    missing = []
    for pname, p in model.named_parameters():
        listed = any(fnmatch.fnmatch(pname, pat) for pat in unused)
        has = p.grad is not None and bool(p.grad.abs().sum() > 0)
        if listed:
            assert not has, f"{pname} is listed as unused by the reference but got a gradient"
        elif not has:
            missing.append(pname)
    assert not missing, f"no gradient for {missing}"
    for pat in unused:  # a listed pattern must name real parameters
        assert any(fnmatch.fnmatch(n, pat) for n, _ in model.named_parameters()), pat


# --------------------------------------------------------------------------- pretrained_cfg
@pytest.mark.parametrize("name", CASES)
def test_pretrained_cfg_fields_and_timm_data_config(name):
    from timm.data import create_transform
    from timm.data import resolve_data_config as timm_resolve

    arch, _, _ = _case(name)
    model = _model(name)
    cfg = model.pretrained_cfg
    assert cfg.architecture == arch and cfg["architecture"] == arch
    assert cfg.num_classes == model.num_classes and cfg.timesteps == model.timesteps
    assert cfg.input_size[0] == model.in_chans
    assert len(cfg.mean) == len(cfg.std) in (1, 3)
    assert 0 < cfg.crop_pct <= 1 and cfg.interpolation in ("bilinear", "bicubic")
    if model.fixed_input_size is not None:
        assert tuple(cfg.input_size) == model.fixed_input_size
    # timm reads pretrained_cfg as a dict: get / [] / in, keys are the fields.
    assert cfg.get("test_input_size") is None and "test_input_size" not in cfg
    assert dict(cfg) == {k: getattr(cfg, k) for k in cfg}
    assert set(cfg) == set(cfg.to_dict())
    data = timm_resolve(model=model)
    assert data["input_size"] == tuple(cfg.input_size)
    assert data["mean"] == tuple(cfg.mean) and data["std"] == tuple(cfg.std)
    tf = create_transform(**data)
    assert tf is not None
    assert bm.resolve_data_config(model)["input_size"] == tuple(cfg.input_size)


def test_pretrained_cfg_mapping_is_read_only_and_rejects_unknown_keys():
    cfg = bm.get_pretrained_cfg("blt_bl_tiny", "fashion_mnist")
    with pytest.raises(KeyError):
        cfg["no_such_key"]
    with pytest.raises(TypeError):
        cfg["mean"] = (0.0,)  # type: ignore[index]
    assert cfg["mean"] == cfg.mean and cfg.get("timesteps") == 8
    assert cfg.replace(timesteps=3)["timesteps"] == 3 and cfg.timesteps == 8


def test_blt_vs_image_size_sets_pretrained_input_size():
    model = bm.create_model("blt_vs", image_size=128, num_classes=3)
    assert model.pretrained_cfg.input_size == (3, 128, 128)
    tf = bm.create_transform(model)
    from PIL import Image

    x = tf(Image.new("RGB", (300, 200)))
    assert tuple(x.shape) == (3, 128, 128)
    assert model.feature_info[0]["reduction"] == 2  # probed at 128 px, its only size
    model(x.unsqueeze(0))  # the model's own preprocessing fits the model


# --------------------------------------------------------------------------- feature_info
@pytest.mark.parametrize("name", CASES)
def test_feature_info_matches_real_shapes(name):
    from timm.models._features import FeatureInfo

    model = _model(name)
    x = _input(model, name, batch=1)
    info = model.feature_info
    with torch.no_grad():
        out = model.forward_timesteps(x, layers="all")
    assert [d["module"] for d in info] == list(model.layer_names)
    side = x.shape[-1]
    for d in info:
        feat = out.features[d["module"]]
        assert d["num_chs"] == feat.shape[2], d
        assert d["reduction"] == max(1, round(side / feat.shape[-2])), d
        assert d["first_step"] == out.first_step[d["module"]]
    fi = FeatureInfo(info, out_indices=tuple(range(len(info))))
    assert fi.channels() == [d["num_chs"] for d in info]


@pytest.mark.parametrize("name", ["resnet50", "cornet_s", "blt_vs-single", "blt_bl"])
def test_feature_info_keeps_every_submodule_mode(name):
    model = _model(name)
    model.__dict__.pop("_feature_info_cache", None)
    model.train()
    frozen = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))][:3]
    for m in frozen:
        m.eval()
    before = {n: m.training for n, m in model.named_modules()}
    assert model.feature_info
    assert {n: m.training for n, m in model.named_modules()} == before
    assert not any(m.training for m in frozen) and model.training


def test_fixed_clock_models_have_feature_info():
    # These refused the probe's shorter clock before (TimestepsError).
    assert [d["num_chs"] for d in bm.create_model("cornet_s").feature_info] == [64, 128, 256, 512]
    single = bm.create_model("blt_vs", readout_type="single", image_size=128, num_classes=3)
    assert len(single.feature_info) == len(single.layer_names)


@pytest.mark.parametrize("name", ["cornet_z", "resnet50", "rcnn_b", "cornet_s"])
def test_fixed_clocks_take_integers_of_any_kind_and_refuse_others(name):
    """One rule for every fixed clock: its length as any integer type or None; anything else
    (another length, a bool, a float) is a TimestepsError that names the model."""
    import numpy as np

    model = bm.create_model(name)
    fixed = model.timesteps
    for ok in (None, fixed, np.int64(fixed), torch.tensor(fixed)):
        assert model.resolve_timesteps(ok) == fixed
    for bad in (fixed + 1, np.int64(fixed + 1), float(fixed), True):
        with pytest.raises(bm.TimestepsError, match=f"exactly {fixed} clock step"):
            model.resolve_timesteps(bad)
    with pytest.raises(bm.TimestepsError, match="exactly"):
        bm.create_model(name, timesteps=fixed + 1)


# --------------------------------------------------------------------------- intermediates / head
@pytest.mark.parametrize("name", _params(CASES, slow=set(CASES) - FAMILY_REPS))
def test_forward_intermediates_features_and_head(name):
    model = _model(name)
    x = _input(model, name)
    n = len(model.layer_names)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers="all")
        at = model.last_steps()
        expect = [out.features[k][at[k]] for k in model.layer_names]
        final, inter = model.forward_intermediates(x)
        assert len(inter) == n
        for got, want in zip(inter, expect, strict=True):
            torch.testing.assert_close(got, want)
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert isinstance(last2, list) and len(last2) == 2
        torch.testing.assert_close(last2[1], expect[-1])
        sel = model.forward_intermediates(x, indices=(0, -1), intermediates_only=True)
        torch.testing.assert_close(sel[0], expect[0])
        torch.testing.assert_close(sel[1], expect[-1])
        nhwc = model.forward_intermediates(
            x, indices=[0], output_fmt="NHWC", intermediates_only=True
        )
        torch.testing.assert_close(nhwc[0], expect[0].permute(0, 2, 3, 1))
        with pytest.raises(IndexError):
            model.forward_intermediates(x, indices=[n])
        # forward_features / forward_head / num_features on the last readout step, as forward.
        feats = model.forward_features(x)
        torch.testing.assert_close(final, feats)
        # The map the last readout pools: readout_delay steps before it (ConvRNNs: one step).
        last = model.readout_steps()[-1] - model.readout_delay
        torch.testing.assert_close(feats, out.features[model.head_layer][last])
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (x.shape[0], model.num_features)
        logits = model(x)
        # Temporal decoders (ConvRNN tmaxconf / dthresh): model(x) is the decoded answer.
        decoded = model.decode(out.logits, out.steps) if hasattr(model, "decode") else None
        torch.testing.assert_close(logits, out.logits[-1] if decoded is None else decoded)
        logits = out.logits[-1]
        if getattr(model, "readout_type", "multi") == "single":
            with pytest.raises(NotImplementedError, match="pre_logits=True"):
                model.forward_head(feats)
        else:
            torch.testing.assert_close(model.forward_head(feats), logits, rtol=1e-4, atol=1e-5)


def test_cornet_s_intermediates_are_each_area_at_its_last_inner_step():
    model = bm.create_model("cornet_s", num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers="all")
        inter = model.forward_intermediates(x, intermediates_only=True)
    for name, got, t in zip(model.layer_names, inter, (0, 2, 6, 8), strict=True):
        assert got.abs().sum() > 0, f"{name} read at a step where it is not computed"
        torch.testing.assert_close(got, out.features[name][t])


@pytest.mark.parametrize("name", _params(CASES, slow=set(CASES) - FAMILY_REPS))
def test_timm_feature_getter_net(name):
    from timm.models._features import FeatureGetterNet

    model = _model(name)
    x = _input(model, name, batch=1)
    n = len(model.layer_names)
    getter = FeatureGetterNet(model, out_indices=(0, n - 1))
    assert getter.feature_info.channels() == [
        model.feature_info[0]["num_chs"],
        model.feature_info[-1]["num_chs"],
    ]
    with torch.no_grad():
        got = getter(x)
        want = model.forward_intermediates(x, indices=(0, n - 1), intermediates_only=True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", _params(CASES, slow=set(CASES) - FAMILY_REPS))
def test_feature_hook_net_works_or_fails_loudly(name):
    """Never silent: hooks either see each layer (equal to forward_intermediates) or raise."""
    from timm.models._features import FeatureHookNet

    model = _model(name)
    x = _input(model, name, batch=1)
    n = len(model.layer_names)
    with torch.no_grad():
        want = model.forward_intermediates(x, intermediates_only=True)
    try:
        net = FeatureHookNet(model, out_indices=tuple(range(n)))
        with torch.no_grad():
            got = net(x)
    except KeyError as err:  # timm: the layer is not a submodule (BLT's layer3, BLT-VS's v1_bu)
        assert any(layer in str(err) for layer in model.layer_names)
        return
    except RuntimeError as err:  # ours: a submodule the clock never calls whole
        assert "forward_timesteps" in str(err) and "FeatureGetterNet" in str(err)
        return
    assert set(model.layer_names) <= set(model.hookable_layers)
    assert len(got) == n
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_feature_hook_net_on_cornet_r_is_never_empty():
    from timm.models._features import FeatureHookNet

    net = FeatureHookNet(bm.create_model("cornet_r", num_classes=3), out_indices=(0, 1, 2, 3))
    with pytest.raises(RuntimeError, match="FeatureGetterNet"):
        net(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", ["blt_bl", "cornet_z", "cornet_r", "resnet50", "blt_vs"])
def test_torchvision_fx_feature_extractor_is_refused_clearly(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    model = _model(name)
    with pytest.raises(bm.InputError, match="torch.fx.*forward_timesteps.*FeatureGetterNet"):
        create_feature_extractor(model, return_nodes=[model.classifier_name])


# --------------------------------------------------------------------------- num_classes=0
@pytest.mark.parametrize("name", _params(CASES, slow=set(CASES) - FAMILY_REPS))
def test_num_classes_zero_gives_pooled_features(name):
    arch, kwargs, _ = _case(name)
    kwargs = {**kwargs, "num_classes": 0}
    model = bm.create_model(arch, **kwargs).eval()
    x = _input(model, name)
    with torch.no_grad():
        pooled = model(x)
        assert pooled.shape == (x.shape[0], model.num_features) and model.num_classes == 0
        assert model.pretrained_cfg.num_classes == 0
        if getattr(model, "readout_type", "multi") != "single":
            torch.testing.assert_close(pooled, model.forward_head(model.forward_features(x)))
            feats = model.forward_features(x)
            torch.testing.assert_close(pooled, feats.mean(dim=(-2, -1)), rtol=1e-4, atol=1e-5)
    # reset_classifier(0) on a model with a head: pooled features; then a new head. (BLT-VS's
    # readout feeds LOC top-down, so its dynamics change with the head: compare after the reset.)
    full = _model(name)
    with torch.no_grad():
        full.reset_classifier(0)
        got = full(x)
        assert got.shape == (x.shape[0], full.num_features)
        if getattr(full, "readout_type", "multi") != "single":
            want = full.forward_head(full.forward_features(x), pre_logits=True)
            torch.testing.assert_close(got, want)
        full.reset_classifier(5)
        assert full(x).shape == (x.shape[0], 5) and full.num_classes == 5


# --------------------------------------------------------------------------- export / compile
def _export_params():
    return [n if n in REPRESENTATIVES else pytest.param(n, marks=pytest.mark.slow) for n in CASES]


@pytest.mark.parametrize("name", _export_params())
def test_torch_export(name):
    model = _model(name)
    x = _input(model, name, batch=1)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


@pytest.mark.parametrize("name", _export_params())
def test_torch_compile_eager_backend(name):
    torch._dynamo.reset()
    model = _model(name)
    x = _input(model, name, batch=1)
    compiled = torch.compile(model, backend="eager", fullgraph=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPRESENTATIVES | COMPILE_SLOW))
def test_torch_compile_inductor(name):
    torch._dynamo.reset()
    model = _model(name)
    x = _input(model, name, batch=1)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
