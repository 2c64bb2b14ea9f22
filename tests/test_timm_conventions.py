"""timm's conventions, generic in ClockedModel / create_model, so every family has them.

timm's own tests/test_models.py runs against every architecture in the slow target
(tests/test_timm_suite.py); these are the fast checks of each convention, and the metadata
check of every registered model: the sizes a model declares are the sizes its forward takes.
"""

from __future__ import annotations

import pytest
import torch

import blt_models as bm

# Cheap to build and run at the default test level; every other architecture in the slow target.
FAST = {"blt_bl_tiny", "cornet_z", "cornet_r", "blt_b_top2linear"}


def _params(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _params(bm.list_models()))
def test_declared_input_sizes_run_and_one_pixel_less_is_refused(name):
    model = bm.create_model(name, timesteps=None).eval()
    cfg = model.pretrained_cfg
    assert cfg["fixed_input_size"] == (model.fixed_input_size is not None)
    if cfg["fixed_input_size"]:
        assert cfg["min_input_size"] is None
        c, h, w = cfg["input_size"]
    else:
        c, h, w = cfg["min_input_size"]
    assert c == model.in_chans and h == w
    with torch.no_grad():
        out = model(torch.zeros(1, c, h, w))
    assert out.shape == (1, model.num_classes)
    with pytest.raises(bm.InputError, match=f"{h - 1}x{w - 1}"), torch.no_grad():
        model(torch.zeros(1, c, h - 1, w - 1))
    if cfg["fixed_input_size"]:
        with pytest.raises(bm.InputError), torch.no_grad():
            model(torch.zeros(1, c, h + 1, w + 1))


def test_top2linear_metadata_is_what_its_forward_takes():
    """It reported min_input_size 32 (its stride) but its Linear needs a pooled 4x4 map."""
    model = bm.create_model("blt_b_top2linear")
    assert model.min_input_size == 193
    assert model.pretrained_cfg.min_input_size == (3, 193, 193)
    with pytest.raises(bm.InputError, match="smallest input is 193x193"):
        model(torch.zeros(1, 3, 64, 64))


def test_default_cfg_has_timms_keys_and_matches_the_model():
    model = bm.create_model("blt_bl_tiny").eval()
    cfg = model.default_cfg
    assert isinstance(cfg, dict)
    assert cfg["input_size"] == (1, 32, 32) and cfg["min_input_size"] == (1, 8, 8)
    assert cfg["fixed_input_size"] is False and cfg["num_classes"] == 10
    for key in ("crop_pct", "interpolation", "mean", "std", "license"):
        assert key in cfg
    features = model.forward_features(torch.zeros(1, 1, 32, 32))
    assert tuple(features.shape[-2:]) == cfg["pool_size"] == (4, 4)
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert model.head_hidden_size == model.num_features == features.shape[1]
    # timm code assigns default_cfg; it replaces pretrained_cfg.
    model.default_cfg = dict(cfg, crop_pct=0.5)
    assert model.pretrained_cfg.crop_pct == 0.5
    # The timm keys never go into config.json (they are the architecture's, not the weights').
    from blt_models._published import model_config

    written = model_config(model)["pretrained_cfg"]
    assert not {"pool_size", "min_input_size", "fixed_input_size", "first_conv"} & set(written)


def test_reset_classifier_global_pool_keeps_device_dtype_and_mode():
    model = bm.create_model("cornet_z", num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.ndim == 4 and unpooled.shape[1] == model.num_features
        torch.testing.assert_close(unpooled.mean((2, 3)), pooled)
        model.reset_classifier(0, "avg")
        torch.testing.assert_close(model(x), pooled)
    with pytest.raises(bm.ConfigValueError, match="num_classes=0"):
        model.reset_classifier(5, "")
    with pytest.raises(bm.ConfigValueError, match="'avg'"):
        model.reset_classifier(5, "max")
    model.to(device="meta", dtype=torch.float64)
    model.reset_classifier(2)
    head = model.get_classifier()
    assert head.weight.device.type == "meta" and head.weight.dtype == torch.float64
    assert not head.training  # the model is in eval mode


def test_create_model_global_pool_device_dtype_and_meta():
    model = bm.create_model("blt_bl_tiny", num_classes=0, global_pool="")
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 64, 4, 4)
    with pytest.raises(bm.ConfigValueError, match="num_classes=0"):
        bm.create_model("blt_bl_tiny", global_pool="")
    meta = bm.create_model("cornet_z", device="meta", dtype=torch.bfloat16)
    tensors = [*meta.parameters(), *meta.buffers()]
    assert all(t.device.type == "meta" and t.dtype == torch.bfloat16 for t in tensors if
               t.is_floating_point())  # fmt: skip
    out = meta.forward_features(torch.zeros(1, 3, 64, 64, device="meta", dtype=torch.bfloat16))
    assert out.shape == (1, 512, 2, 2) and out.device.type == "meta"
    assert meta.default_cfg["pool_size"] == (7, 7)
    with torch.device("meta"):
        inside = bm.create_model("blt_bl_tiny")
    assert next(inside.parameters()).device.type == "meta"
    with pytest.raises(TypeError):  # an unknown argument is refused, as timm's contract wants
        bm.create_model("blt_bl_tiny", device="meta", not_a_model_arg=1)
    with pytest.raises(bm.ConfigValueError, match="floating-point"):
        bm.create_model("blt_bl_tiny", dtype=torch.int64)


def test_features_only_wrapper_is_timms_and_reads_the_last_step():
    from timm.models._features import FeatureGetterNet

    x = torch.randn(2, 1, 32, 32)
    model = bm.create_model("blt_bl_tiny").eval()
    feats = bm.create_model("blt_bl_tiny", features_only=True, out_indices=(1, -1)).eval()
    assert isinstance(feats, FeatureGetterNet)
    assert feats.feature_info.channels() == [32, 64] and feats.feature_info.reduction() == [2, 8]
    assert feats.default_cfg["input_size"] == (1, 32, 32) and "classifier" not in feats.default_cfg
    feats.load_state_dict(model.state_dict(), strict=False)
    feats.model.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        got = feats(x)
        ref = model.forward_timesteps(x, layers=["layer1", "layer3"])
    torch.testing.assert_close(got[0], ref.features["layer1"][-1])
    torch.testing.assert_close(got[1], ref.features["layer3"][-1])
    # Another step: a shorter clock ends there (the clock is causal).
    early = bm.create_model("blt_bl_tiny", features_only=True, out_indices=[3], timesteps=5)
    early.model.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(early.eval()(x)[0], ref.features["layer3"][4])
    # Every layer by default; the feature_cls names timm knows.
    assert len(bm.create_model("cornet_z", features_only=True).feature_info) == 4
    hooked = bm.create_model("cornet_z", features_only=True, feature_cls="hook")
    assert [f.shape[1] for f in hooked(torch.randn(1, 3, 32, 32))] == [64, 128, 256, 512]
    for cls in ("hook", "list", "dict", "fx"):
        if cls == "hook":
            with pytest.raises(bm.UnsupportedError, match="feature_cls='getter'"):
                bm.create_model("blt_bl_tiny", features_only=True, feature_cls=cls)
        else:
            with pytest.raises(bm.UnsupportedError, match="forward_intermediates"):
                bm.create_model("cornet_z", features_only=True, feature_cls=cls)
    with pytest.raises(bm.ConfigValueError, match="features_only=True"):
        bm.create_model("blt_bl_tiny", out_indices=(1,))


def test_prune_intermediate_layers_removes_the_later_layers():
    """It kept them and returned the indices, so that forward_features still gave the last
    layer, not the tap asked for (timm's contract: the features end at the tap)."""
    model = bm.create_model("blt_bl_tiny").eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        logits = model(x)
        assert model.prune_intermediate_layers([3], prune_head=False) == [3]
        torch.testing.assert_close(model(x), logits)  # nothing to remove at the last index
        with pytest.raises(bm.UnsupportedError, match="prune_head=True"):
            model.prune_intermediate_layers([1], prune_head=False)
        assert model.prune_intermediate_layers([0, -3]) == [0, 1]
        assert model.layer_names == ("layer0", "layer1") and model.num_classes == 0
        assert not [k for k in model.state_dict() if k.startswith(("norm_2", "conv_1_2", "conv_2"))]
        torch.testing.assert_close(model.forward_features(x), taps[1])
        torch.testing.assert_close(model(x), taps[1])  # the unpooled map: the head is gone
        kept = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        torch.testing.assert_close(kept, taps[:2])
    assert model.num_features == model.feature_info[-1]["num_chs"] == 32


def test_prune_intermediate_layers_refuses_where_later_layers_feed_back():
    model = bm.create_model("blt_bt", device="meta")
    with pytest.raises(bm.UnsupportedError, match=r"layer5 -> layer4 \(top-down\)"):
        model.prune_intermediate_layers([4])
    with pytest.raises(bm.UnsupportedError, match="does not remove layers"):
        bm.create_model("cornet_z", device="meta").prune_intermediate_layers([1])
    assert len(model.layer_names) == 6 and model.num_classes == 1000  # refused: unchanged
    # timm's feature wrapper then keeps every layer (and drops only the head).
    feats = bm.create_model("blt_bt", device="meta", features_only=True, out_indices=[1])
    assert len(feats.model.layer_names) == 6 and feats.model.num_classes == 0
    feats = bm.create_model("blt_bl_tiny", features_only=True, out_indices=[1])
    assert feats.model.layer_names == ("layer0", "layer1")
    assert feats(torch.zeros(1, 1, 32, 32))[0].shape == (1, 32, 16, 16)


def test_torchscript_is_refused_with_the_alternatives():
    model = bm.create_model("blt_bl_tiny")
    with pytest.raises(bm.UnsupportedError, match=r"torch.export.export.*torch.compile"):
        torch.jit.script(model)


def test_zero_pixel_images_are_refused():
    model = bm.create_model("cornet_z")
    with pytest.raises(bm.InputError, match="at least one pixel"):
        model(torch.zeros(1, 3, 0, 0))


def test_blt_vs_reset_classifier_takes_global_pool_and_keeps_frozen_weights_frozen():
    """BLT-VS has its own reset_classifier (its readout keeps add_feats channels)."""
    model = bm.create_model("blt_vs", device="meta").eval()
    model.requires_grad_(False)
    model.reset_classifier(0, "")
    assert model.global_pool == "" and model.num_classes == 0
    assert not [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(m.training for m in model.modules())
    x = torch.zeros(1, 3, 224, 224, device="meta")
    assert model(x).shape == (1, model.num_features, *model.default_cfg["pool_size"])


def test_weights_are_not_loaded_into_a_meta_model(tmp_path):
    """Loading into meta tensors is a no-op (torch warns per tensor): it crashed on hashing the
    'loaded' weights, after a warning per tensor; it is refused before reading the weights."""
    path = tmp_path / "w.pth"
    torch.save(bm.create_model("blt_bl_tiny").state_dict(), path)
    cases = (
        dict(model_name="blt_bl_tiny", checkpoint_path=path),
        dict(model_name="blt_bl_tiny.fashion_mnist", pretrained=True),
    )
    for kwargs in cases:
        with pytest.raises(bm.ConfigValueError, match="pretrained=False"):
            bm.create_model(**kwargs, device="meta")
        with pytest.raises(bm.ConfigValueError, match="meta"), torch.device("meta"):
            bm.create_model(**kwargs)
    # Without weights the meta device still builds (timm's tests read configs that way).
    assert bm.create_model("blt_bl_tiny.fashion_mnist", device="meta").default_cfg["num_classes"]
