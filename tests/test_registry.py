"""Registry, create_model and the errors users hit first."""

import pytest
import torch

import blt_models as bm


def test_list_and_is_model():
    assert "blt_bl" in bm.list_models()
    assert bm.list_models("blt_b3l*") == ["blt_b3l", "blt_b3lt", "blt_b3lt2", "blt_b3lt3"]
    assert bm.list_models(["blt_bt", "blt_b2t"]) == ["blt_b2t", "blt_bt"]
    assert bm.is_model("blt_bl") and bm.is_model("blt_bl.vggface2")
    assert not bm.is_model("blt_xyz") and not bm.is_model("blt_bl.nonexistent")


def test_list_pretrained_only_lists_weights():
    for name in bm.list_pretrained():
        assert bm.get_pretrained_cfg(*name.split(".", 1)).has_weights
    assert "blt_bl.vggface2" in bm.list_pretrained_cfgs()
    assert "blt_bl.vggface2" not in bm.list_pretrained()  # CCN 2024 weights are not public


def test_unknown_name_lists_close_matches():
    with pytest.raises(bm.UnknownModelError, match=r"Did you mean: .*blt_blt") as info:
        bm.create_model("blt_bltt")
    assert "list_models()" in str(info.value)
    with pytest.raises(bm.UnknownModelError, match="Tags of blt_bl"):
        bm.create_model("blt_bl.imagenett")


def test_tag_config_and_overrides():
    cfg = bm.get_pretrained_cfg("blt_bl", "vggface2")
    assert cfg.num_classes == 3890 and cfg.timesteps == 10 and cfg.mean[0] == pytest.approx(0.6068)
    model = bm.create_model("blt_bl.vggface2")
    assert model.num_classes == 3890 and model.pretrained_cfg.name == "blt_bl.vggface2"
    model = bm.create_model("blt_bl_top2linear.vggface2", timesteps=12, num_classes=10)
    assert model.timesteps == 12 and model.num_classes == 10
    assert bm.create_model("blt_bl_top2linear.imagenet").timesteps == 15


def test_pretrained_without_published_weights_says_how_to_load():
    with pytest.raises(bm.WeightsUnavailableError, match="checkpoint_path=") as info:
        bm.create_model("blt_bl.vggface2", pretrained=True)
    assert "load_reference_checkpoint" in str(info.value)


def test_model_attributes_for_users():
    model = bm.create_model("blt_bl", num_classes=5, in_chans=1, timesteps=7)
    assert model.layer_names == tuple(f"layer{k}" for k in range(6))
    assert model.layer_aliases["output_3"] == "layer3"
    assert model.pretrained_cfg.num_classes == 5
    assert model.pretrained_cfg.input_size[0] == 1
    assert model.pretrained_cfg.timesteps == 7


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(3, 64, 64), "x.unsqueeze\\(0\\)"),
        (torch.randn(1, 1, 1, 3, 64, 64), "4-D image batch.*or a 5-D time-major"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
        (torch.randn(1, 1, 64, 64), "expects 3 input channel.*in_chans=1"),
        (torch.randn(1, 3, 16, 16), "too small.*at least 32x32"),
        (torch.randn(1, 3, 48, 48), "divisible by 32"),
    ],
)
def test_bad_input_errors(x, match):
    model = bm.create_model("blt_blt", num_classes=3)
    with pytest.raises(bm.InputError, match=match):
        model.forward_timesteps(x)


def test_top2linear_needs_224():
    model = bm.create_model("blt_bl_top2linear", num_classes=3)
    with pytest.raises(bm.InputError, match="Linear over a fixed 4x4 pooled map"):
        model(torch.randn(1, 3, 128, 128))


def test_too_few_timesteps():
    model = bm.create_model("blt_bl", num_classes=3)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(bm.TimestepsError, match="needs timesteps >= 6 .* got timesteps=5"):
        model.forward_timesteps(x, timesteps=5)
    with pytest.raises(bm.TimestepsError, match="positive integer"):
        model.forward_timesteps(x, timesteps=0)
    assert bm.create_model("blt_b3").min_timesteps == 3


def test_unknown_layer():
    model = bm.create_model("blt_bl", num_classes=3)
    with pytest.raises(KeyError, match="Did you mean"):
        model.forward_timesteps(torch.randn(1, 3, 64, 64), layers=["layr3"])


def test_in_chans_and_num_classes_after_loading(tmp_path):
    src = bm.create_model("blt_bl", num_classes=4)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    model = bm.create_model("blt_bl", checkpoint_path=path, num_classes=4)
    assert torch.equal(model.conv_input.weight, src.conv_input.weight)
