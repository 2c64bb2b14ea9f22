"""Loading, building and saving: every bad value refused by name, nothing half-done.

Each test here tries what a careless or unlucky user does (odd types, edited config.json files,
NaN weights, killed processes, wrong channels) and asserts the named error or the exact result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_
from safetensors.torch import save_file

import blt_models as bm
from blt_models import _published
from blt_models._pretrained import PretrainedCfg
from blt_models._published import resolve_weights_file
from blt_models.cli import main

GRAY = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _small(**kw):
    torch.manual_seed(0)
    return bm.create_model("blt_bl", num_layers=4, num_classes=5, timesteps=4, **kw).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return bm.save_pretrained(randomize_(_small()), tmp_path_factory.mktemp("pub") / "m")


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(saved, out)
    return out


def _edit(folder: Path, edit) -> Path:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    return path


def _logits(model, x):
    with torch.no_grad():
        return model.forward_timesteps(x).logits


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------ 1. in_chans adaptation
def test_pretrained_gray_model_adapted_to_rgb():
    gray = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True).eval()
    rgb = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True, in_chans=3).eval()
    assert rgb.in_chans == 3 and rgb.conv_input.weight.shape[1] == 3
    assert rgb.pretrained_cfg.input_size[0] == 3 and len(rgb.pretrained_cfg.mean) == 1
    # Repeated and scaled filters: an RGB image with equal channels gives the gray responses.
    torch.testing.assert_close(_logits(rgb, GRAY.expand(-1, 3, -1, -1)), _logits(gray, GRAY))
    assert rgb.model_args["in_chans"] == 3


def test_pretrained_rgb_weights_adapted_to_gray(saved, tmp_path):
    rgb = bm.create_model(f"local-dir:{saved}").eval()
    gray = bm.create_model(f"local-dir:{saved}", in_chans=1).eval()
    assert gray.conv_input.weight.shape[1] == 1 and gray.in_chans == 1
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(_logits(gray, x), _logits(rgb, x.expand(-1, 3, -1, -1)))
    assert len(gray.pretrained_cfg.mean) == 1  # averaged statistics for the summed filters
    # The adapted model saves and reloads to itself.
    again = bm.create_model(f"local-dir:{bm.save_pretrained(gray, tmp_path / 'g')}").eval()
    assert torch.equal(_logits(again, x), _logits(gray, x))


def test_cli_in_chans_adapts_pretrained_weights(tmp_path, capsys):
    pytest.importorskip("h5py")
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "img.png")
    out = tmp_path / "f.h5"
    code = main(["extract", "blt_bl_tiny.fashion_mnist", str(tmp_path / "img.png"), "--pretrained",
                 "--in-chans", "3", "--out", str(out), "--layers", "layer0", "--no-progress",
                 "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert out.exists()


# ------------------------------------------------------------------------ 2. values where they enter
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"timesteps": -1}, r"timesteps = -1 \(argument\): must be between 1 and 10,000"),
        ({"timesteps": 10_001}, "between 1 and 10,000"),
        ({"timesteps": 2.0}, "must be an integer, not float"),
        ({"timesteps": True}, "must be an integer, not bool"),
        ({"num_classes": -1}, r"num_classes = -1 \(argument\)"),
        ({"num_classes": "10"}, "must be an integer, not str"),
        ({"in_chans": 0}, r"in_chans = 0 \(argument\)"),
        ({"num_layers": 4.7}, r"num_layers = 4.7 \(argument\): must be an integer"),
        ({"channels": [64, 0, 256, 512], "sizes": [56, 28, 14, 7]}, r"channels\[1\] = 0"),
        ({"channels": [64, 128, 256, 512], "sizes": [56, 0, 14, 7]}, r"sizes\[1\] = 0"),
        ({"pool": "mean"}, r"pool='mean' \(argument\): ValueError: pool must be one of"),
        ({"bogus": 1}, r"blt_bl takes no argument\(s\) bogus \(bogus from argument\)"),
    ],
)
def test_bad_constructor_values_are_named(kwargs, match):
    with pytest.raises(bm.ConfigValueError, match=match):
        bm.create_model("blt_bl", **kwargs)


def test_create_model_refuses_a_non_name():
    with pytest.raises(bm.ConfigValueError, match="model_name = None"):
        bm.create_model(None)  # type: ignore[arg-type]
    with pytest.raises(bm.ConfigValueError, match="pretrained = 'yes'"):
        bm.create_model("blt_b", pretrained="yes")  # type: ignore[arg-type]


def test_numpy_and_tensor_integers_are_integers():
    for value in (np.int64(5), torch.tensor(5), np.int32(5)):
        model = bm.create_model("blt_bl", num_layers=4, timesteps=value, num_classes=np.int64(3))
        assert model.timesteps == 5 and type(model.timesteps) is int
        assert type(model.model_args["timesteps"]) is int and model.num_classes == 3
    out = _small().forward_timesteps(torch.rand(1, 3, 32, 32), timesteps=np.int64(5))
    assert out.timesteps == 5
    with pytest.raises(bm.TimestepsError, match="at most 10,000"):
        _small().forward_timesteps(torch.rand(1, 3, 32, 32), timesteps=10**6)
    with pytest.raises(bm.ConfigValueError, match="not Tensor"):
        bm.create_model("blt_bl", timesteps=torch.tensor([5]))


def test_num_classes_zero_still_builds():
    assert bm.create_model("blt_bl", num_layers=4, num_classes=0).num_classes == 0


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["model_args"].update(timesteps=-1), r"timesteps = -1 \(.*config.json \(model_args.timesteps\)\)"),
        (lambda c: c["model_args"].update(num_layers=4.7), r"num_layers = 4.7 \(.*config.json \(model_args.num_layers\)\)"),
        (lambda c: c["model_args"].update(sizes=[56, 0, 14, 7]), r"sizes\[1\] = 0 \(.*config.json"),
        (lambda c: c["model_args"].update(colour="red"), r"takes no argument\(s\) colour \(colour from .*config.json \(model_args.colour\)\)"),
        (lambda c: c["pretrained_cfg"].update(mean="abc"), r"mean = 'abc' \(.*config.json \(pretrained_cfg.mean\)\)"),
        (lambda c: c["pretrained_cfg"].update(std=[0.2, 0.0, 0.2]), r"std\[1\] = 0.0 .*must be > 0"),
        (lambda c: c["pretrained_cfg"].update(input_size=[3, 224]), r"input_size = \[3, 224\] .*\[C, H, W\]"),
        (lambda c: c["pretrained_cfg"].update(mean=[0.5, 0.5]), "needs 1 or 3 entries"),
        (lambda c: c["pretrained_cfg"].update(num_classes=2.5), r"pretrained_cfg.num_classes\)\): must be an integer"),
    ],
)  # fmt: skip
def test_bad_config_values_name_the_file(saved, tmp_path, edit, match):
    folder = _copy(saved, tmp_path)
    _edit(folder, edit)
    for pretrained in (True, False):
        with pytest.raises(bm.ConfigValueError, match=match):
            bm.create_model(f"local-dir:{folder}", pretrained=pretrained)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.update(format="timm"), "has format 'timm', not 'blt-models'"),
        (lambda c: c.pop("format"), "has format None"),
        (lambda c: c.update(format_version="1"), "format_version = '1': must be a positive"),
        (lambda c: c.update(format_version=2), "reads up to 1. Upgrade"),
        (lambda c: c.update(architecture="hf-hub:org/x"), "must be a registered architecture"),
        (lambda c: c.update(architecture=["blt_bl"]), "must name a registered architecture"),
    ],
)
def test_bad_format_fields(saved, tmp_path, edit, match):
    folder = _copy(saved, tmp_path)
    _edit(folder, edit)
    with pytest.raises((bm.PublishedFormatError, bm.ConfigValueError), match=match):
        bm.create_model(f"local-dir:{folder}")


def test_non_strict_json_is_refused(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    path = folder / "config.json"
    path.write_text(path.read_text().replace('"top1"', '"x": NaN, "top1"', 1))
    text = path.read_text().replace('"crop_pct": 0.875', '"crop_pct": NaN')
    path.write_text(text)
    with pytest.raises(bm.PublishedFormatError, match="NaN"):
        bm.create_model(f"local-dir:{folder}")


def test_convert_refuses_negative_timesteps(tmp_path, capsys):
    torch.save(_small().state_dict(), tmp_path / "w.pth")
    code = main(["convert", str(tmp_path / "w.pth"), str(tmp_path / "out"), "--arch", "blt_bl",
                 "--timesteps", "-1"])  # fmt: skip
    assert code == 1 and "timesteps = -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_save_records_changed_timesteps_and_refuses_bad_ones(tmp_path):
    model = _small()
    model.timesteps = 6
    folder = bm.save_pretrained(model, tmp_path / "six")
    assert bm.create_model(f"local-dir:{folder}").timesteps == 6
    model.timesteps = -1
    with pytest.raises(bm.ConfigValueError, match="timesteps = -1"):
        bm.save_pretrained(model, tmp_path / "neg")
    assert not (tmp_path / "neg").exists()


# ------------------------------------------------------------------------ 3. the hash check
@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.pop("weights"), "no 'weights' record"),
        (lambda c: c["weights"].update(sha256=""), "sha256 = ''"),
        (lambda c: c["weights"].update(sha256="z" * 64), "must be 64 hex digits"),
        (
            lambda c: c["weights"].update(sha256=c["weights"]["sha256"][:12]),
            "must be 64 hex digits",
        ),
        (lambda c: c["weights"].update(sha256=None), "sha256 = None"),
    ],
)
def test_hash_is_never_skipped_silently(saved, tmp_path, edit, match):
    folder = _copy(saved, tmp_path)
    _edit(folder, edit)
    with pytest.raises(bm.PublishedFormatError, match=match + ".*verify=False"):
        bm.create_model(f"local-dir:{folder}")
    with pytest.warns(bm.UnverifiedWeightsWarning, match="UNVERIFIED: loaded with verify=False"):
        model = bm.create_model(f"local-dir:{folder}", verify=False)
    assert model.num_classes == 5
    # The architecture alone needs no weights, and so no hash.
    assert bm.create_model(f"local-dir:{folder}", pretrained=False).num_classes == 5


def test_registered_sources_without_a_pin_warn(tmp_path, monkeypatch):
    weights = tmp_path / "w.safetensors"
    save_file(_small().state_dict(), weights)
    monkeypatch.setattr("blt_models._published.packaged_file", lambda name: weights)
    cfg = PretrainedCfg(architecture="blt_bl", tag="t", file="w.safetensors")
    with pytest.warns(bm.UnverifiedWeightsWarning, match="pins no SHA-256"):
        path, digest = resolve_weights_file(cfg)
    assert path == weights and len(digest) == 64
    for bad in ("", "abc", "xyz12345"):
        with pytest.raises(bm.ConfigValueError, match="sha256 = "):
            resolve_weights_file(cfg.replace(sha256=bad))
    assert resolve_weights_file(cfg.replace(sha256=digest[:8]))[1] == digest  # torch.hub prefix
    with pytest.raises(bm.HashMismatchError):
        resolve_weights_file(cfg.replace(sha256="0" * 64))
    with pytest.warns(bm.UnverifiedWeightsWarning, match="verify=False"):
        resolve_weights_file(cfg.replace(sha256="0" * 64), verify=False)


def test_packaged_weights_are_verified():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pinned: no unverified warning
        model = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True)
    assert model.pretrained_cfg.sha256.startswith("a3074dcc")


# ------------------------------------------------------------------------ 4. NaN / Inf / integers
def test_nan_and_inf_weights_are_refused_by_name(tmp_path):
    sd = _small().state_dict()
    sd["conv_1_1.weight"][0, 0, 0, 0] = float("nan")
    sd["norm_2.bias"][3] = float("inf")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(bm.InvalidWeightsError) as info:
        _small(checkpoint_path=tmp_path / "nan.pth")
    message = str(info.value)
    assert (
        "conv_1_1.weight: 1 NaN and 0 Inf" in message and "norm_2.bias: 0 NaN and 1 Inf" in message
    )
    assert "check_values=False" in message
    with pytest.warns(UserWarning, match="check_values=False"):
        model = _small(checkpoint_path=tmp_path / "nan.pth", check_values=False)
    assert torch.isnan(model.conv_1_1.weight).any()


def test_integer_weights_are_refused(tmp_path):
    sd = _small().state_dict()
    sd["conv_input.weight"] = sd["conv_input.weight"].round().to(torch.int64)
    save_file(sd, tmp_path / "int.safetensors")
    with pytest.raises(
        bm.InvalidWeightsError, match="conv_input.weight: dtype int64, not floating"
    ):
        _small(checkpoint_path=tmp_path / "int.safetensors")


def test_convert_refuses_nan_weights_before_writing(tmp_path, capsys):
    source = _small()
    sd = source.state_dict()
    sd["read_out.linear.bias"][0] = float("nan")
    args = argparse.Namespace(model="blt_bl", num_layers=4, recurrent_steps=4, num_classes=5)
    torch.save({"model": sd, "args": args}, tmp_path / "ckpt.pth")
    assert main(["convert", str(tmp_path / "ckpt.pth"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "read_out.linear.bias: 1 NaN" in err and "does not reload" not in err
    assert not (tmp_path / "out").exists()


def test_save_refuses_nan_weights(tmp_path):
    model = _small()
    with torch.no_grad():
        model.norm_0.weight[0] = float("nan")
    with pytest.raises(bm.InvalidWeightsError, match="norm_0.weight"):
        bm.save_pretrained(model, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()


# ------------------------------------------------------------------------ 5. reference args
def _reference_file(path: Path, **args) -> Path:
    torch.save({"model": _small().state_dict(), "args": argparse.Namespace(**args)}, path)
    return path


@pytest.mark.parametrize(
    "args, match",
    [
        ({"model": "hf-hub:org/evil"}, "may only name a registered architecture"),
        ({"model": "local-dir:/tmp"}, "may only name a registered architecture"),
        ({"model": "blt_bl.imagenet"}, "may only name a registered architecture"),
        ({"model": 5}, r"args.model \(.*\) = 5: must be the name"),
        (
            {"model": "blt_bl", "recurrent_steps": [10]},
            r"args.recurrent_steps = \[10\] \(checkpoint",
        ),
        ({"model": "blt_bl", "num_layers": "4"}, r"args.num_layers = '4'"),
        ({"model": "blt_bl", "pool": 3}, r"args.pool = 3"),
    ],
)
def test_reference_args_are_checked(tmp_path, monkeypatch, args, match):
    def no_network(*a, **k):
        raise AssertionError("a checkpoint's contents must not trigger a download")

    monkeypatch.setattr("blt_models._hub.hub_download", no_network)
    monkeypatch.setattr("blt_models._published.hub_download", no_network)
    path = _reference_file(tmp_path / "ckpt.pth", **{"num_layers": 4, "recurrent_steps": 4,
                                                     "num_classes": 5, **args})  # fmt: skip
    with pytest.raises(bm.ConfigValueError, match=match):
        bm.load_reference_checkpoint(path)
    assert main(["convert", str(path), str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_reference_args_that_are_not_a_namespace(tmp_path):
    torch.save({"model": _small().state_dict(), "args": ["blt_bl"]}, tmp_path / "c.pth")
    with pytest.raises(bm.ConfigValueError, match="args .* is a list, not the argparse.Namespace"):
        bm.load_reference_checkpoint(tmp_path / "c.pth")


def test_reference_args_values_name_their_origin(tmp_path):
    path = _reference_file(tmp_path / "c.pth", model="blt_bl", num_layers=7, recurrent_steps=4,
                           num_classes=5)  # fmt: skip
    with pytest.raises(bm.ConfigValueError, match=r"num_layers=7 \(args.num_layers of checkpoint"):
        bm.load_reference_checkpoint(path)


# ------------------------------------------------------------------------ 6. saving
_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import blt_models as bm
    from blt_models import _published

    target, when = sys.argv[1], sys.argv[2]
    model = bm.create_model("blt_bl", num_layers=4, num_classes=int(sys.argv[3]), timesteps=4)
    if when == "staging":
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        _published._write_card = die
    else:  # between the two renames of the swap
        real, calls = os.rename, []
        def rename(src, dst):
            calls.append(src)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
        _published.os.rename = rename
    bm.save_pretrained(model, target)
    """
)


def _killed_save(target: Path, when: str, num_classes: int) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(target), when, str(num_classes)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr


def test_killed_saves_leave_nothing_behind(saved, tmp_path):
    target = _copy(saved, tmp_path)
    _killed_save(target, "staging", 7)
    debris = [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.blt-tmp")]
    assert len(debris) == 1  # the kill left its staging folder...
    assert bm.create_model(f"local-dir:{target}").num_classes == 5  # ...and the old folder
    _killed_save(target, "swap", 7)  # killed with the old folder moved away, the new complete
    assert not target.exists()
    # The next load completes the interrupted swap and removes what dead writers left.
    assert bm.create_model(f"local-dir:{target}").num_classes == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_interrupted_swap_without_a_new_folder_restores_the_old(saved, tmp_path):
    target = _copy(saved, tmp_path)
    old = tmp_path / f".copy.blt-old.{_published._host()}.{_dead_pid()}"
    os.rename(target, old)
    assert bm.create_model(f"local-dir:{target}").num_classes == 5  # restored on load
    assert not old.exists()


def test_stale_staging_is_cleaned_and_live_staging_kept(saved, tmp_path):
    host = _published._host()
    dead = tmp_path / f".m.blt-tmp.{host}.{_dead_pid()}.abc_1"
    live = tmp_path / f".m.blt-tmp.{host}.{os.getppid()}.abc_2"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
    bm.save_pretrained(_small(), tmp_path / "m")
    assert not dead.exists() and live.exists()


def test_save_into_the_current_directory_is_refused(saved, tmp_path, monkeypatch):
    folder = _copy(saved, tmp_path)
    monkeypatch.chdir(folder)
    with pytest.raises(bm.ConfigValueError, match="save_directory = ''"):
        bm.save_pretrained(_small(), "")
    with pytest.raises(bm.SaveTargetError, match="the current directory"):
        bm.save_pretrained(_small(), ".")
    assert Path.cwd() == folder.resolve() and sorted(os.listdir(".")) == sorted(
        _published.PUBLISHED_FILES
    )


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = bm.save_pretrained(_small(), tmp_path / "m")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == dict.fromkeys(_published.PUBLISHED_FILES, 0o666 & ~umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask


def test_nan_metrics_are_written_as_null(tmp_path):
    folder = bm.save_pretrained(
        _small(), tmp_path / "m", metrics={"top1": float("nan"), "per_step": [1.0, float("inf")]}
    )
    text = (folder / "config.json").read_text()
    config = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert config["pretrained_cfg"]["metrics"] == {"top1": None, "per_step": [1.0, None]}


def test_save_after_reset_classifier(tmp_path):
    model = randomize_(_small())
    model.reset_classifier(3)
    folder = bm.save_pretrained(model, tmp_path / "m")
    loaded = bm.create_model(f"local-dir:{folder}").eval()
    assert loaded.num_classes == 3 and loaded.pretrained_cfg.num_classes == 3
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(_logits(loaded, x), _logits(model.eval(), x))


def test_changed_architecture_says_how_to_build_it(tmp_path):
    model = _small()
    model.conv_input = torch.nn.Conv2d(2, 64, 7, 2, 3)
    with pytest.raises(bm.ConfigValueError, match=r"create_model\(\.\.\., <argument>=\.\.\.\)"):
        bm.save_pretrained(model, tmp_path / "m")


# ------------------------------------------------------------------------ 7. messages
def test_unreadable_files_say_why(tmp_path, monkeypatch):
    from blt_models import _checkpoint

    path = tmp_path / "w.safetensors"
    save_file(_small().state_dict(), path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_checkpoint, "open", denied, raising=False)
    with pytest.raises(bm.UnreadableCheckpointError, match="no permission to read .*chmod"):
        _small(checkpoint_path=path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_permission_denied_for_real(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_small().state_dict(), path)
    path.chmod(0)
    with pytest.raises(bm.UnreadableCheckpointError, match="no permission"):
        _small(checkpoint_path=path)


def test_folder_given_as_a_checkpoint(saved):
    with pytest.raises(bm.UnreadableCheckpointError, match="is a folder.*local-dir:"):
        _small(checkpoint_path=saved)


def test_file_format_is_read_from_the_content(tmp_path):
    src = randomize_(_small())
    save_file(src.state_dict(), tmp_path / "weights.pth")  # safetensors under a .pth name
    torch.save(src.state_dict(), tmp_path / "weights.safetensors")  # and the reverse
    for name in ("weights.pth", "weights.safetensors"):
        model = _small(checkpoint_path=tmp_path / name)
        assert torch.equal(model.norm_1.bias, src.norm_1.bias)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_messages_are_plain_and_specific(tmp_path):
    torch.save({"model": {}, "payload": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(bm.UnreadableCheckpointError) as info:
        _small(checkpoint_path=tmp_path / "evil.pth")
    message = str(info.value)
    assert "\x1b[" not in message and "weights_only=False" not in message
    assert "pickled global 'print'" in message and "Python objects other than tensors" in message
    torch.save(_small().state_dict(), tmp_path / "ok.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "ok.pth").read_bytes()[:5000])
    with pytest.raises(bm.UnreadableCheckpointError, match="truncated or corrupted") as info:
        _small(checkpoint_path=tmp_path / "cut.pth")
    assert "re-save" not in str(info.value)


def test_missing_file_is_a_named_error():
    with pytest.raises(bm.CheckpointNotFoundError, match="not found"):
        _small(checkpoint_path="/nonexistent/w.pth")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtype_mismatch_is_an_input_error(dtype):
    model = _small()
    with pytest.raises(bm.InputError, match=f"input dtype {str(dtype)[6:]} does not match"):
        model(torch.rand(1, 3, 32, 32, dtype=dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision stays allowed
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_channel_advice_points_the_right_way():
    gray_model = bm.create_model("blt_bl_tiny")
    with pytest.raises(bm.InputError, match=r"grayscale, e.g. x.mean\(-3, keepdim=True\)") as info:
        gray_model(torch.rand(1, 3, 32, 32))
    assert "expand" not in str(info.value)
    with pytest.raises(bm.InputError, match=r"x.expand\(-1, 3, -1, -1\)"):
        _small()(torch.rand(1, 1, 32, 32))
