"""Building models and loading weights into them: file formats, strict key reports, adaptation.

Every load is strict: all keys used, every shape right, or :class:`CheckpointMismatchError` lists
the missing, unexpected and mis-shaped keys and nothing is loaded. Pickled files are only read with
``torch.load(weights_only=True)``; the one non-tensor type allowed is ``argparse.Namespace``, which
the reference training script stores under ``args``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import CheckpointMismatchError

__all__ = [
    "CheckpointMismatchError",
    "read_checkpoint",
    "extract_state_dict",
    "load_state_dict_strict",
    "load_checkpoint",
]


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a ``.safetensors`` file, a PyTorch file (``weights_only=True``, Namespace allowed) or a
    Keras HDF5 weight file (``{"<layer>/<weight>": tensor}`` in Keras layouts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"{path} is not a readable safetensors file ({err}); it may be truncated or "
                "corrupted: download or write it again."
            ) from err
    from ._keras_h5 import is_hdf5_file, keras_h5_state_dict

    if is_hdf5_file(path):  # a Keras HDF5 weight file (rcnn-sat): the family maps its names
        return keras_h5_state_dict(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(
            f"could not read {path} as a PyTorch checkpoint with weights_only=True ({err}). "
            "blt-models never unpickles arbitrary objects; if the file stores whole modules, "
            "re-save its state_dict() in a trusted environment first."
        ) from err


def extract_state_dict(obj: Any) -> dict[str, Tensor]:
    """The state dict inside a checkpoint object.

    Accepts a plain state dict, the reference training layout (``{'model': sd, 'args': ...}``),
    the official CORnet layout (``{'state_dict': sd, ...}``) and ``{'model_state_dict': sd}``;
    a ``module.`` prefix (DataParallel / DDP) is removed.
    """
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            "checkpoint holds no state dict (expected tensors, or a dict with the weights under "
            "'model' or 'state_dict')"
        )
    return strip_module_prefix(obj)


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove the ``module.`` prefix that DataParallel / DDP put on every key."""
    state = dict(state_dict)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def to_model_layout(model: nn.Module, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` in ``model``'s own key layout: no ``module.`` prefix, and the family's
    ``convert_state_dict`` applied (published BLT-VS keys, the reference ResNet's keys...)."""
    state = strip_module_prefix(state_dict)
    convert = getattr(model, "convert_state_dict", None)
    return convert(state) if convert is not None else state


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, Tensor], what: str = "checkpoint"
) -> None:
    """Load ``state_dict`` (any layout :func:`to_model_layout` knows) into ``model`` only if every
    key and shape fits; else raise :class:`CheckpointMismatchError` and load nothing."""
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
    validate = getattr(model, "validate_state_dict", None)
    if validate is not None:
        validate(state_dict)
    model.load_state_dict(state_dict, strict=True)


def _mismatch_hint(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    arch = getattr(cfg, "architecture", type(model).__name__)
    return (
        f"Check that the file was written for {arch} with the same constructor arguments "
        "(num_classes, in_chans, num_layers, pool...). For a reference training checkpoint, "
        "blt_models.load_reference_checkpoint(path) rebuilds the architecture from its args."
    )


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load weights from ``path`` (any accepted format) strictly into ``model``."""
    state = extract_state_dict(read_checkpoint(path))
    load_state_dict_strict(model, state, what=f"checkpoint {os.fspath(path)!r}")
