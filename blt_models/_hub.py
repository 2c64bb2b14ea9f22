"""Transport: packaged files, URL downloads (torch.hub's cache), Hub downloads and uploads
(huggingface_hub's cache, offline mode, revisions), SHA-256 checks.

A leaf of the package: it knows files, URLs and repos, not the published format (that is
``blt_models._published``). Without network every download fails within a few seconds: a
short TCP probe of the endpoint (``BLT_MODELS_PROBE_TIMEOUT`` seconds, default 3) comes before
any HTTP request, and an unreachable Hub falls back to huggingface_hub's cache at once instead of
retrying for half a minute.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import socket
import time
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from .errors import (
    ConfigValueError,
    HashMismatchError,
    HubUploadError,
    UnverifiedWeightsWarning,
    WeightsUnavailableError,
)

__all__ = [
    "PACKAGE_WEIGHTS",
    "sha256_file",
    "check_sha256_pin",
    "verify_sha256",
    "warn_unverified",
    "packaged_file",
    "url_download",
    "url_cache_path",
    "hub_download",
    "endpoint_reachable",
    "upload_folder",
]

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
_HEX = re.compile(r"[0-9a-f]+")
#: Shortest hash prefix accepted for a registered source (torch.hub's file-name convention).
MIN_PREFIX = 8
_probe_cache: dict[tuple[str, int], tuple[float, str | None]] = {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256_pin(value: object, origin: str, full: bool = False) -> str:
    """A pinned SHA-256: lowercase hex, 64 digits (``full``) or a prefix of at least 8.

    Raises [`ConfigValueError`][blt_models.errors.ConfigValueError] for an empty, non-hex or too short value: such a pin would
    verify nothing.
    """
    text = value.lower() if isinstance(value, str) else None
    need = 64 if full else MIN_PREFIX
    if text is None or not _HEX.fullmatch(text) or len(text) < need or len(text) > 64:
        want = "64 hex digits" if full else f"hex digits ({MIN_PREFIX} to 64)"
        raise ConfigValueError(
            f"sha256 = {value!r} ({origin}): must be {want}; a shorter or empty pin would verify "
            "nothing. Record the file's full digest (sha256sum FILE)."
        )
    return text


def verify_sha256(
    path: str | os.PathLike[str], expected: str, origin: str, size: int | None = None
) -> str:
    """Raise [`HashMismatchError`][blt_models.errors.HashMismatchError] unless the file's SHA-256 starts with ``expected``.

    Returns the file's full digest.
    """
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
    return got


def warn_unverified(path: str | os.PathLike[str], origin: str, reason: str) -> str:
    """Warn ([`UnverifiedWeightsWarning`][blt_models.errors.UnverifiedWeightsWarning]) that ``path`` is used without a hash check;
    returns its digest so that the caller can record it."""
    got = sha256_file(path)
    warnings.warn(
        f"weights {path} (from {origin}) are UNVERIFIED: {reason}. Their SHA-256 is {got}; "
        "compare it with a trusted record.",
        UnverifiedWeightsWarning,
        stacklevel=4,
    )
    return got


# ------------------------------------------------------------------------------------ network
def _probe_target(url: str) -> tuple[str, int] | None:
    """``(host, port)`` a connection to ``url`` goes to first (the proxy if one applies)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname):
        p = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if p.hostname:
            return p.hostname, p.port or 80
    return parsed.hostname, port


def endpoint_reachable(url: str, timeout: float | None = None) -> str | None:
    """None if a TCP connection to ``url``'s host (or its proxy) opens within ``timeout``
    seconds, else the reason. Remembered for 60 s; non-HTTP URLs count as reachable."""
    target = _probe_target(url)
    if target is None:
        return None
    now = time.monotonic()
    cached = _probe_cache.get(target)
    if cached is not None and now - cached[0] < 60:
        return cached[1]
    if timeout is None:
        timeout = float(os.environ.get("BLT_MODELS_PROBE_TIMEOUT", "3"))
    try:
        with socket.create_connection(target, timeout=timeout):
            reason = None
    except OSError as err:  # DNS failure, refused, unreachable, timed out
        reason = f"{target[0]}:{target[1]}: {err or type(err).__name__}"
    _probe_cache[target] = (now, reason)
    return reason


def _routes(name: str | None, arch: str | None) -> str:
    prefetch = f"`blt-models prefetch {name}`" if name else "`blt-models prefetch NAME`"
    local = f"create_model({arch!r}, checkpoint_path='/path/to/file')" if arch else (
        "create_model(ARCH, checkpoint_path='/path/to/file')"
    )  # fmt: skip
    return (
        f"Routes: (1) on a machine with internet run {prefetch} (it fills the same caches: "
        "HF_HOME / HF_HUB_CACHE, TORCH_HOME) and copy or share those caches here; (2) load a "
        f"file you have: {local}; (3) with the files cached, set HF_HUB_OFFLINE=1 to skip "
        "network checks."
    )


def packaged_file(filename: str) -> Path:
    path = PACKAGE_WEIGHTS / filename
    if not path.is_file():
        raise WeightsUnavailableError(f"packaged weights {path} are missing: reinstall blt-models")
    return path


def url_cache_path(url: str) -> Path:
    """Where torch.hub keeps the download of ``url`` (``$TORCH_HOME/hub/checkpoints``)."""
    url_path = urlparse(url).path
    filename = os.path.basename(url_path)
    if "." not in filename:  # e.g. OSF's .../<id>/download: one cache name per URL, not "download"
        filename = "-".join([part for part in url_path.split("/") if part][-2:])
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def url_download(
    url: str, name: str | None = None, arch: str | None = None, target: Path | None = None
) -> Path:
    """The file at ``url`` in torch.hub's cache (or at ``target``), downloaded if it is not
    there yet."""
    target = url_cache_path(url) if target is None else target
    if target.is_file():
        return target
    unreachable = endpoint_reachable(url)
    if unreachable is not None:
        raise WeightsUnavailableError(
            f"could not download {url}: the server is not reachable ({unreachable}), and the file "
            f"is not in torch.hub's cache ({target}). " + _routes(name, arch)
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as err:  # URLError, HTTPError, socket errors, timeouts
        raise WeightsUnavailableError(
            f"could not download {url} ({err}). Copy the file to {target}, or: "
            + _routes(name, arch)
        ) from err
    return target


def _predownload_hint(repo_id: str, revision: str | None) -> str:
    rev = f", revision={revision!r}" if revision else ""
    cli_rev = f" --revision {revision}" if revision else ""
    return (
        f"Pre-download it on a machine that reaches the Hub with `hf download {repo_id}{cli_rev}` "
        f"(or python -c \"import huggingface_hub; huggingface_hub.snapshot_download('{repo_id}'{rev})\") "
        "and use (or copy) that cache here: HF_HOME / HF_HUB_CACHE point at it."
    )


def hub_download(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    name: str | None = None,
    arch: str | None = None,
) -> Path:
    """One file of a Hub model repo through ``huggingface_hub`` (its cache, offline mode, revisions).

    If the Hub does not answer the probe, only the cache is used (no retries). Errors become
    [`WeightsUnavailableError`][blt_models.errors.WeightsUnavailableError] naming the repo, file and revision, with every route to the
    weights (``name`` / ``arch`` make the hints concrete).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    offline = constants.is_offline_mode()
    unreachable = None if offline else endpoint_reachable(constants.ENDPOINT)
    if unreachable is None and not offline:
        unreachable = _head_fails(repo_id, filename, revision)
    try:
        return Path(
            hf_hub_download(
                repo_id, filename, revision=revision, local_files_only=unreachable is not None
            )
        )
    except LocalEntryNotFoundError as err:
        reason = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if offline
            else f"the Hub ({constants.ENDPOINT}) is not reachable ({unreachable})"
            if unreachable
            else "the Hub could not be reached"
        )
        raise WeightsUnavailableError(
            f"{where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reason}. "
            + _predownload_hint(repo_id, revision)
            + " "
            + _routes(name, arch)
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
        raise ConfigValueError(
            f"{repo_id!r} is not a valid Hub repo id (expected 'org/name'): {err}"
        ) from err


def _head_fails(repo_id: str, filename: str, revision: str | None) -> str | None:
    """One HEAD request for the file, short timeout, no retries: None if the Hub answers (with
    anything, errors included), else the reason. huggingface_hub itself retries a failed request
    with back-off for about half a minute before it falls back to its cache."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    timeout = min(float(constants.HF_HUB_ETAG_TIMEOUT), 5.0)
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), timeout=timeout)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        return f"HTTP {status}" if isinstance(status, int) and status >= 500 else None
    except _network_errors() as err:
        return f"{type(err).__name__}: {err}"
    except Exception:  # anything else: let hf_hub_download report it properly
        return None
    return None


# ------------------------------------------------------------------------------------ upload
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
    Failures (offline mode, no network, no permission) raise [`HubUploadError`][blt_models.errors.HubUploadError].
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
