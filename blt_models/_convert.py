"""Checkpoints of other code bases -> zoo models (reference BLT training script, BLT-VS, ...).

Each family owns its key map ([`convert_state_dict`][blt_models.ClockedModel.convert_state_dict]: BLT-VS in
``models/blt_vs.py``, ResNet in ``models/resnet.py``); this module reads what such files record
about their architecture (the reference script's ``args``, an ``'arch'`` entry, BLT-VS file
names) and builds the zoo model through [`blt_models.create_model`][blt_models.create_model]. Every recorded value is
checked and named with its origin (``args.recurrent_steps of checkpoint.pth``).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from ._checkpoint import extract_state_dict, load_state_dict_strict, read_checkpoint
from ._clock import ClockedModel
from ._factory import create_model, create_with_origins
from ._pretrained import PretrainedCfg
from ._registry import get_pretrained_cfg, is_model, split_model_name_tag
from ._validate import check_int, check_str, check_timesteps
from ._weights_hash import LOADED_SHA256_ATTR, weights_sha256
from .errors import ConfigValueError, InvalidWeightsError, UnknownModelError
from .models.blt_vs import convert_blt_vs_state_dict, is_blt_vs_reference_state_dict

__all__ = [
    "load_reference_checkpoint",
    "reference_args_to_kwargs",
    "convert_checkpoint",
    "load_convrnn_checkpoint",
    "convert_convrnn_checkpoint",
    "blt_vs_kwargs_from_filename",
    "blt_vs_kwargs_from_state_dict",
]

_REFERENCE_POOLS = ("max", "avg", "average", "blur")


def _reference_arch(value: Any, origin: str) -> str:
    """``args.model``: only a registered architecture name (never a Hub repo or a folder)."""
    field = f"args.model ({origin})"
    if not isinstance(value, str) or not value:
        raise ConfigValueError(
            f"{field} = {value!r}: must be the name of a registered architecture (a string such "
            "as 'blt_bl')."
        )
    if ":" in value or "." in value or "/" in value:
        raise ConfigValueError(
            f"{field} = {value!r}: a checkpoint may only name a registered architecture, not a "
            "tag, Hub repo or folder (its contents must not choose what is downloaded). Build the "
            "model yourself: create_model(ARCH, checkpoint_path=PATH)."
        )
    if not is_model(value):
        raise UnknownModelError(
            f"{field} = {value!r} is not a registered architecture; see blt_models.list_models()."
        )
    return value


def reference_args_to_kwargs(
    args: argparse.Namespace | Mapping[str, Any], origin: str = "the checkpoint"
) -> tuple[str, dict[str, Any]]:
    """Architecture name and ``create_model`` kwargs from the reference script's saved ``args``.

    Every value is checked: ``args.model`` must be a registered architecture,
    ``recurrent_steps`` / ``num_layers`` / ``num_classes`` integers in range, ``pool`` one of the
    reference's choices. Errors ([`ConfigValueError`][blt_models.errors.ConfigValueError]) name the field and
    ``origin``.
    """
    if isinstance(args, argparse.Namespace):
        a = vars(args)
    elif isinstance(args, Mapping):
        a = dict(args)
    else:
        raise ConfigValueError(
            f"args ({origin}) is a {type(args).__name__}, not the argparse.Namespace the reference "
            "training script stores; use create_model(ARCH, checkpoint_path=PATH) instead."
        )
    if "model" not in a:
        raise ConfigValueError(f"the args of {origin} record no 'model' name")
    arch = _reference_arch(a["model"], origin)

    def get(key: str, default: Any) -> tuple[Any, str]:
        return a.get(key, default), f"{origin}" if key in a else f"default for {origin}"

    def num(key: str, default: int, lo: int, hi: int) -> int:
        value, where = get(key, default)
        return check_int(value, f"args.{key}", where, lo, hi)

    kwargs: dict[str, Any] = {}
    if arch.startswith("blt"):
        steps, where = get("recurrent_steps", 10)
        pool, pool_where = get("pool", None)
        kwargs = {
            "num_layers": num("num_layers", 6, 1, 64),
            "timesteps": check_timesteps(steps, "args.recurrent_steps", where),
            # Checkpoints older than the --pool flag were trained with max pooling.
            "pool": check_str(pool or "max", "args.pool", pool_where, _REFERENCE_POOLS),
            "num_classes": num("num_classes", 1000, 1, 1_000_000),
        }
    elif arch in ("cornet_r", "cornet_rt"):
        steps, where = get("recurrent_steps", 5)
        kwargs = {
            "timesteps": check_timesteps(steps, "args.recurrent_steps", where),
            "num_classes": num("num_classes", 1000, 1, 1_000_000),
        }
    elif arch.startswith("cornet"):
        kwargs = {"num_classes": num("num_classes", 1000, 1, 1_000_000)}
    # resnet: the reference builds ResNet() with its defaults (1000 classes) whatever the args say.
    return arch, kwargs


_ARG_NAMES = {"timesteps": "recurrent_steps"}


def _create_from_args(
    arch: str, kwargs: dict[str, Any], overrides: dict[str, Any], origin: str
) -> ClockedModel:
    origins = {k: f"args.{_ARG_NAMES.get(k, k)} of {origin}" for k in kwargs}
    origins.update(dict.fromkeys(overrides, "argument"))
    build = {**kwargs, **overrides}
    named = {k: build.pop(k) for k in ("num_classes", "in_chans", "timesteps") if k in build}
    return create_with_origins(arch, kwargs=build, arg_origins=origins, **named)


def _args_of(checkpoint: Any) -> Any:
    return checkpoint.get("args") if isinstance(checkpoint, Mapping) else None


def load_reference_checkpoint(
    path: str | os.PathLike[str], check_values: bool = True, **overrides: Any
) -> ClockedModel:
    """Build the architecture recorded in a reference training checkpoint and load it strictly.

    The file is what the reference ``main.py`` writes: ``{'model': state_dict, 'args': Namespace,
    'optimizer', 'lr_scheduler', 'epoch', 'val_perf'}`` (``module.`` / ``_orig_mod.`` prefixes are
    accepted). It is read with ``weights_only=True``; only ``argparse.Namespace`` is allow-listed.
    ``args.model`` must name a registered architecture. ``overrides`` replace recorded arguments
    (e.g. ``timesteps=15``).
    """
    checkpoint = read_checkpoint(path)
    origin = f"checkpoint {os.fspath(path)!r}"
    args = _args_of(checkpoint)
    if args is None:
        raise ConfigValueError(
            f"{os.fspath(path)!r} has no 'args' entry, so its architecture is unknown; use "
            "create_model(ARCH, checkpoint_path=PATH) with the architecture it was trained with."
        )
    arch, kwargs = reference_args_to_kwargs(args, origin)
    model = _create_from_args(arch, kwargs, overrides, origin)
    load_state_dict_strict(
        model, extract_state_dict(checkpoint, origin), what=origin, check_values=check_values
    )
    if model.pretrained_cfg is not None:  # where the weights came from, as create_model records it
        model.pretrained_cfg = model.pretrained_cfg.replace(  # type: ignore[attr-defined]
            source=f"checkpoint_path {os.fspath(path)}"
        )
    setattr(model, LOADED_SHA256_ATTR, weights_sha256(model))
    return model


def _convert_blt_vs(
    path: str | os.PathLike[str],
    state: Mapping[str, Any],
    overrides: dict[str, Any],
    check_values: bool = True,
) -> tuple[ClockedModel, str]:
    """A published BLT-VS file: configuration from its name (or its weights), tag from its dataset."""
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
    named = {k: kwargs.pop(k) for k in ("num_classes", "in_chans", "timesteps") if k in kwargs}
    model = create_with_origins(
        arch, checkpoint_path=path, check_values=check_values, kwargs=kwargs, **named
    )
    # A checkpoint_path model carries no provenance of the tag; a file named as the authors'
    # release keeps what describes that release (not its metrics: these bytes are unverified).
    converted = cast(PretrainedCfg, model.pretrained_cfg)
    release = get_pretrained_cfg("blt_vs", tag) if tag else None
    model.pretrained_cfg = converted.replace(
        license=release.license if release else None,
        training_data=release.training_data if release else None,
        description=release.description if release else None,
        source=f"{release.source if release else ''}; converted by blt-models from {name}".lstrip(
            "; "
        ),
    )
    return model, f"{arch}: published BLT-VS file, {how}"


def _arch_from_record(recorded: Any) -> str | None:
    """A registered architecture for a name recorded in a file (``'CORnet_Z'`` -> ``cornet_z``)."""
    if not isinstance(recorded, str) or not recorded or ":" in recorded or "/" in recorded:
        return None
    for candidate in (recorded, recorded.lower(), recorded.lower().replace("-", "_")):
        arch, _ = split_model_name_tag(candidate)
        if is_model(arch):
            return arch
    return None


def convert_checkpoint(
    path: str | os.PathLike[str],
    arch: str | None = None,
    check_values: bool = True,
    **overrides: Any,
) -> tuple[ClockedModel, str]:
    """A zoo model with the weights of a foreign checkpoint, and a line saying how it was read.

    * Reference BLT training checkpoints (``{'model', 'args', ...}``): the architecture and its
      arguments come from ``args`` (``arch`` may only confirm it); the pretrained config is the
      registered one of ``args.dataset`` (mean / std of that training set), with provenance from
      the file (epoch, ``val_perf``).
    * Keras HDF5 files (the published rcnn-sat B / BL networks): variant, widths, classes and
      steps from the file's layers, see [`blt_models.convert_rcnn_sat_h5`][blt_models.convert_rcnn_sat_h5].
    * TensorFlow checkpoints (a folder holding ``model.ckpt.index`` + ``.data-*``, the prefix
      or one of its files): the ConvRNNs of Nayebi et al. 2022; model and widths from the
      variables, see [`blt_models.convert_convrnn_checkpoint`][blt_models.convert_convrnn_checkpoint].
    * Other files (official CORnet ``{'state_dict': {'module.' + k}, 'arch', ...}``, plain state
      dicts, safetensors): the architecture is ``arch`` or the file's ``'arch'`` entry, and the
      weights go through the family's own key conversion.

    ``overrides`` are constructor arguments (``timesteps=15``...). Loading is strict.
    """
    from ._keras_h5 import is_hdf5_file, is_hdf5_name

    if _is_tf_checkpoint(path):  # a TensorFlow checkpoint: the ConvRNNs (Nayebi et al. 2022)
        return load_convrnn_checkpoint(path, arch=arch, **overrides)
    # A Keras HDF5 weight file (the rcnn-sat networks, Spoerer et al. 2020), or a file named as
    # one, which the Keras reader refuses by its contents.
    if is_hdf5_file(path) or is_hdf5_name(path):
        from ._convert_rcnn_sat import load_rcnn_sat_h5

        return load_rcnn_sat_h5(path, arch=arch, **overrides)
    name = os.path.basename(os.fspath(path))
    origin = f"checkpoint {name!r}"
    checkpoint = read_checkpoint(path)
    args = _args_of(checkpoint)
    if args is not None:
        recorded, kwargs = reference_args_to_kwargs(args, origin)
        if arch and arch != recorded:
            raise ConfigValueError(
                f"{name} records the architecture {recorded!r} in its args, not {arch!r}; drop --arch "
                "(the file's own record is used) or check the file."
            )
        model = _create_from_args(recorded, kwargs, overrides, origin)
        load_state_dict_strict(
            model, extract_state_dict(checkpoint, origin), what=origin, check_values=check_values
        )
        kwargs.update(overrides)
        a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        dataset = a.get("dataset")
        if not isinstance(dataset, str) or "." in dataset or ":" in dataset:
            dataset = None  # not a name the registry could know
        try:
            cfg = get_pretrained_cfg(recorded, dataset) if dataset else None
        except UnknownModelError:  # no registered setup for that dataset
            cfg = None
        base = cast(PretrainedCfg, model.pretrained_cfg)
        if cfg is not None:
            base = cfg.replace(
                num_classes=model.num_classes, timesteps=model.timesteps,
                unroll=getattr(model, "unroll", cfg.unroll), model_args={},
                class_names=cfg.class_names if cfg.num_classes == model.num_classes else None,
            )  # fmt: skip
        epoch, perf = checkpoint.get("epoch"), checkpoint.get("val_perf")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            epoch = None
        metrics: dict[str, Any] = {}
        if isinstance(perf, (int, float)) and not isinstance(perf, bool):
            metrics["reference_val_perf"] = float(perf)  # top-1 fraction of the best epoch
        model.pretrained_cfg = base.replace(
            tag=dataset or "", license=None, metrics=metrics, training_data=cfg.training_data if cfg else dataset,
            source=f"converted by blt-models from the reference training checkpoint {name}"
            + (f" (epoch {epoch})" if epoch is not None else ""),
        )  # fmt: skip
        how = f"reference training checkpoint: {recorded} from its args ({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        return model, how

    state = extract_state_dict(checkpoint, origin)
    if is_blt_vs_reference_state_dict(state) and arch in (None, "blt_vs"):
        return _convert_blt_vs(path, state, overrides, check_values)

    recorded_arch = checkpoint.get("arch") if isinstance(checkpoint, Mapping) else None
    from_file = _arch_from_record(recorded_arch)
    if recorded_arch and arch and from_file and from_file != arch:
        raise ConfigValueError(f"{name} records the architecture {recorded_arch!r}, not {arch!r}")
    chosen = arch or from_file
    if not chosen:
        detail = (
            f"its 'arch' entry {recorded_arch!r} is not a registered name"
            if recorded_arch
            else "it records none"
        )
        raise ConfigValueError(
            f"cannot tell the architecture of {name} ({detail}); pass it with --arch NAME "
            "(see `blt-models list`)."
        )
    if not is_model(chosen) or "." in chosen:
        raise UnknownModelError(f"--arch {chosen!r} is not a registered architecture")
    named = {
        k: overrides.pop(k) for k in ("num_classes", "in_chans", "timesteps") if k in overrides
    }
    model = create_with_origins(
        chosen, checkpoint_path=path, check_values=check_values, kwargs=overrides, **named
    )
    converted = cast(PretrainedCfg, model.pretrained_cfg)
    model.pretrained_cfg = converted.replace(source=f"converted by blt-models from {name}")
    origin = f"from the file's 'arch' entry {recorded_arch!r}" if not arch else "from --arch"
    return model, f"{chosen} ({origin})"


def _is_tf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """A folder with a ``*.index`` file, a prefix whose ``.index`` exists, or a checkpoint file."""
    from ._tf_checkpoint import resolve_tf_checkpoint_prefix

    p = os.fspath(path)
    if not (os.path.isdir(p) or os.path.isfile(p + ".index") or re.search(
        r"\.(index|meta)$|\.data-\d{5}-of-\d{5}$", p
    )):  # fmt: skip
        return False
    try:
        resolve_tf_checkpoint_prefix(p)
    except (OSError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------------- ConvRNNs
def load_convrnn_checkpoint(
    path: str | os.PathLike[str], arch: str | None = None, **overrides: Any
) -> tuple[Any, str]:
    """A zoo model with the weights of a ConvRNN TensorFlow checkpoint, and a line saying what
    it is.

    Args:
        path: the checkpoint prefix (``.../model.ckpt``), its ``.index`` file or its folder.
        arch: confirm the model; needed only for the t22 / t30 models when the folder is not
            named after them (their variables are their base model's).
        overrides: ``timesteps`` (the default clock); the weights fix everything else.

    The pretrained config is the tag ``<arch>.imagenet``'s (preprocessing, protocol, class
    names, citation) with the checkpoint as its source (widths other than the published ones:
    no class names or training claims).
    """
    from ._convert_convrnn import inspect_convrnn_variables
    from .models.convrnn import tf_to_state_dict

    fixed = sorted(set(overrides) - {"timesteps"})
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)} cannot be chosen for a ConvRNN checkpoint: the variables fix the "
            "architecture; only timesteps (the default clock) can be set"
        )
    from ._tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint, resolve_tf_checkpoint_prefix

    prefix = resolve_tf_checkpoint_prefix(path)
    shapes = {k: info.shape for k, info in list_tf_checkpoint(prefix).items()}
    # absolute (symbolic links kept): a relative prefix still names its folder
    spec = inspect_convrnn_variables(shapes, arch=arch, name_hint=os.path.abspath(prefix))
    variables = read_tf_checkpoint(prefix)
    kwargs = dict(spec.kwargs)
    if overrides.get("timesteps") is not None:
        kwargs["timesteps"] = overrides["timesteps"]
    model = create_model(spec.arch, **kwargs)
    what = f"ConvRNN checkpoint {os.fspath(path)!r}"
    load_state_dict_strict(model, tf_to_state_dict(variables, model), what=what)
    release = get_pretrained_cfg(spec.arch, "imagenet")
    base = release if spec.published else cast(Any, model.pretrained_cfg)
    model.pretrained_cfg = base.replace(
        architecture=spec.arch, tag="imagenet" if spec.published else "", url=None, sha256=None,
        num_classes=model.num_classes, timesteps=model.timesteps, protocol=release.protocol,
        class_names=release.class_names if model.num_classes == 1000 else None,
        metrics=release.metrics if spec.published else {},
        source=f"converted by blt-models from the TensorFlow checkpoint {os.fspath(path)}; "
        + (release.source or ""),
    )  # fmt: skip
    how = f"{spec.arch}: ConvRNN TensorFlow checkpoint; " + "; ".join(spec.notes)
    return model, how


def convert_convrnn_checkpoint(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    arch: str | None = None,
    **pretrained_cfg: Any,
) -> Path:
    """Convert a ConvRNN TensorFlow checkpoint into a published blt-models folder.

    ``convert_convrnn_checkpoint("rgc_intermediate/model.ckpt", "rgc_intermediate_pt")`` writes
    ``model.safetensors``, ``config.json`` and ``README.md`` and checks that
    ``create_model("local-dir:rgc_intermediate_pt")`` reloads identical weights. The model and
    its widths come from the variables (`inspect_convrnn_variables`). Returns the folder.

    Raises:
        ConvRNNCheckpointError: the checkpoint is no ConvRNN (the message lists what it holds).
    """
    from ._factory import save_and_check_reload

    model, _ = load_convrnn_checkpoint(path, arch=arch)
    return Path(save_and_check_reload(model, out_dir, **pretrained_cfg))


# --------------------------------------------------------------------------------- BLT-VS
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
        raise ConfigValueError(
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
        raise InvalidWeightsError(
            "not a BLT-VS state dict (no retina.bu_conv / readout.conv weights)"
        )
    kernel = int(sd["retina.bu_conv.weight"].shape[-1])
    sizes = {7: 224, 5: 128}
    if kernel not in sizes:
        raise InvalidWeightsError(
            f"Retina kernel {kernel} fits neither image size (7: 224 px, 5: 128 px)"
        )
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
