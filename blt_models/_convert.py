"""Checkpoints of other code bases -> zoo models (reference BLT training script, ...)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._builder import extract_state_dict, load_state_dict_strict, read_checkpoint
from ._clock import ClockedModel

__all__ = ["load_reference_checkpoint", "reference_args_to_kwargs"]


def reference_args_to_kwargs(args: argparse.Namespace | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Architecture name and ``create_model`` kwargs from the reference script's saved ``args``."""
    a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    arch = a.get("model")
    if not arch:
        raise ValueError("the checkpoint's args record no 'model' name")
    kwargs: dict[str, Any] = {}
    if arch.startswith("blt"):
        kwargs = {
            "num_layers": int(a.get("num_layers", 6)),
            "timesteps": int(a.get("recurrent_steps", 10)),
            # Checkpoints older than the --pool flag were trained with max pooling.
            "pool": a.get("pool") or "max",
            "num_classes": int(a.get("num_classes", 1000)),
        }
    elif arch in ("cornet_r", "cornet_rt"):
        kwargs = {"timesteps": int(a.get("recurrent_steps", 5)), "num_classes": int(a.get("num_classes", 1000))}
    elif arch.startswith("cornet"):
        kwargs = {"num_classes": int(a.get("num_classes", 1000))}
    # resnet: the reference builds ResNet() with its defaults (1000 classes) whatever the args say.
    return arch, kwargs


def load_reference_checkpoint(path: str | os.PathLike[str], **overrides: Any) -> ClockedModel:
    """Build the architecture recorded in a reference training checkpoint and load it strictly.

    The file is what the reference ``main.py`` writes: ``{'model': state_dict, 'args': Namespace,
    'optimizer', 'lr_scheduler', 'epoch', 'val_perf'}`` (a DDP ``module.`` prefix is accepted). It
    is read with ``weights_only=True``; only ``argparse.Namespace`` is allow-listed. ``overrides``
    replace recorded arguments (e.g. ``timesteps=15``).
    """
    from ._factory import create_model

    checkpoint = read_checkpoint(path)
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    if args is None:
        raise ValueError(
            f"{os.fspath(path)!r} has no 'args' entry, so its architecture is unknown; use "
            "create_model(ARCH, checkpoint_path=PATH) with the architecture it was trained with."
        )
    arch, kwargs = reference_args_to_kwargs(args)
    kwargs.update(overrides)
    model = create_model(arch, **kwargs)
    state = extract_state_dict(checkpoint)
    convert = getattr(model, "convert_state_dict", None)
    if convert is not None:  # e.g. the reference ResNet's key names -> torchvision's
        state = convert(state)
    load_state_dict_strict(model, state, what=f"checkpoint {os.fspath(path)!r}")
    return model
