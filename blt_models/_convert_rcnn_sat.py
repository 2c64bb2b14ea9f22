"""Published rcnn-sat Keras HDF5 files (Spoerer et al. 2020, OSF project mz9hw) -> zoo models.

``inspect_rcnn_sat_h5`` reads which variant a file holds (B, B-K, B-F, B-D or BL), its widths,
its number of classes and, for BL, its number of steps, from the layers alone, and refuses a file
that fits none with a report of what it holds. ``load_rcnn_sat_h5`` builds the model and loads
the weights strictly; [`convert_rcnn_sat_h5`][blt_models.convert_rcnn_sat_h5] writes the published format (safetensors +
``config.json`` + card) with the class names of ecoset (565 classes) or ImageNet (1000).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ._checkpoint import load_state_dict_strict
from ._clock import ClockedModel
from ._keras_h5 import KerasWeightsFile, read_keras_h5
from ._pretrained import PretrainedCfg
from .errors import ConfigValueError, KerasWeightsError

__all__ = ["RcnnSatFileSpec", "inspect_rcnn_sat_h5", "load_rcnn_sat_h5", "convert_rcnn_sat_h5"]

_BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
_B_CONV = re.compile(r"^Conv_Layer_(\d+)$")
_B_NORM = re.compile(r"^BatchNorm_Layer_(\d+)$")
_BL_CONV = re.compile(r"^RCL_(\d+)_(BConv|LConv)$")
_BL_NORM = re.compile(r"^BatchNorm_Layer_(\d+)_Time_(\d+)$")
_DATASET_CLASSES = {565: "ecoset", 1000: "imagenet"}


@dataclass
class RcnnSatFileSpec:
    """What an rcnn-sat weight file holds: ``create_model(arch, **kwargs)`` fits it.

    ``published`` is True when the widths (and for BL the 8 steps and RGB input) are those of the
    published networks; ``notes`` say how the variant was chosen.
    """

    arch: str
    kwargs: dict[str, Any]
    published: bool
    notes: list[str] = field(default_factory=list)


def _summary(found: KerasWeightsFile) -> str:
    """``'61 layers with weights (28,047,701 numbers): RCL_#_BConv x7, ...; ReadoutDense kernel
    [2048, 565]'``: the names with digits folded, and the shapes that decide the variant."""
    patterns = Counter(re.sub(r"\d+", "#", name) for name in found.layers)
    parts = [f"{p} x{c}" if c > 1 else p for p, c in patterns.items()]
    head = ", ".join(parts[:12]) + (
        f", ... ({len(parts) - 12} more kinds)" if len(parts) > 12 else ""
    )
    shapes = []
    for name in ("RCL_0_BConv", "Conv_Layer_0", "ReadoutDense"):
        if name in found.layers:
            shapes += [f"{name}/{w} {list(a.shape)}" for w, a in found.layers[name].items()]
    return (
        f"{len(found.layers)} layers with weights ({found.num_values:,} numbers, Keras "
        f"{found.keras_version or '?'}, {found.layout} layout): {head or 'none'}"
        + (f"; {', '.join(shapes)}" if shapes else "")
    )


class _Refusal(Exception):
    pass


def _weights(found: KerasWeightsFile, layer: str, names: tuple[str, ...]) -> list[np.ndarray]:
    if layer not in found.layers:
        raise _Refusal(f"no {layer} layer")
    got = found.layers[layer]
    if tuple(sorted(got)) != tuple(sorted(names)):
        raise _Refusal(f"layer {layer} holds weights {sorted(got)}, expected {sorted(names)}")
    return [got[n] for n in names]


def _conv_kernel(
    found: KerasWeightsFile, layer: str, kernel: int, c_in: int | None
) -> tuple[int, int]:
    (value,) = _weights(found, layer, ("kernel",))
    if value.ndim != 4 or value.shape[0] != value.shape[1]:
        raise _Refusal(f"{layer}/kernel has shape {list(value.shape)}, not [k, k, in, out]")
    if value.shape[0] != kernel:
        raise _Refusal(f"{layer} has a {value.shape[0]}x{value.shape[1]} kernel, expected {kernel}")
    if c_in is not None and value.shape[2] != c_in:
        raise _Refusal(
            f"{layer}/kernel {list(value.shape)} takes {value.shape[2]} input channels, but the "
            f"layer below gives {c_in}"
        )
    return int(value.shape[2]), int(value.shape[3])


def _norm(found: KerasWeightsFile, layer: str, channels: int) -> None:
    for name, value in zip(_BN_WEIGHTS, _weights(found, layer, _BN_WEIGHTS), strict=True):
        if value.shape != (channels,):
            raise _Refusal(f"{layer}/{name} has shape {list(value.shape)}, expected [{channels}]")


def _readout(found: KerasWeightsFile, channels: int) -> int:
    if "ReadoutDense" not in found.layers:
        raise _Refusal("no ReadoutDense layer")
    kernel, bias = _weights(found, "ReadoutDense", ("kernel", "bias"))
    if kernel.ndim != 2 or kernel.shape[0] != channels or bias.shape != (kernel.shape[1],):
        raise _Refusal(
            f"ReadoutDense kernel {list(kernel.shape)} / bias {list(bias.shape)} do not read "
            f"{channels} features into one output per class"
        )
    return int(kernel.shape[1])


def _indices(names: list[str], pattern: re.Pattern[str]) -> list[int]:
    return sorted({int(m[1]) for n in names if (m := pattern.match(n))})


def _inspect_bl(found: KerasWeightsFile) -> RcnnSatFileSpec:
    from .models.rcnn_sat import RCNN_SAT_BL_CHANNELS, RCNN_SAT_BL_KERNELS

    names = list(found.layers)
    rcls = _indices(names, _BL_CONV)
    if rcls != list(range(len(RCNN_SAT_BL_KERNELS))):
        raise _Refusal(f"BL has RCL_0 .. RCL_6; the file has RCL layers {rcls}")
    steps: dict[int, list[int]] = {}
    for name in names:
        if match := _BL_NORM.match(name):
            steps.setdefault(int(match[1]), []).append(int(match[2]))
    timesteps = max((max(s) for s in steps.values()), default=-1) + 1
    for n in rcls:
        if sorted(steps.get(n, [])) != list(range(timesteps)) or timesteps < 1:
            raise _Refusal(
                f"BL has one BatchNorm per layer and step; layer {n} has them for steps "
                f"{sorted(steps.get(n, []))}, other layers up to step {timesteps - 1}"
            )
    channels: list[int] = []
    c_in: int | None = None
    in_chans = 3
    for n, kernel in enumerate(RCNN_SAT_BL_KERNELS):
        got_in, c_out = _conv_kernel(found, f"RCL_{n}_BConv", kernel, c_in)
        if n == 0:
            in_chans = got_in
        _conv_kernel(found, f"RCL_{n}_LConv", kernel, c_out)
        if found.layers[f"RCL_{n}_LConv"]["kernel"].shape[3] != c_out:
            raise _Refusal(f"RCL_{n}_LConv must map {c_out} channels onto {c_out}")
        for t in range(timesteps):
            _norm(found, f"BatchNorm_Layer_{n}_Time_{t}", c_out)
        channels.append(c_out)
        c_in = c_out
    classes = _readout(found, channels[-1])
    kwargs: dict[str, Any] = {"num_classes": classes, "timesteps": timesteps, "in_chans": in_chans}
    published = tuple(channels) == RCNN_SAT_BL_CHANNELS and timesteps == 8 and in_chans == 3
    if tuple(channels) != RCNN_SAT_BL_CHANNELS:
        kwargs["channels"] = channels
    notes = [f"BL: RCL_0..6 with BatchNorms for {timesteps} steps, {classes} classes"]
    if not published:
        notes.append(
            f"not the published shape (widths {channels}, {timesteps} steps, {in_chans} input "
            "channels; published: widths 96..2048, 8 steps, RGB)"
        )
    return RcnnSatFileSpec("rcnn_bl", kwargs, published, notes)


def _inspect_b(found: KerasWeightsFile, arch: str | None) -> RcnnSatFileSpec:
    from .models.rcnn_sat import RCNN_SAT_B_VARIANTS

    names = list(found.layers)
    convs, norms = _indices(names, _B_CONV), _indices(names, _B_NORM)
    if convs != list(range(len(convs))) or norms != convs:
        raise _Refusal(
            f"a B network has Conv_Layer_n and BatchNorm_Layer_n for n = 0, 1, ...; the file has "
            f"conv layers {convs} and BatchNorm layers {norms}"
        )
    kernels = tuple(int(found.layers[f"Conv_Layer_{n}"]["kernel"].shape[0]) for n in convs)
    candidates = [
        v for v, (_, k, _) in RCNN_SAT_B_VARIANTS.items() if len(k) == len(convs) and k == kernels
    ]
    if not candidates:
        tables = {f"rcnn_{v}": list(k) for v, (_, k, _) in RCNN_SAT_B_VARIANTS.items()}
        raise _Refusal(
            f"{len(convs)} conv layers with kernels {list(kernels)} fit no B variant (kernels: "
            f"{tables})"
        )
    channels: list[int] = []
    c_in: int | None = None
    in_chans = 3
    for n, kernel in enumerate(kernels):
        got_in, c_out = _conv_kernel(found, f"Conv_Layer_{n}", kernel, c_in)
        if n == 0:
            in_chans = got_in
        _norm(found, f"BatchNorm_Layer_{n}", c_out)
        channels.append(c_out)
        c_in = c_out
    classes = _readout(found, channels[-1])
    notes: list[str] = []
    if arch is not None:
        variant = arch.removeprefix("rcnn_")
        if variant not in candidates:
            raise _Refusal(
                f"the file's layers (kernels {list(kernels)}) fit "
                f"{', '.join('rcnn_' + c for c in candidates)}, not {arch}"
            )
        notes.append(f"variant {arch} as requested (its kernels and pooling fit the file)")
    else:
        exact = [v for v in candidates if tuple(channels) == RCNN_SAT_B_VARIANTS[v][0]]
        variant = exact[0] if exact else candidates[0]
        if exact:
            notes.append(f"variant rcnn_{variant}: its kernels and widths")
        elif len(candidates) > 1:
            notes.append(
                f"widths {channels} are neither {' nor '.join('rcnn_' + c for c in candidates)}'s "
                f"(same kernels and pooling): built as rcnn_{variant} with these widths; pass "
                "arch= (--arch) to name another"
            )
        else:
            notes.append(f"variant rcnn_{variant} from its kernels, with widths {channels}")
    default = RCNN_SAT_B_VARIANTS[variant][0]
    kwargs: dict[str, Any] = {"num_classes": classes, "in_chans": in_chans}
    if tuple(channels) != default:
        kwargs["channels"] = channels
    published = tuple(channels) == default and in_chans == 3
    notes.insert(0, f"B family: {len(convs)} conv layers, {classes} classes")
    return RcnnSatFileSpec(f"rcnn_{variant}", kwargs, published, notes)


def inspect_rcnn_sat_h5(
    path: str | os.PathLike[str] | KerasWeightsFile, arch: str | None = None
) -> RcnnSatFileSpec:
    """Which rcnn-sat network a Keras HDF5 file holds, read from its layers alone.

    Args:
        path: the file (either Keras layout), or what ``blt_models._keras_h5.read_keras_h5``
            read from it.
        arch: confirm a variant (``"rcnn_b_f"``...); needed only to tell B from B-F when the
            widths are neither table's (they share kernels and pooling).

    Raises:
        KerasWeightsError: the file fits no variant (or not ``arch``); the message says why and
            lists what the file holds.
    """
    found = path if isinstance(path, KerasWeightsFile) else read_keras_h5(path)
    from .models.rcnn_sat import RCNN_SAT_ARCHS

    if arch is not None and arch not in RCNN_SAT_ARCHS:
        raise KerasWeightsError(
            f"arch={arch!r} is not an rcnn-sat architecture ({', '.join(RCNN_SAT_ARCHS)})"
        )
    names = list(found.layers)
    bl = [n for n in names if _BL_CONV.match(n) or _BL_NORM.match(n)]
    b = [n for n in names if _B_CONV.match(n) or _B_NORM.match(n)]
    other = [n for n in names if n not in bl and n not in b and n != "ReadoutDense"]
    try:
        if other:
            shown = ", ".join(other[:8]) + (f" (+{len(other) - 8})" if len(other) > 8 else "")
            raise _Refusal(f"layers with weights that no rcnn-sat network has: {shown}")
        if bl and b:
            raise _Refusal("layers of both the B (Conv_Layer_n) and the BL (RCL_n) networks")
        if not bl and not b:
            raise _Refusal("no Conv_Layer_n (B) or RCL_n_BConv (BL) layers")
        if bl:
            if arch not in (None, "rcnn_bl"):
                raise _Refusal(f"the file holds a BL network (RCL layers), not {arch}")
            return _inspect_bl(found)
        if arch == "rcnn_bl":
            raise _Refusal("the file holds a feed-forward B network (Conv_Layer_n), not rcnn_bl")
        return _inspect_b(found, arch)
    except _Refusal as why:
        raise KerasWeightsError(
            f"{found.path.name} matches no rcnn-sat network: {why}.\n  Found: {_summary(found)}.\n"
            "  Expected a Keras weight file of rcnn-sat's B, B-K, B-F, B-D (Conv_Layer_n, "
            "BatchNorm_Layer_n, ReadoutDense) or BL (RCL_n_BConv, RCL_n_LConv, "
            "BatchNorm_Layer_n_Time_t, ReadoutDense)."
        ) from None


def _class_names(classes: int, given: Any) -> tuple[tuple[str, ...] | None, str]:
    from ._pretrained import imagenet_class_names
    from .models.rcnn_sat import rcnn_sat_ecoset_class_names

    if given is not None:
        if (
            isinstance(given, (str, bytes))
            or not isinstance(given, (list, tuple))
            or not all(isinstance(n, str) for n in given)
        ):
            raise ConfigValueError(
                f"class_names = {given!r}: must be a list of strings, one per class of the file "
                f"({classes})."
            )
        names = tuple(given)
        if len(names) != classes:
            raise ConfigValueError(
                f"class_names has {len(names)} names; the file has {classes} classes"
            )
        return names, "class names as given"
    if classes == 565:
        return rcnn_sat_ecoset_class_names(), (
            "class names: the lines of rcnn-sat's pretrained_output_categories/ecoset_categories.txt"
        )
    if classes == 1000:
        return imagenet_class_names(), (
            "class names: torchvision's ImageNet-1k names, in the standard ILSVRC-2012 label order"
        )
    return None, f"no class names ({classes} classes: neither ecoset's 565 nor ImageNet's 1000)"


def load_rcnn_sat_h5(
    path: str | os.PathLike[str],
    arch: str | None = None,
    class_names: Any = None,
    **overrides: Any,
) -> tuple[ClockedModel, str]:
    """A zoo model with the weights of an rcnn-sat Keras HDF5 file, and a line saying what it is.

    The variant, widths, classes and (BL) steps come from the file (``inspect_rcnn_sat_h5``);
    the pretrained config is that of the dataset the number of classes names (565: ecoset, 1000:
    ImageNet; preprocessing, class names, citation) with the file as its source. ``overrides``
    may set ``cumulative_readout`` (BL); the weights fix everything else.
    """
    from ._factory import create_model
    from ._registry import get_pretrained_cfg

    found = read_keras_h5(path)
    spec = inspect_rcnn_sat_h5(found, arch)
    allowed = {"cumulative_readout"} if spec.arch == "rcnn_bl" else set()
    fixed = sorted(set(overrides) - allowed)
    if fixed:
        raise ConfigValueError(
            f"{', '.join(fixed)} cannot be chosen for {found.path.name}: the weights fix the "
            f"architecture of {spec.arch} ({', '.join(f'{k}={v}' for k, v in spec.kwargs.items())})"
            + ("; only cumulative_readout can be set" if allowed else "")
        )
    kwargs = dict(spec.kwargs)
    if spec.arch == "rcnn_bl":
        flag = overrides.get("cumulative_readout", False)
        if not isinstance(flag, bool):
            raise ConfigValueError(
                f"cumulative_readout = {flag!r} ({type(flag).__name__}): must be True or False."
            )
        kwargs["cumulative_readout"] = flag
    model = create_model(spec.arch, **kwargs)
    load_state_dict_strict(model, found.state_dict(), what=f"Keras weight file {found.path.name!r}")

    classes = int(kwargs["num_classes"])
    names, names_note = _class_names(classes, class_names)
    dataset = _DATASET_CLASSES.get(classes)
    base = cast(PretrainedCfg, model.pretrained_cfg)
    if dataset is not None:
        base = get_pretrained_cfg(spec.arch, dataset)
    training = base.training_data if dataset else None
    if dataset and not spec.published:
        training = f"{training} (assumed from the {classes} classes; not the published shape)"
    readout = (
        f" cumulative_readout={kwargs['cumulative_readout']}." if spec.arch == "rcnn_bl" else ""
    )
    model.pretrained_cfg = base.replace(
        architecture=spec.arch, tag=dataset or "", url=None, sha256=None, model_args={},
        num_classes=classes, class_names=names, timesteps=model.timesteps,
        training_data=training,
        source=f"converted by blt-models from the rcnn-sat Keras file {found.path.name} "
        f"({found.layout} layout, Keras {found.keras_version or '?'}); "
        + (base.source or "Spoerer et al. 2020, github.com/cjspoerer/rcnn-sat"),
        description=f"{base.description or f'`{spec.arch}` converted from an rcnn-sat Keras file.'} "
        f"{names_note[0].upper()}{names_note[1:]}.{readout}",
    )  # fmt: skip
    how = f"{spec.arch}: rcnn-sat Keras file; " + "; ".join(spec.notes) + f"; {names_note}"
    return model, how


def convert_rcnn_sat_h5(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    arch: str | None = None,
    cumulative_readout: bool | None = None,
    class_names: Any = None,
    **pretrained_cfg: Any,
) -> Path:
    """Convert a published rcnn-sat Keras HDF5 file into a published blt-models folder.

    ``bm.convert_rcnn_sat_h5("bl_ecoset.h5", "bl_ecoset")`` writes ``model.safetensors``,
    ``config.json`` and ``README.md`` and checks that ``create_model("local-dir:bl_ecoset")``
    reloads identical weights. Both Keras layouts are read (``save_weights``: groups at the root;
    ``model.save``: under ``model_weights``). The variant, widths, classes and steps come from the
    file; ``arch`` only confirms the variant. ``cumulative_readout`` (BL) is recorded in
    ``config.json``; ``pretrained_cfg`` keywords (``license=``, ``description=``...) as in
    [`blt_models.save_pretrained`][blt_models.save_pretrained]. Returns the folder.

    Raises:
        KerasWeightsError: the file is no rcnn-sat network (the message lists what it holds).
    """

    from ._factory import save_and_check_reload

    overrides = {} if cumulative_readout is None else {"cumulative_readout": cumulative_readout}
    model, _ = load_rcnn_sat_h5(path, arch=arch, class_names=class_names, **overrides)
    return Path(save_and_check_reload(model, out_dir, **pretrained_cfg))
