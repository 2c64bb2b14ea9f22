"""Checkpoints of other code bases -> zoo models (reference BLT training script, BLT-VS, ...)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import Any, cast

from ._builder import extract_state_dict, load_state_dict_strict, read_checkpoint
from ._clock import ClockedModel
from ._pretrained import PretrainedCfg

__all__ = [
    "load_reference_checkpoint",
    "reference_args_to_kwargs",
    "convert_checkpoint",
    "blt_vs_key_from_reference",
    "blt_vs_key_to_reference",
    "convert_blt_vs_state_dict",
    "blt_vs_state_dict_to_reference",
    "is_blt_vs_reference_state_dict",
    "blt_vs_kwargs_from_filename",
    "blt_vs_kwargs_from_state_dict",
]


def reference_args_to_kwargs(
    args: argparse.Namespace | dict[str, Any],
) -> tuple[str, dict[str, Any]]:
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
        kwargs = {
            "timesteps": int(a.get("recurrent_steps", 5)),
            "num_classes": int(a.get("num_classes", 1000)),
        }
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
    load_state_dict_strict(
        model, extract_state_dict(checkpoint), what=f"checkpoint {os.fspath(path)!r}"
    )
    return model


def _convert_blt_vs(
    path: str | os.PathLike[str], state: Mapping[str, Any], overrides: dict[str, Any]
) -> tuple[ClockedModel, str]:
    """A published BLT-VS file: configuration from its name (or its weights), tag from its dataset."""
    from ._factory import create_model
    from ._registry import is_model

    name = os.path.basename(os.fspath(path))
    kwargs = blt_vs_kwargs_from_state_dict(state)  # size, connections, classes
    try:
        kwargs.update(blt_vs_kwargs_from_filename(name))  # + unrolling, steps, readout
        how = "configuration from the file name and the weights"
    except ValueError:
        how = "configuration from the weights (pass --timesteps / --unroll if not the defaults)"
    match = _BLT_VS_FILENAME.search(name)
    tag = match["dataset"] if match and is_model(f"blt_vs.{match['dataset']}") else ""
    kwargs.update(overrides)
    arch = f"blt_vs.{tag}" if tag else "blt_vs"
    model = create_model(arch, checkpoint_path=path, **kwargs)
    converted = cast(PretrainedCfg, model.pretrained_cfg)
    model.pretrained_cfg = converted.replace(
        source=f"{converted.source or ''}; converted by blt-models from {name}".lstrip("; ")
    )
    return model, f"{arch}: published BLT-VS file, {how}"


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
    * Keras HDF5 files (the published rcnn-sat B / BL networks): variant, widths, classes and
      steps from the file's layers, see :func:`blt_models.convert_rcnn_sat_h5`.
    * Other files (official CORnet ``{'state_dict': {'module.' + k}, 'arch', ...}``, plain state
      dicts, safetensors): the architecture is ``arch`` or the file's ``'arch'`` entry, and the
      weights go through the family's own key conversion.

    ``overrides`` are constructor arguments (``timesteps=15``...). Loading is strict.
    """
    from ._factory import create_model
    from ._keras_h5 import is_hdf5_file
    from ._registry import get_pretrained_cfg

    if is_hdf5_file(path):  # a Keras HDF5 weight file: the rcnn-sat networks (Spoerer et al. 2020)
        from ._convert_rcnn_sat import load_rcnn_sat_h5

        return load_rcnn_sat_h5(path, arch=arch, **overrides)
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

    state = extract_state_dict(checkpoint)
    if is_blt_vs_reference_state_dict(state) and arch in (None, "blt_vs"):
        return _convert_blt_vs(path, state, overrides)

    recorded_arch = checkpoint.get("arch") if isinstance(checkpoint, dict) else None
    from_file = _arch_from_record(recorded_arch)
    if recorded_arch and arch and from_file and from_file != arch:
        raise ValueError(f"{name} records the architecture {recorded_arch!r}, not {arch!r}")
    chosen = arch or from_file
    if not chosen:
        detail = (
            f"its 'arch' entry {recorded_arch!r} is not a registered name"
            if recorded_arch
            else "it records none"
        )
        raise ValueError(
            f"cannot tell the architecture of {name} ({detail}); pass it with --arch NAME "
            "(see `blt-models list`)."
        )
    model = create_model(chosen, checkpoint_path=path, **overrides)
    converted = cast(PretrainedCfg, model.pretrained_cfg)
    model.pretrained_cfg = converted.replace(source=f"converted by blt-models from {name}")
    origin = f"from the file's 'arch' entry {recorded_arch!r}" if not arch else "from --arch"
    return model, f"{chosen} ({origin})"


# --------------------------------------------------------------------------------- BLT-VS
# The published BLT-VS files (Hub repo novelmartis/blt_vs_model) hold the reference model's plain
# state dict: ``connections.<Area>.<module>.{weight,bias}`` (plus ``readout_weights`` for
# readout_type='single'). The zoo model names the areas in lower case and groups each two-conv
# path (spatial conv, then 1x1 conv) in one module:
#
#   connections.V1.bu_conv.weight              -> v1.bu_conv.weight
#   connections.V1.bu_l_conv_depthwise.bias    -> v1.bu_lateral.spatial.bias
#   connections.V1.td_l_conv_pointwise.weight  -> v1.td_lateral.pointwise.weight
#   connections.V4.skip_bu_depthwise.weight    -> v4.bu_skip.spatial.weight   (a 64-group conv)
#   connections.V1.skip_td_pointwise.weight    -> v1.td_skip.pointwise.weight
#   connections.LOC.layer_norm_bu.weight       -> loc.norm_bu.weight
#   connections.Readout.readout_conv.weight    -> readout.conv.weight
#   connections.Readout.layer_norm_td.bias     -> readout.norm_td.bias
#   readout_weights                            -> readout_weights

BLT_VS_AREA_NAMES: dict[str, str] = {
    "Retina": "retina", "LGN": "lgn", "V1": "v1", "V2": "v2", "V3": "v3", "V4": "v4",
    "LOC": "loc", "Readout": "readout",
}  # fmt: skip
BLT_VS_MODULE_NAMES: dict[str, str] = {
    "bu_conv": "bu_conv",
    "bu_l_conv_depthwise": "bu_lateral.spatial",
    "bu_l_conv_pointwise": "bu_lateral.pointwise",
    "td_conv": "td_conv",
    "td_l_conv_depthwise": "td_lateral.spatial",
    "td_l_conv_pointwise": "td_lateral.pointwise",
    "skip_bu_depthwise": "bu_skip.spatial",
    "skip_bu_pointwise": "bu_skip.pointwise",
    "skip_td_depthwise": "td_skip.spatial",
    "skip_td_pointwise": "td_skip.pointwise",
    "layer_norm_bu": "norm_bu",
    "layer_norm_td": "norm_td",
    "readout_conv": "conv",
}
_BLT_VS_AREAS_BACK = {v: k for k, v in BLT_VS_AREA_NAMES.items()}
_BLT_VS_MODULES_BACK = {v: k for k, v in BLT_VS_MODULE_NAMES.items()}
_BLT_VS_REF_KEY = re.compile(r"^connections\.([A-Za-z0-9]+)\.([a-z_]+)\.(weight|bias)$")
_BLT_VS_ZOO_KEY = re.compile(r"^([a-z0-9]+)\.([a-z_]+(?:\.[a-z]+)?)\.(weight|bias)$")


def blt_vs_key_from_reference(key: str) -> str:
    """Zoo name of one key of a published BLT-VS state dict (``connections.V1.bu_conv.weight``)."""
    if key == "readout_weights":
        return key
    match = _BLT_VS_REF_KEY.match(key)
    if not match or match[1] not in BLT_VS_AREA_NAMES or match[2] not in BLT_VS_MODULE_NAMES:
        raise KeyError(f"not a key of the reference BLT-VS state dict: {key!r}")
    return f"{BLT_VS_AREA_NAMES[match[1]]}.{BLT_VS_MODULE_NAMES[match[2]]}.{match[3]}"


def blt_vs_key_to_reference(key: str) -> str:
    """Reference (published-file) name of one key of the zoo ``blt_vs`` state dict."""
    if key == "readout_weights":
        return key
    match = _BLT_VS_ZOO_KEY.match(key)
    if not match or match[1] not in _BLT_VS_AREAS_BACK or match[2] not in _BLT_VS_MODULES_BACK:
        raise KeyError(f"not a key of the zoo blt_vs state dict: {key!r}")
    return f"connections.{_BLT_VS_AREAS_BACK[match[1]]}.{_BLT_VS_MODULES_BACK[match[2]]}.{match[3]}"


def is_blt_vs_reference_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True if ``state_dict`` uses the published layout (``connections.<Area>.*`` keys)."""
    return any(k.startswith("connections.") for k in state_dict)


def convert_blt_vs_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Published BLT-VS state dict -> zoo ``blt_vs`` state dict (same tensors, renamed keys).

    The input is what ``torch.load`` returns for a published ``.pth`` file (``module.`` prefixes
    already removed, e.g. by :func:`blt_models._builder.extract_state_dict`). A state dict that is
    already in the zoo layout is returned unchanged (as a new dict), so the function can be applied
    to any file. Order is kept; unknown ``connections.*`` keys raise ``KeyError``.
    """
    if not is_blt_vs_reference_state_dict(state_dict):
        return dict(state_dict)
    return {blt_vs_key_from_reference(k): v for k, v in state_dict.items()}


def blt_vs_state_dict_to_reference(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Zoo ``blt_vs`` state dict -> the published layout, loadable by the reference ``BLT_VS``."""
    if is_blt_vs_reference_state_dict(state_dict):
        return dict(state_dict)
    return {blt_vs_key_to_reference(k): v for k, v in state_dict.items()}


_BLT_VS_FILENAME = re.compile(
    r"blt_vs_slt_(?P<s>[01])(?P<l>[01])(?P<t>[01])_biounroll_(?P<bio>[01])_t_(?P<steps>\d+)"
    r"_readout_(?P<readout>[a-z]+)_dataset_(?P<dataset>[a-z0-9]+)"
)
_BLT_VS_DATASET_CLASSES = {"imagenet": 1000, "ecoset": 565}


def blt_vs_kwargs_from_filename(filename: str | os.PathLike[str]) -> dict[str, Any]:
    """``blt_vs`` constructor arguments encoded in a published file name.

    ``blt_vs_slt_111_biounroll_0_t_6_readout_multi_dataset_imagenet_num_1.pth`` -> skip, lateral
    and top-down connections on, standard unrolling, 6 steps, 'multi' readout, 1000 classes.
    Raises ``ValueError`` for a name that does not follow the pattern.
    """
    name = os.path.basename(os.fspath(filename))
    match = _BLT_VS_FILENAME.search(name)
    if not match:
        raise ValueError(
            f"{name!r} is not a BLT-VS weight-file name (blt_vs_slt_<SLT>_biounroll_<0|1>_t_<T>_"
            "readout_<type>_dataset_<name>_num_<run>.pth)"
        )
    kwargs: dict[str, Any] = {
        "skip_connections": match["s"] == "1",
        "lateral_connections": match["l"] == "1",
        "topdown_connections": match["t"] == "1",
        "unroll": "biological" if match["bio"] == "1" else "standard",
        "timesteps": int(match["steps"]),
        "readout_type": "single" if match["readout"] == "single" else "multi",
    }
    if match["dataset"] in _BLT_VS_DATASET_CLASSES:
        kwargs["num_classes"] = _BLT_VS_DATASET_CLASSES[match["dataset"]]
    return kwargs


def blt_vs_kwargs_from_state_dict(
    state_dict: Mapping[str, Any], add_feats: int = 100
) -> dict[str, Any]:
    """Constructor arguments that a BLT-VS state dict (either layout) pins down by itself.

    Image size (from the Retina kernel), connection flags (from the keys present), readout type
    and classes (readout channels minus ``add_feats``, which the file cannot tell apart). The
    unrolling mode and the number of steps are not in the weights (except through the length of
    ``readout_weights``); take them from the file name or the pretrained tag.
    """
    sd = convert_blt_vs_state_dict(state_dict)
    if "retina.bu_conv.weight" not in sd or "readout.conv.weight" not in sd:
        raise ValueError("not a BLT-VS state dict (no retina.bu_conv / readout.conv weights)")
    kernel = int(sd["retina.bu_conv.weight"].shape[-1])
    sizes = {7: 224, 5: 128}
    if kernel not in sizes:
        raise ValueError(f"Retina kernel {kernel} fits neither image size (7: 224 px, 5: 128 px)")
    return {
        "image_size": sizes[kernel],
        "in_chans": int(sd["retina.bu_conv.weight"].shape[1]),
        "num_classes": int(sd["readout.conv.weight"].shape[0]) - add_feats,
        "add_feats": add_feats,
        "lateral_connections": any(".bu_lateral." in k for k in sd),
        "topdown_connections": any(".td_conv." in k for k in sd),
        "skip_connections": any("_skip." in k for k in sd),
        "readout_type": "single" if "readout_weights" in sd else "multi",
    }
