"""Where pretrained weights come from: packaged files, pinned URLs and the Hugging Face Hub.

Hub access goes through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, revisions); URLs go
through ``torch.hub``'s cache. A pinned SHA-256 (full digest or prefix) is checked on every load,
cache hits included.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from ._pretrained import PretrainedCfg
from .errors import HashMismatchError, HubUploadError, WeightsUnavailableError

__all__ = [
    "resolve_weights_file",
    "hub_download",
    "upload_folder",
    "sha256_file",
    "verify_sha256",
    "HashMismatchError",
    "HubUploadError",
    "WeightsUnavailableError",
]

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(
    path: str | os.PathLike[str], expected: str | None, origin: str, size: int | None = None
) -> None:
    """Raise :class:`HashMismatchError` unless the file's SHA-256 starts with ``expected``."""
    if not expected:
        return
    got = sha256_file(path)
    if not got.startswith(expected.lower()):
        actual_size = os.path.getsize(path)
        sizes = ""
        if size is not None and size != actual_size:
            sizes = f" The file has {actual_size} bytes instead of {size}" + (
                " (truncated: an interrupted download or copy?)." if actual_size < size else "."
            )
        raise HashMismatchError(
            f"SHA-256 of {path} (from {origin}) does not match the pinned hash: expected "
            f"{expected}, got {got}.{sizes} The file is corrupted or not the published one; "
            "delete it and download (or write) it again."
        )


def _from_url(cfg: PretrainedCfg) -> Path:
    assert cfg.url
    url_path = urlparse(cfg.url).path
    filename = os.path.basename(url_path)
    if "." not in filename:  # e.g. OSF's .../<id>/download: one name per URL, not "download"
        filename = f"{cfg.name}-" + "-".join([p for p in url_path.split("/") if p][-2:])
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


def _predownload_hint(repo_id: str, revision: str | None) -> str:
    rev = f", revision={revision!r}" if revision else ""
    cli_rev = f" --revision {revision}" if revision else ""
    return (
        f"Pre-download it on a machine that reaches the Hub with `hf download {repo_id}{cli_rev}` "
        f"(or python -c \"import huggingface_hub; huggingface_hub.snapshot_download('{repo_id}'{rev})\") "
        "and use (or copy) that cache here: HF_HOME / HF_HUB_CACHE point at it."
    )


def hub_download(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """One file of a Hub model repo through ``huggingface_hub`` (its cache, offline mode, revisions).

    Errors become :class:`WeightsUnavailableError` naming the repo, file and revision, with what to
    do about it.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError as err:
        from huggingface_hub import constants

        reason = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if constants.is_offline_mode()
            else "the Hub could not be reached"
        )
        raise WeightsUnavailableError(
            f"{where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}. "
            + _predownload_hint(repo_id, revision)
        ) from err
    except GatedRepoError as err:
        raise WeightsUnavailableError(
            f"Hub repository {repo_id!r} is gated: accept its terms on the Hub and log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from err
    except RepositoryNotFoundError as err:
        raise WeightsUnavailableError(
            f"Hub repository {repo_id!r} does not exist, or is private (log in with `hf auth "
            "login` or set HF_TOKEN if you have access)"
        ) from err
    except RevisionNotFoundError as err:
        raise WeightsUnavailableError(
            f"revision {revision!r} of Hub repository {repo_id!r} does not exist"
        ) from err
    except EntryNotFoundError as err:
        raise WeightsUnavailableError(
            f"Hub repository {repo_id!r} has no file {filename!r}"
            + (f" at revision {revision!r}" if revision else "")
        ) from err
    except HFValidationError as err:
        raise ValueError(
            f"{repo_id!r} is not a valid Hub repo id (expected 'org/name'): {err}"
        ) from err


def _from_hub(cfg: PretrainedCfg, filename: str) -> Path:
    assert cfg.hf_hub_id
    where = f"{cfg.hf_hub_id}/{filename}" + (
        f"@{cfg.hf_hub_revision}" if cfg.hf_hub_revision else ""
    )
    path = hub_download(cfg.hf_hub_id, filename, cfg.hf_hub_revision)
    expected, size = cfg.sha256, None
    if not expected and cfg.hf_hub_filename is None:
        # Zoo format: config.json records the hash of model.safetensors.
        from ._published import read_config, weights_record

        config = read_config(hub_download(cfg.hf_hub_id, "config.json", cfg.hf_hub_revision), where)
        expected, size = weights_record(config)
    verify_sha256(path, expected, where, size)
    return path


def resolve_weights_file(cfg: PretrainedCfg) -> Path:
    """Local path of the weights of ``cfg`` (downloading through the proper cache if needed)."""
    if cfg.file:
        path = PACKAGE_WEIGHTS / cfg.file
        if not path.is_file():
            raise WeightsUnavailableError(
                f"packaged weights {path} are missing: reinstall blt-models"
            )
        verify_sha256(path, cfg.sha256, "the blt-models package")
        return path
    if cfg.hf_hub_id:
        return _from_hub(cfg, cfg.hf_hub_filename or "model.safetensors")
    if cfg.url:
        return _from_url(cfg)
    raise WeightsUnavailableError(
        f"{cfg.name} has no weights that blt-models can download ({cfg.license or 'no source recorded'}"
        f"{'; source: ' + cfg.source if cfg.source else ''}). Load a file "
        f"you have with create_model({cfg.architecture!r}, checkpoint_path=PATH), or a reference "
        "training checkpoint with blt_models.load_reference_checkpoint(PATH). Pretrained names: "
        "blt_models.list_pretrained()."
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport-level exceptions of the HTTP clients huggingface_hub may use (and OSError)."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx", "httpx2"):  # huggingface_hub >= 1.0 (httpx; httpx2 in 2.x)
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    try:  # huggingface_hub < 1.0
        import requests

        errors += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def upload_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload blt-models weights",
    create_pr: bool = False,
    endpoint: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload the files of ``folder`` in one commit.

    Uses ``huggingface_hub.HfApi.create_repo`` and ``upload_folder``. Returns the commit URL.
    Failures (offline mode, no network, no permission) raise :class:`HubUploadError`.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=endpoint, token=token)
    target = api.endpoint
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=os.fspath(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )
    except OfflineModeIsEnabled as err:
        raise HubUploadError(
            f"cannot push to {repo_id}: huggingface_hub's offline mode is on (HF_HUB_OFFLINE=1); "
            "unset it and retry."
        ) from err
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        auth = (
            " Log in with `hf auth login` (a write token) or pass token=."
            if status in (401, 403)
            else ""
        )
        raise HubUploadError(
            f"the Hub ({target}) refused the upload to {repo_id} (HTTP {status}): {err}.{auth}"
        ) from err
    except _network_errors() as err:  # connection refused, DNS, TLS, timeouts
        raise HubUploadError(
            f"could not reach the Hugging Face Hub at {target} to upload {repo_id} "
            f"({type(err).__name__}: {err}). Check the network, HF_ENDPOINT and proxies, then retry "
            "(a saved folder uploads with `blt-models push DIR REPO`)."
        ) from err
    return str(getattr(info, "commit_url", info))
