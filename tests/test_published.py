"""The published format: save_pretrained, local-dir: and hf-hub: loading, hash checks, push.

No network: Hub loading runs the real huggingface_hub download code against a cache laid out in
a temporary folder with offline mode on; pushing is exercised up to the network boundary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch

import blt_models as bm
from blt_models import _published
from blt_models._pretrained import PretrainedCfg
from blt_models._published import resolve_weights_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bm.create_model("blt_bl", num_layers=4, num_classes=10, timesteps=4).eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> Path:
    metrics = {"top1": 0.5, "per_step": {"step": [3], "top1": [0.5]}}
    return bm.save_pretrained(
        model, tmp_path_factory.mktemp("pub") / "blt_bl_small", metrics=metrics, license="cc-by-4.0"
    )


def _logits(m):
    with torch.no_grad():
        return m.forward_timesteps(X).logits


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(saved, out)
    return out


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A Hugging Face cache in tmp_path, offline mode on; returns add(repo_id, folder, files)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the environment into its constants at import time.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    def add(
        repo_id: str, folder: Path, files=("config.json", "model.safetensors", "README.md")
    ) -> Path:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / COMMIT
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(COMMIT)
        for name in files:
            data = (folder / name).read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
        return repo

    return add


# ------------------------------------------------------------------------------- saving
def test_save_pretrained_writes_three_files_and_schema(saved, model):
    assert sorted(p.name for p in saved.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no staging left
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == "blt-models" and config["format_version"] == 1
    assert config["architecture"] == "blt_bl"
    args = config["model_args"]
    assert args["num_layers"] == 4 and args["num_classes"] == 10 and args["timesteps"] == 4
    assert args["pool"] == "max" and args["unroll"] == "biological"
    assert args["channels"] == [64, 128, 256, 512] and args["nominal_size"] == 224
    pcfg = config["pretrained_cfg"]
    for key in ("mean", "std", "input_size", "interpolation", "num_classes", "timesteps", "unroll",
                "license", "training_data", "citation", "class_names"):  # fmt: skip
        assert key in pcfg
    assert "hf_hub_id" not in pcfg and "sha256" not in pcfg  # locations are not part of a folder
    weights = config["weights"]
    assert (
        weights["sha256"] == hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()
    )
    assert weights["size"] == (saved / "model.safetensors").stat().st_size
    assert weights["num_tensors"] == len(model.state_dict())


def test_model_card(saved):
    card = (saved / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: blt-models" in front and "license: cc-by-4.0" in front
    assert '- "blt_bl"' in front
    assert 'bm.create_model("local-dir:' in card
    assert "| step | top1 |" in card and "| 3 | 0.5 |" in card  # per-step accuracy table
    card = _published.model_card(
        json.loads((saved / "config.json").read_text()), repo_id="org/repo"
    )
    assert 'bm.create_model("hf-hub:org/repo", pretrained=True)' in card


def test_untrained_model_claims_no_provenance(model, tmp_path):
    cfg = model.pretrained_cfg
    assert cfg.tag == "" and cfg.license is None and cfg.training_data is None
    card = (bm.save_pretrained(model, tmp_path / "untrained") / "README.md").read_text()
    assert "license:" not in card.split("---")[1] and "ImageNet-1k" not in card


def test_local_dir_loads_to_identical_outputs(saved, model):
    loaded = bm.create_model(f"local-dir:{saved}", pretrained=True).eval()
    assert torch.equal(_logits(loaded), _logits(model))
    assert loaded.model_args == model.model_args
    assert loaded.timesteps == 4 and loaded.num_classes == 10
    assert (
        loaded.pretrained_cfg.sha256
        == json.loads((saved / "config.json").read_text())["weights"]["sha256"]
    )
    assert loaded.pretrained_cfg.metrics["top1"] == 0.5


def test_local_dir_loads_weights_by_default(saved, model):
    loaded = bm.create_model(f"local-dir:{saved}").eval()
    assert torch.equal(_logits(loaded), _logits(model.eval()))


def test_local_dir_with_pretrained_false_is_architecture_only(saved, model):
    fresh = bm.create_model(f"local-dir:{saved}", pretrained=False, timesteps=6)
    assert fresh.timesteps == 6 and fresh.num_classes == 10
    assert not torch.equal(fresh.conv_input.weight, model.conv_input.weight)


def test_new_head_after_loading_is_saved_and_reloads(saved, tmp_path):
    tuned = bm.create_model(f"local-dir:{saved}", pretrained=True, num_classes=3).eval()
    assert tuned.num_classes == 3 and tuned.model_args["num_classes"] == 3
    again = bm.create_model(
        f"local-dir:{bm.save_pretrained(tuned, tmp_path / 'tuned')}", pretrained=True
    ).eval()
    assert torch.equal(_logits(again), _logits(tuned))


def test_model_without_pooling_is_refused_not_saved_as_pooling(saved, tmp_path):
    """global_pool='' (prune_intermediate_layers, reset_classifier(0, '')) was saved without
    it: the reloaded model returned pooled [B, C] where the saved one returned [B, C, H, W]."""
    pruned = bm.create_model(f"local-dir:{saved}", pretrained=True).eval()
    pruned.prune_intermediate_layers([-1])
    with pytest.raises(bm.errors.ConfigValueError, match="global_pool=''"):
        bm.save_pretrained(pruned, tmp_path / "pruned")
    assert not (tmp_path / "pruned").exists()
    # The way the message gives: save it pooling, load it without.
    pruned.global_pool = "avg"
    again = bm.create_model(
        f"local-dir:{bm.save_pretrained(pruned, tmp_path / 'pruned')}", global_pool=""
    ).eval()
    pruned.global_pool = ""
    x = torch.randn(2, *pruned.pretrained_cfg.input_size)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x))


def test_save_is_atomic(model, saved, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_published, "_write_card", boom)
    with pytest.raises(OSError, match="disk full"):
        bm.save_pretrained(model, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a staging folder
    existing = _copy(saved, tmp_path)
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    with pytest.raises(OSError, match="disk full"):
        bm.save_pretrained(model, existing)
    assert {p.name: p.read_bytes() for p in existing.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_save_refuses_folder_with_other_files(model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        bm.save_pretrained(model, tmp_path)


def test_save_needs_a_zoo_model():
    with pytest.raises(ValueError, match="create_model"):
        bm.save_pretrained(torch.nn.Linear(2, 2), "unused")


# ------------------------------------------------------------------------------- errors
def test_corrupted_weights_fail_the_hash_check(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    expected = json.loads((folder / "config.json").read_text())["weights"]["sha256"]
    got = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(bm.HashMismatchError) as info:
        bm.create_model(f"local-dir:{folder}", pretrained=True)
    assert expected in str(info.value) and got in str(info.value)


def test_truncated_safetensors_gives_a_clear_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(bm.HashMismatchError, match="truncated"):
        bm.create_model(f"local-dir:{folder}", pretrained=True)
    # Without a recorded hash the folder is refused; loaded knowingly unverified, safetensors
    # itself refuses the file, and we say why.
    _edit_config(folder, lambda c: c.pop("weights"))
    with pytest.raises(bm.PublishedFormatError, match="no 'weights' record.*verify=False"):
        bm.create_model(f"local-dir:{folder}", pretrained=True)
    with pytest.warns(bm.UnverifiedWeightsWarning, match="UNVERIFIED"):
        with pytest.raises(bm.UnreadableCheckpointError, match="truncated or corrupted"):
            bm.create_model(f"local-dir:{folder}", pretrained=True, verify=False)


def test_unknown_architecture_in_config(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit_config(folder, lambda c: c.update(architecture="blt_nope"))
    with pytest.raises(bm.UnknownModelError, match="blt_nope.*Upgrade"):
        bm.create_model(f"local-dir:{folder}", pretrained=True)


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    _edit_config(folder, lambda c: c["model_args"].update(num_classes=11))
    with pytest.raises(
        bm.CheckpointMismatchError,
        match=r"read_out\.linear\.weight: checkpoint \(10, 512\) vs model \(11, 512\)",
    ):
        bm.create_model(f"local-dir:{folder}", pretrained=True)


def test_not_a_published_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        bm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        bm.create_model(f"local-dir:{tmp_path / 'nope'}")


# ------------------------------------------------------------------------------- hub (offline)
def test_hf_hub_loads_from_the_cache_offline(saved, model, offline_hub):
    offline_hub("org/blt-small", saved)
    loaded = bm.create_model("hf-hub:org/blt-small", pretrained=True).eval()
    assert torch.equal(_logits(loaded), _logits(model))
    assert loaded.pretrained_cfg.hf_hub_id == "org/blt-small"
    assert loaded.pretrained_cfg.hf_hub_revision == COMMIT  # the commit the files came from
    pinned = bm.create_model(f"hf-hub:org/blt-small@{COMMIT}", pretrained=True).eval()
    assert torch.equal(_logits(pinned), _logits(model))


def test_hf_hub_hash_is_checked_on_cache_hits(saved, offline_hub):
    repo = offline_hub("org/blt-small", saved)
    blob = (repo / "snapshots" / COMMIT / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(bm.HashMismatchError, match="expected"):
        bm.create_model("hf-hub:org/blt-small", pretrained=True)


def test_hf_hub_offline_and_not_cached(offline_hub):
    with pytest.raises(bm.WeightsUnavailableError) as info:
        bm.create_model("hf-hub:org/not-cached", pretrained=True)
    message = str(info.value)
    assert "org/not-cached/config.json" in message and "offline" in message
    assert "hf download org/not-cached" in message and "snapshot_download" in message


def test_hf_hub_weights_file_not_cached(saved, offline_hub):
    offline_hub("org/config-only", saved, files=("config.json",))
    with pytest.raises(bm.WeightsUnavailableError, match="org/config-only/model.safetensors"):
        bm.create_model("hf-hub:org/config-only", pretrained=True)
    # The architecture alone needs only config.json.
    assert bm.create_model("hf-hub:org/config-only", pretrained=False).num_classes == 10


def test_hf_hub_bad_names():
    with pytest.raises(ValueError, match="hf-hub:org/name"):
        bm.create_model("hf-hub:no-slash", pretrained=True)


def test_registered_tag_with_a_hub_source(saved, offline_hub):
    offline_hub("org/blt-small", saved)
    # Zoo-format repo: the hash recorded in its config.json is verified.
    path, _ = resolve_weights_file(
        PretrainedCfg(architecture="blt_bl", tag="t", hf_hub_id="org/blt-small")
    )
    assert path.name == "model.safetensors"
    # A pinned hash in the registry wins, and is checked too.
    pinned = PretrainedCfg(
        architecture="blt_bl", tag="t", hf_hub_id="org/blt-small", sha256="00ff00ff"
    )
    with pytest.raises(bm.HashMismatchError, match="expected 00ff00ff"):
        resolve_weights_file(pinned)


# ------------------------------------------------------------------------------- push
def test_push_to_hub_offline_mode(model, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(bm.HubUploadError, match="offline mode"):
        bm.push_to_hub(model, "org/blt-small", token="hf_not_a_real_token")


def test_push_to_hub_unreachable_endpoint(model, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the suite runs offline
    with socket.socket() as sock:  # a local port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        bm.HubUploadError, match=f"could not reach the Hugging Face Hub at http://127.0.0.1:{port}"
    ):
        bm.push_to_hub(
            model, "org/blt-small", token="hf_not_a_real_token", endpoint=f"http://127.0.0.1:{port}"
        )
