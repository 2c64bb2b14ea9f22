"""ResNet-50: torchvision's architecture and keys, the BLT reference's keys, weights, the clock."""

from __future__ import annotations

import argparse
import functools
import hashlib
import re

import pytest
import torch
import torchvision
from torch import nn

import blt_models as bm

TORCHVISION_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm affine parameters and statistics, so that every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@functools.cache
def torchvision_model() -> nn.Module:
    """torchvision's resnet50 with randomised weights (built once; tests must not modify it)."""
    torch.manual_seed(0)
    return randomize(torchvision.models.resnet50(weights=None))


def images(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def to_reference_layout(state_dict: dict) -> dict:
    """torchvision keys -> the BLT reference's keys (written here from the reference facts)."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^conv1\.", "basic_conv.0.", key)
        key = re.sub(r"^bn1\.", "basic_conv.1.", key)
        key = re.sub(r"^layer(\d)\.", r"stage_\1.", key)
        key = re.sub(r"\.conv(\d)\.", r".conv\1.0.", key)
        key = re.sub(r"\.bn(\d)\.", r".conv\1.1.", key)
        key = re.sub(r"\.downsample\.", ".shortcut.", key)
        key = re.sub(r"^fc\.", "classifier.", key)
        out[key] = value
    return out


def test_key_layout_and_parameter_count():
    model = bm.create_model("resnet50")
    reference = torchvision_model().state_dict()
    got = model.state_dict()
    assert list(got) == list(reference)  # torchvision's keys, in torchvision's order
    assert all(got[k].shape == reference[k].shape for k in got)
    assert len(got) == 320
    assert sum(p.numel() for p in model.parameters()) == 25_557_032


def test_num_classes_and_in_chans():
    model = bm.create_model("resnet50", num_classes=10, in_chans=1).eval()
    assert model.fc.out_features == 10 and model.conv1.in_channels == 1
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_equals_torchvision_on_the_same_weights():
    tv = torchvision_model()
    model = bm.create_model("resnet50").eval()
    model.load_state_dict(tv.state_dict())
    x = images()
    with torch.no_grad():
        want = tv(x)
        out = model.forward_timesteps(x, layers="all")
        assert rel_err(model(x), want) < 1e-5
        assert torch.equal(out.logits[0], model(x))
        stem = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        assert torch.allclose(out.features["stem"][0], stem)
        assert torch.allclose(
            out.features["layer4"][0], tv.layer4(tv.layer3(tv.layer2(tv.layer1(stem))))
        )
    assert out.steps.tolist() == [0] and out.features["layer2"].shape == (1, 2, 512, 4, 4)
    assert out.first_step == dict.fromkeys(["stem", "layer1", "layer2", "layer3", "layer4"], 0)


def test_reference_layout_loads(tmp_path):
    tv = torchvision_model()
    reference = to_reference_layout(tv.state_dict())
    assert len(reference) == 320 and "stage_2.0.shortcut.1.running_var" in reference
    assert "stage_1.0.conv2.0.weight" in reference and "classifier.weight" in reference
    # A DDP-prefixed state dict as the reference training script saves it.
    torch.save({"model": {"module." + k: v for k, v in reference.items()}}, tmp_path / "ref.pth")
    model = bm.create_model("resnet50", checkpoint_path=tmp_path / "ref.pth").eval()
    x = images(1)
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))
    # And through the reference-checkpoint converter (its args name the architecture).
    args = argparse.Namespace(model="resnet50", num_classes=10)  # the reference ignores num_classes
    torch.save({"model": reference, "args": args, "epoch": 2}, tmp_path / "ckpt.pth")
    model = bm.load_reference_checkpoint(tmp_path / "ckpt.pth").eval()
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))
    # And with plain load_state_dict, DDP prefix included.
    model = bm.create_model("resnet50").eval()
    model.load_state_dict({"module." + k: v for k, v in reference.items()})
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))


def test_torchvision_file_loads_and_bad_keys_are_reported(tmp_path):
    state = torchvision_model().state_dict()
    torch.save(state, tmp_path / "tv.pth")
    model = bm.create_model("resnet50", checkpoint_path=tmp_path / "tv.pth")
    assert torch.equal(
        model.state_dict()["layer3.5.bn3.running_var"], state["layer3.5.bn3.running_var"]
    )
    broken = dict(state)
    del broken["fc.bias"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(bm.CheckpointMismatchError, match="fc.bias"):
        bm.create_model("resnet50", checkpoint_path=tmp_path / "broken.pth")


def test_single_step_clock():
    model = bm.create_model("resnet50")
    with pytest.raises(bm.TimestepsError, match="feed-forward"):
        model.forward_timesteps(images(1), timesteps=3)
    with pytest.raises(bm.TimestepsError, match="feed-forward"):
        bm.create_model("resnet50", timesteps=2)
    assert (
        model.resolve_layer("stage_4") == "layer4" and model.resolve_layer("basic_conv") == "stem"
    )


def test_pretrained_config():
    assert bm.list_pretrained("resnet*") == ["resnet50.tv_in1k"]
    cfg = bm.get_pretrained_cfg("resnet50")
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    assert cfg.url == weights.url == TORCHVISION_URL
    assert cfg.sha256 == "0676ba61"
    assert list(cfg.class_names) == weights.meta["categories"]
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert cfg.num_classes == 1000 and cfg.timesteps == 1
    assert cfg.license and "torchvision" in cfg.source and "He" in cfg.citation


def test_pretrained_download_is_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cfg = bm.get_pretrained_cfg("resnet50")
    # A file that is not the published one: the download succeeds, the hash check fails.
    served = tmp_path / "resnet50-0676ba61.pth"
    torch.save({"fc.weight": torch.zeros(1)}, served)
    monkeypatch.setattr(cfg, "url", served.as_uri())
    with pytest.raises(bm.HashMismatchError, match="0676ba61"):
        bm.create_model("resnet50", pretrained=True)
    # The right file (its hash pinned) downloads, passes and loads strictly.
    state = torchvision_model().state_dict()
    good = tmp_path / "server" / "resnet50-good.pth"
    good.parent.mkdir()
    torch.save(state, good)
    monkeypatch.setattr(cfg, "url", good.as_uri())
    monkeypatch.setattr(cfg, "sha256", hashlib.sha256(good.read_bytes()).hexdigest()[:8])
    model = bm.create_model("resnet50", pretrained=True, num_classes=5)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert model.fc.out_features == 5 and model.pretrained_cfg.class_names is None
    assert (tmp_path / "home" / "hub" / "checkpoints" / "resnet50-good.pth").is_file()


def test_pretrained_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = bm.get_pretrained_cfg("resnet50")
    url = "http://127.0.0.1:9/models/resnet50-0676ba61.pth"  # nothing listens: refused
    monkeypatch.setattr(cfg, "url", url)
    with pytest.raises(bm.WeightsUnavailableError) as err:
        bm.create_model("resnet50", pretrained=True)
    assert url in str(err.value) and "checkpoint_path=" in str(err.value)
