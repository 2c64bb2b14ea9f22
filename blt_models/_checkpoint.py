"""Reading weight files safely and loading them strictly.

Every load is strict: all keys used, every shape right, every value sane (floating point where the
model is, no NaN / Inf), or an error lists what is wrong and nothing is loaded. Pickled files are
only read with ``torch.load(weights_only=True)``; the one non-tensor type allowed is
``argparse.Namespace``, which the reference training script stores under ``args``. The file format
is told from the file's first bytes, not its suffix.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from timm.models import clean_state_dict
from torch import Tensor, nn

from ._clock import ClockedModel
from .errors import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    InvalidWeightsError,
    UnreadableCheckpointError,
)

__all__ = [
    "read_checkpoint",
    "extract_state_dict",
    "to_model_layout",
    "check_weight_values",
    "load_state_dict_strict",
    "load_checkpoint",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _sniff(path: Path) -> str:
    """``"safetensors"``, ``"zip"`` (torch.save), ``"pickle"`` (legacy torch.save), ``"hdf5"``
    (Keras weights) or ``"?"``."""
    with open(path, "rb") as handle:
        head = handle.read(9)
        size = os.fstat(handle.fileno()).st_size
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    header = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and 1 < header <= size - 8:
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    return "?"


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a safetensors file, a PyTorch file (``weights_only=True``, Namespace allowed) or a
    Keras HDF5 weight file (``{"<layer>/<weight>": tensor}``, for the rcnn-sat family).

    Raises [`CheckpointNotFoundError`][blt_models.errors.CheckpointNotFoundError] for a missing file and
    [`UnreadableCheckpointError`][blt_models.errors.UnreadableCheckpointError] (a ``ValueError``) for a folder, a file without read
    permission, a damaged file, or a pickle that holds Python objects other than tensors.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        hint = (
            f" It looks like a published folder: use create_model('local-dir:{path}')."
            if (path / "config.json").is_file()
            else " Pass the weight file inside it."
        )
        raise UnreadableCheckpointError(f"{path} is a folder, not a weight file.{hint}")
    try:
        kind = _sniff(path)
    except PermissionError as err:
        raise UnreadableCheckpointError(
            f"no permission to read {path} ({err.strerror}); ask its owner to make it readable "
            "(chmod a+r) or copy it somewhere you can read."
        ) from err
    except OSError as err:
        raise UnreadableCheckpointError(f"could not read {path}: {err}") from err
    if kind == "safetensors":
        return _read_safetensors(path)
    from ._keras_h5 import is_hdf5_name

    if kind == "hdf5" or (kind == "?" and is_hdf5_name(path)):
        # A Keras HDF5 weight file (rcnn-sat): the family maps its layer names. A file named .h5
        # that is not HDF5 is refused by the Keras reader as such.
        from ._keras_h5 import keras_h5_state_dict

        return keras_h5_state_dict(path)
    if path.suffix == ".safetensors":
        what = "a PyTorch (torch.save) file" if kind in ("zip", "pickle") else "no safetensors data"
        if kind not in ("zip", "pickle"):
            raise UnreadableCheckpointError(
                f"{path} is not a readable safetensors file (it holds {what}); it may be truncated "
                "or corrupted: download or write it again."
            )
    return _read_torch(path)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UnreadableCheckpointError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or "
            "corrupted: download or write it again."
        ) from err


def _read_torch(path: Path) -> Any:
    try:
        # A file object, not the name: torch.load would pick a reader from the suffix.
        with open(path, "rb") as handle, torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = _ANSI.sub("", str(err))
        if "Weights only load failed" not in text:
            raise _damaged(path, err) from err
        found = re.search(r"Unsupported (global|operand):? (?:GLOBAL )?([^\s,]+)", text)
        detail = f" (a pickled {found[1]} {found[2]!r})" if found else ""
        raise UnreadableCheckpointError(
            f"{path} holds Python objects other than tensors{detail}. blt-models reads pickles only "
            "with weights_only=True, so that no file can run code. If the file is yours and "
            "trusted, load it yourself and re-save its state_dict() (torch.save(obj['model'], "
            "'weights.pth'), or safetensors)."
        ) from err
    except Exception as err:  # RuntimeError (zip), EOFError, ValueError, OSError...
        raise _damaged(path, err) from err


def _damaged(path: Path, err: BaseException) -> UnreadableCheckpointError:
    first = _ANSI.sub("", str(err)).strip().splitlines()
    reason = f"{type(err).__name__}: {first[0]}" if first else type(err).__name__
    return UnreadableCheckpointError(
        f"{path} is not a readable PyTorch or safetensors file ({reason}); it may be truncated or "
        "corrupted: download or write it again."
    )


def extract_state_dict(obj: Any, what: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict inside a checkpoint object.

    Accepts a plain state dict, the reference training layout (``{'model': sd, 'args': ...}``),
    the official CORnet layout (``{'state_dict': sd, ...}``) and ``{'model_state_dict': sd}``;
    ``module.`` (DataParallel / DDP) and ``_orig_mod.`` (``torch.compile``) prefixes are removed
    with timm's ``clean_state_dict``.
    """
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        raise UnreadableCheckpointError(
            f"{what} holds no state dict (expected tensors by name, or a dict with the weights "
            "under 'model' or 'state_dict')"
        )
    return clean_state_dict(dict(obj))


def to_model_layout(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` in ``model``'s own key layout: wrapper prefixes removed, and the family's
    [`convert_state_dict`][blt_models.ClockedModel.convert_state_dict] applied (published BLT-VS keys, the
    reference ResNet's keys...)."""
    state = clean_state_dict(dict(state_dict))
    return model.convert_state_dict(state) if isinstance(model, ClockedModel) else state


def check_weight_values(
    state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor], what: str
) -> None:
    """Refuse non-floating tensors where the model has floating ones, NaN / Inf values, and
    negative BatchNorm running variances.

    Raises [`InvalidWeightsError`][blt_models.errors.InvalidWeightsError] naming the first offending tensors.
    """
    bad: list[str] = []
    for key, value in state_dict.items():
        own = expected.get(key)
        if own is not None and own.is_floating_point() and not value.is_floating_point():
            bad.append(f"{key}: dtype {str(value.dtype).replace('torch.', '')}, not floating point")
        elif value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            n_nan = int(torch.isnan(value).sum())
            n_inf = int(torch.isinf(value).sum())
            bad.append(f"{key}: {n_nan} NaN and {n_inf} Inf of {value.numel()} values")
        elif key.endswith("running_var") and value.is_floating_point() and bool((value < 0).any()):
            n_negative = int((value < 0).sum())
            bad.append(
                f"{key}: {n_negative} negative of {value.numel()} values (a BatchNorm's running "
                "variance cannot be negative; normalising by it gives NaN)"
            )
    if bad:
        shown = bad[:10] + ([f"... and {len(bad) - 10} more"] if len(bad) > 10 else [])
        raise InvalidWeightsError(
            f"{what} holds weights that are not usable; nothing was loaded:\n    "
            + "\n    ".join(shown)
            + "\n  The training run probably diverged or the file was damaged. To load them "
            "anyway (e.g. to inspect them), pass check_values=False."
        )


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    what: str = "checkpoint",
    check_values: bool = True,
) -> None:
    """Load ``state_dict`` (any layout ``to_model_layout`` knows) into ``model`` only if every
    key and shape fits and every value is sane; else raise and load nothing.

    Raises [`CheckpointMismatchError`][blt_models.errors.CheckpointMismatchError] (keys, shapes) or [`InvalidWeightsError`][blt_models.errors.InvalidWeightsError] (dtype,
    NaN / Inf, the family's own checks). ``check_values=False`` skips the value checks (with an
    ``UserWarning`` naming what it skipped).
    """
    state_dict = to_model_layout(model, state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(what, missing, unexpected, mismatched, _mismatch_hint(model))
    if check_values:
        check_weight_values(state_dict, expected, what)
    else:
        warnings.warn(
            f"{what}: loaded with check_values=False; NaN / Inf / integer weights were not "
            "refused.",
            UserWarning,
            stacklevel=3,
        )
    if isinstance(model, ClockedModel):
        model.validate_state_dict(state_dict)
    model.load_state_dict(state_dict, strict=True)


def _mismatch_hint(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    arch = getattr(cfg, "architecture", type(model).__name__)
    return (
        f"Check that the file was written for {arch} with the same constructor arguments "
        "(num_classes, in_chans, num_layers, pool...). For a reference training checkpoint, "
        "blt_models.load_reference_checkpoint(path) rebuilds the architecture from its args."
    )


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], check_values: bool = True
) -> None:
    """Load weights from ``path`` (any accepted format) strictly into ``model``."""
    what = f"checkpoint {os.fspath(path)!r}"
    state = extract_state_dict(read_checkpoint(path), what)
    load_state_dict_strict(model, state, what=what, check_values=check_values)
