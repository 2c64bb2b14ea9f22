"""Where pretrained weights come from: packaged files, pinned URLs and the Hugging Face Hub.

Hub access goes through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, revisions); URLs go
through ``torch.hub``'s cache. A pinned SHA-256 (full digest or prefix) is checked on every load,
cache hits included.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from ._pretrained import PretrainedCfg

__all__ = ["resolve_weights_file", "sha256_file", "HashMismatchError", "WeightsUnavailableError"]

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


class HashMismatchError(RuntimeError):
    """A weight file whose SHA-256 is not the pinned one."""


class WeightsUnavailableError(RuntimeError):
    """Weights that cannot be had: not published, or not reachable and not cached."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str | None, origin: str) -> None:
    if not expected:
        return
    got = sha256_file(path)
    if not got.startswith(expected.lower()):
        raise HashMismatchError(
            f"SHA-256 of {path} (from {origin}) does not match the pinned hash: expected "
            f"{expected}, got {got}. The file is corrupted or not the published one; delete it "
            "and download it again."
        )


def _from_url(cfg: PretrainedCfg) -> Path:
    assert cfg.url
    filename = os.path.basename(urlparse(cfg.url).path)
    target = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(cfg.url, str(target), progress=True)
        except Exception as err:  # URLError, HTTPError, socket errors, timeouts
            raise WeightsUnavailableError(
                f"could not download the weights of {cfg.name} from {cfg.url} ({err}). "
                f"If this machine is offline, fetch the file elsewhere and either copy it to "
                f"{target} or pass it directly: create_model({cfg.architecture!r}, "
                f"checkpoint_path='/path/to/{filename}')."
            ) from err
    verify_sha256(target, cfg.sha256, cfg.url)
    return target


def _from_hub(cfg: PretrainedCfg, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    assert cfg.hf_hub_id
    where = f"{cfg.hf_hub_id}/{filename}" + (f"@{cfg.hf_hub_revision}" if cfg.hf_hub_revision else "")
    try:
        path = hf_hub_download(cfg.hf_hub_id, filename, revision=cfg.hf_hub_revision)
    except LocalEntryNotFoundError as err:
        raise WeightsUnavailableError(
            f"{where} is not in the Hugging Face cache and the Hub cannot be reached "
            f"(offline or HF_HUB_OFFLINE=1). Pre-download it where the Hub is reachable with "
            f"`huggingface-cli download {cfg.hf_hub_id} {filename}"
            + (f" --revision {cfg.hf_hub_revision}" if cfg.hf_hub_revision else "")
            + "` and copy the cache (HF_HOME), or pass the file with checkpoint_path=."
        ) from err
    except RepositoryNotFoundError as err:
        raise WeightsUnavailableError(f"Hub repository {cfg.hf_hub_id!r} does not exist or is private") from err
    except RevisionNotFoundError as err:
        raise WeightsUnavailableError(f"revision {cfg.hf_hub_revision!r} of {cfg.hf_hub_id} does not exist") from err
    except EntryNotFoundError as err:
        raise WeightsUnavailableError(f"{cfg.hf_hub_id} has no file {filename!r}") from err
    verify_sha256(path, cfg.sha256, where)
    return Path(path)


def resolve_weights_file(cfg: PretrainedCfg) -> Path:
    """Local path of the weights of ``cfg`` (downloading through the proper cache if needed)."""
    if cfg.file:
        path = PACKAGE_WEIGHTS / cfg.file
        if not path.is_file():
            raise WeightsUnavailableError(f"packaged weights {path} are missing: reinstall blt-models")
        verify_sha256(path, cfg.sha256, "the blt-models package")
        return path
    if cfg.hf_hub_id:
        return _from_hub(cfg, cfg.hf_hub_filename or "model.safetensors")
    if cfg.url:
        return _from_url(cfg)
    raise WeightsUnavailableError(
        f"{cfg.name} has no published weights ({cfg.license or 'no source recorded'}). Load a file "
        f"you have with create_model({cfg.architecture!r}, checkpoint_path=PATH), or a reference "
        "training checkpoint with blt_models.load_reference_checkpoint(PATH). Pretrained names: "
        "blt_models.list_pretrained()."
    )
