"""`blt-models convert` and `blt-models push`: round trips, messages and exit codes."""

from __future__ import annotations

import argparse
import json

import huggingface_hub.constants as hf_constants
import torch

import blt_models as bm
from blt_models.cli import main

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _reference_checkpoint(path, **arch):
    """A file laid out as the reference main.py writes it (section 6.6 of the reference notes)."""
    torch.manual_seed(1)
    source = bm.create_model("blt_bl", num_layers=4, num_classes=7, timesteps=5, **arch).eval()
    args = argparse.Namespace(
        model="blt_bl", num_layers=4, recurrent_steps=5, pool=arch.get("pool", "max"),
        num_classes=7, dataset="vggface2", lr=0.0005,
    )  # fmt: skip
    torch.save(
        {"model": source.state_dict(), "args": args, "optimizer": {}, "lr_scheduler": {},
         "epoch": 3, "val_perf": 0.1},
        path,
    )  # fmt: skip
    return source


def test_convert_reference_checkpoint_round_trip(tmp_path, capsys):
    source = _reference_checkpoint(tmp_path / "checkpoint.pth", pool="blur")
    out = tmp_path / "published"
    assert (
        main(["convert", str(tmp_path / "checkpoint.pth"), str(out), "--license", "cc-by-4.0"]) == 0
    )
    printed = capsys.readouterr().out
    assert "blt_bl from its args" in printed and "verified" in printed
    loaded = bm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        want = source.forward_timesteps(X)
        got = loaded.forward_timesteps(X)
    assert torch.equal(got.logits, want.logits) and torch.equal(got.steps, want.steps)
    assert loaded.timesteps == 5 and loaded.pool == "blur" and loaded.num_classes == 7
    config = json.loads((out / "config.json").read_text())
    pcfg = config["pretrained_cfg"]
    assert pcfg["mean"] == list(
        bm.get_pretrained_cfg("blt_bl", "vggface2").mean
    )  # from args.dataset
    assert pcfg["license"] == "cc-by-4.0" and "checkpoint.pth (epoch 3)" in pcfg["source"]
    assert pcfg["metrics"] == {"reference_val_perf": 0.1}
    assert "license: cc-by-4.0" in (out / "README.md").read_text()


def test_convert_official_layout_with_arch_entry(tmp_path, capsys):
    # Official CORnet files: {'state_dict': {'module.' + k}, 'arch', 'epoch', 'optimizer'}; the
    # path is generic, so a BLT model written that way exercises it.
    torch.manual_seed(2)
    source = bm.create_model("blt_b").eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save(
        {"state_dict": state, "arch": "BLT_B", "epoch": 1, "optimizer": {}},
        tmp_path / "official.pth",
    )
    out = tmp_path / "published"
    assert main(["convert", str(tmp_path / "official.pth"), str(out)]) == 0
    assert "from the file's 'arch' entry 'BLT_B'" in capsys.readouterr().out
    loaded = bm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), source(X))


def test_convert_errors_exit_non_zero(tmp_path, capsys):
    torch.save(bm.create_model("blt_b").state_dict(), tmp_path / "plain.pth")
    assert main(["convert", str(tmp_path / "plain.pth"), str(tmp_path / "out")]) == 1
    assert "--arch" in capsys.readouterr().err
    assert (
        main(["convert", str(tmp_path / "plain.pth"), str(tmp_path / "out"), "--arch", "blt_bl"])
        == 1
    )
    assert "missing keys" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nope.pth"), str(tmp_path / "out")]) == 1
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_push_checks_the_folder_and_reports_offline(tmp_path, capsys, monkeypatch):
    assert main(["push", str(tmp_path), "org/repo"]) == 1
    assert "not a published blt-models folder" in capsys.readouterr().err
    folder = bm.save_pretrained(
        bm.create_model("blt_bl", num_layers=4, num_classes=3), tmp_path / "m"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(folder), "org/repo", "--token", "hf_not_a_real_token"]) == 1
    captured = capsys.readouterr()
    assert "checked" in captured.out and "offline mode" in captured.err


def test_convert_official_cornet_file(tmp_path, capsys):
    """An official CORnet file: DataParallel keys, training extras, 'arch' naming the model."""
    torch.manual_seed(3)
    source = bm.create_model("cornet_z").eval()
    torch.save(
        {
            "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
            "arch": "CORnet_Z", "epoch": 43, "optimizer": {"state": {}, "param_groups": []},
        },
        tmp_path / "cornet_z-5c427c9c.pth",
    )  # fmt: skip
    out = tmp_path / "cornet_z"
    assert main(["convert", str(tmp_path / "cornet_z-5c427c9c.pth"), str(out)]) == 0
    assert "cornet_z (from the file's 'arch' entry 'CORnet_Z')" in capsys.readouterr().out
    loaded = bm.create_model(f"local-dir:{out}").eval()
    with torch.no_grad():
        assert torch.equal(loaded(X), source(X))


def test_convert_published_blt_vs_file(tmp_path, capsys):
    """A file in the published BLT-VS layout, named as on the Hub: configuration and tag from it."""
    from blt_models.models.blt_vs import blt_vs_state_dict_to_reference

    torch.manual_seed(4)
    source = bm.create_model(
        "blt_vs", image_size=128, timesteps=2, unroll="standard", num_classes=1000
    ).eval()
    name = "blt_vs_slt_111_biounroll_0_t_2_readout_multi_dataset_imagenet_num_1.pth"
    torch.save(blt_vs_state_dict_to_reference(source.state_dict()), tmp_path / name)
    out = tmp_path / "blt_vs"
    assert main(["convert", str(tmp_path / name), str(out)]) == 0
    assert "blt_vs.imagenet: published BLT-VS file" in capsys.readouterr().out
    loaded = bm.create_model(f"local-dir:{out}").eval()
    assert loaded.timesteps == 2 and loaded.unroll == "standard"
    assert "MIT" in (out / "README.md").read_text()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.forward_timesteps(x).logits, source.forward_timesteps(x).logits)
