"""Reference training checkpoints, plain state dicts and safetensors: strict, safe loading."""

import argparse
import pickle

import pytest
import torch
from conftest import randomize_
from safetensors.torch import save_file

import blt_models as bm


def _reference_checkpoint(model, path, prefix="", **args):
    namespace = argparse.Namespace(
        model="blt_bl", num_layers=6, recurrent_steps=10, pool="max", num_classes=model.num_classes,
        device="cuda", gpu=0, rank=0, world_size=4, val_perf=0.4, img_channels=3, **args,
    )  # fmt: skip
    torch.save(
        {
            "model": {prefix + k: v for k, v in model.state_dict().items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]},
            "lr_scheduler": {"step_size": 100, "gamma": 0.5, "last_epoch": 3},
            "epoch": 3,
            "args": namespace,
            "val_perf": 0.41,
        },
        path,
    )


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_checkpoint_round_trip(tmp_path, prefix):
    src = randomize_(bm.create_model("blt_bl", num_classes=12, timesteps=7)).eval()
    path = tmp_path / "checkpoint.pth"
    _reference_checkpoint(src, path, prefix=prefix)
    model = bm.load_reference_checkpoint(path).eval()
    assert model.num_classes == 12 and model.timesteps == 10 and model.pool == "max"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.forward_timesteps(x).logits, src.forward_timesteps(x, timesteps=10).logits)
    same = bm.create_model("blt_bl", num_classes=12, checkpoint_path=path)
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), src.state_dict().values()))


def test_reference_checkpoint_without_pool_arg_means_max(tmp_path):
    src = bm.create_model("blt_b2", num_classes=3)
    path = tmp_path / "old.pth"
    _reference_checkpoint(src, path)
    ckpt = torch.load(path, weights_only=False)
    del ckpt["args"].pool
    ckpt["args"].model = "blt_b2"
    torch.save(ckpt, path)
    assert bm.load_reference_checkpoint(path).pool == "max"


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path):
    sd = bm.create_model("blt_bl", num_classes=10).state_dict()
    sd.pop("conv_2_2.weight")
    sd["conv_9_9.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    model = bm.create_model("blt_bl", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(bm.CheckpointMismatchError) as info:
        bm.load_checkpoint(model, path)
    message = str(info.value)
    assert "missing keys (1):\n    conv_2_2.weight" in message
    assert "unexpected keys (1):\n    conv_9_9.weight" in message
    assert "read_out.linear.weight: checkpoint (10, 512) vs model (3, 512)" in message
    assert info.value.missing == ["conv_2_2.weight"]
    # Nothing was loaded half-way.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_safetensors_and_plain_state_dict(tmp_path):
    src = randomize_(bm.create_model("blt_bt", num_classes=3))
    save_file(src.state_dict(), tmp_path / "w.safetensors")
    torch.save(src.state_dict(), tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        model = bm.create_model("blt_bt", num_classes=3, checkpoint_path=tmp_path / name)
        assert torch.equal(model.norm_3.bias, src.norm_3.bias)


def test_blur_filter_buffers_are_verified(tmp_path):
    sd = bm.create_model("blt_bl", pool="blur", num_classes=3).state_dict()
    sd["conv_1_2.blurpool.filt"] = torch.ones_like(sd["conv_1_2.blurpool.filt"])
    torch.save(sd, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="blur filter"):
        bm.create_model("blt_bl", pool="blur", num_classes=3, checkpoint_path=tmp_path / "w.pt")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "payload": Evil()}, f)
    with pytest.raises(ValueError, match="weights_only=True"):
        bm.load_reference_checkpoint(path)


def test_checkpoint_without_args(tmp_path):
    torch.save(bm.create_model("blt_b", num_classes=2).state_dict(), tmp_path / "sd.pth")
    with pytest.raises(ValueError, match="no 'args' entry"):
        bm.load_reference_checkpoint(tmp_path / "sd.pth")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        bm.create_model("blt_b", checkpoint_path="/nonexistent/file.pth")


def test_plain_load_state_dict_accepts_ddp_prefix():
    src = randomize_(bm.create_model("blt_bl", num_layers=4, num_classes=3))
    model = bm.create_model("blt_bl", num_layers=4, num_classes=3)
    model.load_state_dict({"module." + k: v for k, v in src.state_dict().items()})
    assert torch.equal(model.norm_2.bias, src.norm_2.bias)
    with pytest.raises(RuntimeError, match="Missing key"):  # strict as ever
        model.load_state_dict({"module.conv_input.weight": src.conv_input.weight})
