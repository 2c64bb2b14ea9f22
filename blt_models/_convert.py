"""Checkpoints of other code bases -> zoo models (reference BLT training script, ...)."""

from __future__ import annotations

import argparse
import os
from typing import Any, cast

from ._builder import extract_state_dict, load_state_dict_strict, read_checkpoint
from ._clock import ClockedModel
from ._pretrained import PretrainedCfg

__all__ = ["load_reference_checkpoint", "reference_args_to_kwargs", "convert_checkpoint"]


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


def _arch_from_record(recorded: Any) -> str | None:
    """A registered architecture for a name recorded in a file (``'CORnet_Z'`` -> ``cornet_z``)."""
    from ._registry import is_model, split_model_name_tag

    if not isinstance(recorded, str) or not recorded:
        return None
    for candidate in (recorded, recorded.lower(), recorded.lower().replace("-", "_")):
        arch, _ = split_model_name_tag(candidate)
        if is_model(arch):
            return arch
    return None


def convert_checkpoint(
    path: str | os.PathLike[str], arch: str | None = None, **overrides: Any
) -> tuple[ClockedModel, str]:
    """A zoo model with the weights of a foreign checkpoint, and a line saying how it was read.

    * Reference BLT training checkpoints (``{'model', 'args', ...}``): the architecture and its
      arguments come from ``args`` (``arch`` may only confirm it); the pretrained config is the
      registered one of ``args.dataset`` (mean / std of that training set), with provenance from
      the file (epoch, ``val_perf``).
    * Other files (official CORnet ``{'state_dict': {'module.' + k}, 'arch', ...}``, plain state
      dicts, safetensors): the architecture is ``arch`` or the file's ``'arch'`` entry, and the
      weights go through the family's own key conversion.

    ``overrides`` are constructor arguments (``timesteps=15``...). Loading is strict.
    """
    from ._factory import create_model
    from ._registry import get_pretrained_cfg

    name = os.path.basename(os.fspath(path))
    checkpoint = read_checkpoint(path)
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    if args is not None and isinstance(args, (argparse.Namespace, dict)):
        recorded, kwargs = reference_args_to_kwargs(args)
        if arch and arch != recorded:
            raise ValueError(
                f"{name} records the architecture {recorded!r} in its args, not {arch!r}; drop --arch "
                "(the file's own record is used) or check the file."
            )
        kwargs.update(overrides)
        model = create_model(recorded, **kwargs)
        load_state_dict_strict(model, extract_state_dict(checkpoint), what=f"checkpoint {name!r}")
        a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        dataset = a.get("dataset")
        try:
            cfg = get_pretrained_cfg(recorded, dataset) if dataset else None
        except Exception:  # no registered setup for that dataset
            cfg = None
        base = cast(PretrainedCfg, model.pretrained_cfg)
        if cfg is not None:
            base = cfg.replace(
                num_classes=model.num_classes, timesteps=model.timesteps,
                unroll=getattr(model, "unroll", cfg.unroll), model_args={},
                class_names=cfg.class_names if cfg.num_classes == model.num_classes else None,
            )  # fmt: skip
        epoch, perf = checkpoint.get("epoch"), checkpoint.get("val_perf")
        metrics: dict[str, Any] = {}
        if isinstance(perf, (int, float)):
            metrics["reference_val_perf"] = float(perf)  # top-1 fraction of the best epoch
        model.pretrained_cfg = base.replace(
            tag=dataset or "", license=None, metrics=metrics, training_data=cfg.training_data if cfg else dataset,
            source=f"converted by blt-models from the reference training checkpoint {name}"
            + (f" (epoch {epoch})" if epoch is not None else ""),
        )  # fmt: skip
        how = f"reference training checkpoint: {recorded} from its args ({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        return model, how

    recorded_arch = checkpoint.get("arch") if isinstance(checkpoint, dict) else None
    from_file = _arch_from_record(recorded_arch)
    if recorded_arch and arch and from_file and from_file != arch:
        raise ValueError(f"{name} records the architecture {recorded_arch!r}, not {arch!r}")
    chosen = arch or from_file
    if not chosen:
        detail = f"its 'arch' entry {recorded_arch!r} is not a registered name" if recorded_arch else "it records none"
        raise ValueError(
            f"cannot tell the architecture of {name} ({detail}); pass it with --arch NAME "
            "(see `blt-models list`)."
        )
    model = create_model(chosen, checkpoint_path=path, **overrides)
    converted = cast(PretrainedCfg, model.pretrained_cfg)
    model.pretrained_cfg = converted.replace(source=f"converted by blt-models from {name}")
    origin = f"from the file's 'arch' entry {recorded_arch!r}" if not arch else "from --arch"
    return model, f"{chosen} ({origin})"
