"""Without network: published weights fail within seconds with every route; `blt-models prefetch`.

Runs the real huggingface_hub / torch.hub code against endpoints that do not answer (a closed
local port, a non-routable address) and against local caches and file:// URLs.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from safetensors.torch import save_file

import blt_models as bm
from blt_models import _hub, _registry
from blt_models._pretrained import PretrainedCfg
from blt_models.cli import main

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def online(tmp_path, monkeypatch):
    """Offline mode off, an empty HF cache and torch.hub dir; returns set_endpoint(url)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("BLT_MODELS_PROBE_TIMEOUT", "2")
    monkeypatch.setattr(_hub, "_probe_cache", {})
    # torch.hub.set_dir would pin the dir for the rest of the session (TORCH_HOME ignored after).
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))

    def set_endpoint(url: str) -> None:  # what HF_ENDPOINT=url does at import
        monkeypatch.setattr(hf_constants, "ENDPOINT", url)
        template = url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)

    set_endpoint(f"http://127.0.0.1:{_closed_port()}")
    return set_endpoint


@pytest.fixture
def registered(monkeypatch):
    """register(cfg): a pretrained config in the registry for this test only."""

    def register(cfg: PretrainedCfg) -> str:
        tags = dict(_registry._pretrained_cfgs.get(cfg.architecture, {}))
        tags[cfg.tag] = cfg
        monkeypatch.setitem(_registry._pretrained_cfgs, cfg.architecture, tags)
        return cfg.name

    return register


def _weights(tmp_path: Path) -> tuple[Path, str]:
    torch.manual_seed(0)
    model = bm.create_model("blt_bl", num_layers=4, num_classes=3, timesteps=4)
    path = tmp_path / "src" / "w.safetensors"
    path.parent.mkdir()
    save_file(model.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("endpoint", ["closed-port", "black-hole", "https://no-such-host.invalid"])
def test_hub_weights_fail_fast_without_network(online, endpoint, monkeypatch):
    if endpoint == "black-hole":  # accepts connections, never answers (a dropping firewall)
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        monkeypatch.setattr(hf_constants, "HF_HUB_ETAG_TIMEOUT", 2)
        online(f"http://127.0.0.1:{hole.getsockname()[1]}")
    elif endpoint != "closed-port":
        online(endpoint)  # no DNS
    start = time.perf_counter()
    with pytest.raises(bm.WeightsUnavailableError) as info:
        bm.create_model("blt_vs.imagenet", pretrained=True)
    elapsed = time.perf_counter() - start
    assert elapsed < 8, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert "not reachable" in message and "blt-models prefetch blt_vs.imagenet" in message
    assert "checkpoint_path=" in message and "hf download novelmartis/blt_vs_model" in message


def test_url_weights_fail_fast_without_network(online, registered, tmp_path):
    name = registered(PretrainedCfg(
        architecture="blt_bl", tag="far", url=f"http://127.0.0.1:{_closed_port()}/w.pth",
        sha256="0" * 64,
    ))  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(bm.WeightsUnavailableError, match="not reachable.*prefetch blt_bl.far"):
        bm.create_model(name, pretrained=True)
    assert time.perf_counter() - start < 8


def test_unreachable_hub_uses_the_cache_at_once(online, tmp_path, registered):
    path, sha = _weights(tmp_path)
    repo = Path(hf_constants.HF_HUB_CACHE) / "models--org--raw"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT / "w.safetensors").write_bytes(path.read_bytes())
    name = registered(PretrainedCfg(
        architecture="blt_bl", tag="raw", hf_hub_id="org/raw", hf_hub_filename="w.safetensors",
        sha256=sha, num_classes=3, timesteps=4, model_args={"num_layers": 4},
    ))  # fmt: skip
    start = time.perf_counter()
    model = bm.create_model(name, pretrained=True)
    assert time.perf_counter() - start < 8 and model.pretrained_cfg.sha256 == sha


def test_prefetch_file_url_fills_the_torch_hub_cache(online, registered, tmp_path, capsys):
    path, sha = _weights(tmp_path)
    name = registered(PretrainedCfg(
        architecture="blt_bl", tag="local", url=path.as_uri(), sha256=sha, num_classes=3,
        timesteps=4, model_args={"num_layers": 4},
    ))  # fmt: skip
    assert main(["prefetch", name]) == 0
    out = capsys.readouterr().out
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "w.safetensors"
    assert f"{name}: {cached}" in out and sha in out and "verified" in out
    path.unlink()  # the source is gone: the cache alone serves create_model
    model = bm.create_model(name, pretrained=True)
    assert model.pretrained_cfg.sha256 == sha
    # A damaged cache entry is caught by the next prefetch (and load).
    cached.write_bytes(cached.read_bytes()[:-10])
    assert main(["prefetch", name]) == 1
    assert "does not match the pinned hash" in capsys.readouterr().err


def test_prefetch_of_unpinned_weights_says_unverified(online, registered, tmp_path, capsys):
    path, _ = _weights(tmp_path)
    name = registered(PretrainedCfg(
        architecture="blt_bl", tag="nopin", url=path.as_uri(), sha256=None, num_classes=3,
        timesteps=4, model_args={"num_layers": 4},
    ))  # fmt: skip
    assert main(["prefetch", name]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{name}: ") and line.endswith("UNVERIFIED: no SHA-256 is pinned for it)")


def test_prefetch_hub_name_from_the_cache(tmp_path, capsys, monkeypatch):
    import shutil

    torch.manual_seed(0)
    folder = bm.save_pretrained(
        bm.create_model("blt_bl", num_layers=4, num_classes=3), tmp_path / "m"
    )
    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--org--m"
    for name in ("config.json", "model.safetensors"):
        (repo / "snapshots" / COMMIT).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, repo / "snapshots" / COMMIT / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert main(["prefetch", "hf-hub:org/m", "blt_bl_tiny.fashion_mnist"]) == 0
    out = capsys.readouterr().out
    assert "hf-hub:org/m: " in out and "blt_bl_tiny.fashion_mnist: " in out


def test_prefetch_all_reports_each_name_quickly(online, capsys):
    start = time.perf_counter()
    code = main(["prefetch", "--all"])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert code == 1  # no network here: the Hub and URL sources fail...
    assert "blt_bl_tiny.fashion_mnist: " in captured.out  # ...the packaged weights do not
    for name in bm.list_pretrained():
        assert f"{name}: " in captured.out + captured.err
    assert "blt_vs.imagenet: FAILED" in captured.err and "cornet_s.imagenet: FAILED" in captured.err
    assert elapsed < 30, f"took {elapsed:.1f} s"


def test_prefetch_needs_names(capsys):
    assert main(["prefetch"]) == 1
    assert "--all" in capsys.readouterr().err
