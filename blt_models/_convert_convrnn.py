"""TensorFlow checkpoints of the ConvRNNs (Nayebi et al. 2022, neuroailab/convrnns) -> zoo models.

:func:`inspect_convrnn_variables` reads which of the 20 models a checkpoint holds (cell, depth,
decoder) and its widths from the variable names and shapes alone, and refuses a checkpoint that
fits none with a report of what it holds. :func:`tf_to_state_dict` maps the variables onto a
:class:`~blt_models.models.convrnn.ConvRNN`'s keys (kernels HWIO -> OIHW). Optimizer slots
(``.../Momentum``) and ``global_step`` are ignored, as the reference's loader ignores them.
:func:`load_convrnn_checkpoint` builds the model and loads it strictly;
:func:`convert_convrnn_checkpoint` writes the published format. TensorFlow is not needed: the
checkpoint is read by :func:`blt_models._tf_checkpoint.read_tf_checkpoint`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ._tf_checkpoint import is_training_state
from .errors import ConvRNNCheckpointError, InvalidWeightsError

__all__ = [
    "ConvRNNCheckpointSpec",
    "inspect_convrnn_variables",
    "tf_to_state_dict",
    "load_convrnn_checkpoint",
    "convert_convrnn_checkpoint",
    "is_convrnn_checkpoint",
    "fetch_convrnn_weights",
]

_CELL_SCOPES = {
    "ConvNormBasicCell": "simplernn",
    "ConvGRUCell": "gru",
    "ConvLSTMCell": "lstm",
    "ConvIntersectionRNNCell": "intersectionrnn",
    "ConvUGRNNCell": "ugrnn",
    "ReciprocalGateCell": "rgc",
}
_NODE = re.compile(r"^tnn_model/(conv\d+|imnetds)/(.+)$")
#: Diagnostic constants of the temporal decoders that the reference never uses for the answer.
_UNUSED = ("tnn_model/probs/softmax_beta", "tnn_model/alpha/softmax_beta")


def is_convrnn_checkpoint(names: Mapping[str, Any] | list[str]) -> bool:
    """True if the variable names are the ConvRNN reference's (``tnn_model/conv1/...``)."""
    return any(n.startswith("tnn_model/conv1/") for n in names)


@dataclass
class ConvRNNCheckpointSpec:
    """What a ConvRNN checkpoint holds: ``create_model(arch, **kwargs)`` fits it.

    ``candidates`` lists every authors' model whose variables look the same (the t22 / t30 models
    differ from their base only in the clock they were trained with); ``notes`` say how ``arch``
    was chosen.
    """

    arch: str
    kwargs: dict[str, Any]
    published: bool
    candidates: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Refusal(Exception):
    pass


def _summary(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Variable names with digits folded and counted, the first shapes that decide the model."""
    patterns = Counter(re.sub(r"conv\d+", "conv#", n) for n in shapes)
    parts = [f"{p} x{c}" if c > 1 else p for p, c in sorted(patterns.items())]
    head = ", ".join(parts[:16]) + (
        f", ... ({len(parts) - 16} more kinds)" if len(parts) > 16 else ""
    )
    return f"{len(shapes)} variables: {head or 'none'}"


def _shape(shapes: Mapping[str, tuple[int, ...]], name: str, ndim: int) -> tuple[int, ...]:
    if name not in shapes:
        raise _Refusal(f"no variable {name}")
    got = tuple(shapes[name])
    if len(got) != ndim:
        raise _Refusal(f"{name} has shape {list(got)}, expected {ndim} dimensions")
    return got


def inspect_convrnn_variables(
    shapes: Mapping[str, tuple[int, ...]], arch: str | None = None, name_hint: str = ""
) -> ConvRNNCheckpointSpec:
    """Which ConvRNN a checkpoint holds, from its variable names and shapes alone.

    Args:
        shapes: ``{variable name: shape}`` of the checkpoint (optimizer slots are skipped).
        arch: confirm the model (``"convrnn_ugrnn_intermediate_t30"`` or the authors' name);
            needed only for the t22 / t30 models, whose variables are their base model's.
        name_hint: the checkpoint's path; an authors' model name in it (the published folders
            are named after the models) chooses among look-alikes.

    Raises:
        ConvRNNCheckpointError: the variables fit no ConvRNN (or not ``arch``); the message says
            why and lists what the checkpoint holds.
    """
    from .models.convrnn import CONVRNN_MODELS, ConvRNN, convrnn_spec

    shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items() if not is_training_state(k)}
    try:
        nodes = sorted({m[1] for n in shapes if (m := _NODE.match(n))}, key=_node_order)
        convs = [n for n in nodes if n != "imnetds"]
        if not convs:
            raise _Refusal("no tnn_model/convK/ variables (not a ConvRNN of neuroailab/convrnns)")
        if convs not in (_conv_names(5), _conv_names(10)) or "imnetds" not in nodes:
            raise _Refusal(
                f"nodes {nodes}: a ConvRNN has conv1..conv5 (shallow) or conv1..conv10 "
                "(intermediate) and imnetds"
            )
        depth = "shallow" if len(convs) == 5 else "intermediate"
        first_cell = 2 if depth == "shallow" else 3
        scopes = {
            n: {s for s in _CELL_SCOPES if any(k.startswith(f"tnn_model/{n}/{s}/") for k in shapes)}
            for n in convs
        }
        found = {s for sc in scopes.values() for s in sc}
        if len(found) > 1:
            raise _Refusal(f"cells of several kinds: {sorted(found)}")
        if found:
            cell = _CELL_SCOPES[found.pop()]
            missing = [n for k, n in enumerate(convs) if k >= first_cell and not scopes[n]]
            extra = [n for k, n in enumerate(convs) if k < first_cell and scopes[n]]
            if missing or extra:
                raise _Refusal(
                    f"{cell} cells belong in {convs[first_cell]}..{convs[-1]}; missing in "
                    f"{missing or 'none'}, present in {extra or 'none'}"
                )
        else:
            cell = "timedecay"
        channels = [_shape(shapes, f"tnn_model/{n}/pre_0/weights_basenet", 4)[3] for n in convs]
        in_chans = _shape(shapes, "tnn_model/conv1/pre_0/weights_basenet", 4)[2]
        if depth == "shallow":
            readout = _shape(shapes, "tnn_model/imnetds/pre_1/weights", 4)
        else:
            readout = _shape(shapes, "tnn_model/imnetds/pre_3/weights", 2)
        classes = readout[-1]
        decoder = "last"
        if "tnn_model/normalize/softmax_beta" in shapes:
            decoder = "thresh" if "tnn_model/decoder_threshold" in shapes else "max_conf"
        elif "tnn_model/decoder_threshold" in shapes:
            raise _Refusal("a decoder_threshold without normalize/softmax_beta")
        kwargs: dict[str, Any] = {"num_classes": classes, "in_chans": in_chans}
        cell_layers = convs[first_cell:]
        cell_channels, kernels = _cell_widths(shapes, cell, depth, cell_layers)
        probe = ConvRNN(cell=cell, depth=depth, decoder=decoder, num_classes=1)
        if channels != list(probe.channels):
            kwargs["channels"] = channels
        if cell_channels is not None and cell_channels != list(
            ConvRNN(cell=cell, depth=depth, channels=channels, num_classes=1).cell_channels
        ):
            kwargs["cell_channels"] = cell_channels
        if kernels is not None and kernels != list(probe.cell_kernels):
            kwargs["cell_kernels"] = kernels
        if cell == "lstm" and depth == "shallow":
            scope = f"tnn_model/{cell_layers[1]}/ConvLSTMCell/"
            peep_name = next(
                (k for k in shapes if k.startswith(scope) and k.endswith("w_f_diag")), scope
            )
            peep = _shape(shapes, peep_name, 3)
            if peep[0] != 14:
                kwargs["image_size"] = 16 * peep[0]  # conv4's cell map: the image side / 16
        published = set(kwargs) == {"num_classes", "in_chans"} and classes == 1000 and in_chans == 3
        # Which of the authors' 20 models have these variables.
        candidates = [
            n for n, s in CONVRNN_MODELS.items()
            if (s.cell, s.depth, s.decoder) == (cell, depth, decoder)
        ]  # fmt: skip
        notes = [
            f"{cell} cells, {depth} ({len(convs)} conv layers), decoder {decoder!r}, {classes} "
            "classes" + ("" if published else f", widths {channels} (not the published ones)")
        ]
        if arch is not None:
            wanted = convrnn_spec(arch).name
            if wanted not in candidates:
                raise _Refusal(
                    f"the variables fit {', '.join('convrnn_' + c for c in candidates)}, not {arch}"
                )
            chosen = wanted
            notes.append(f"model convrnn_{chosen} as requested")
        elif len(candidates) == 1:
            chosen = candidates[0]
        else:
            hinted = [
                c for c in candidates if re.search(rf"(^|[/\\]){re.escape(c)}([/\\]|$)", name_hint)
            ]
            if len(hinted) != 1:
                raise _Refusal(
                    f"the variables fit {' and '.join('convrnn_' + c for c in candidates)} "
                    "(the same layers; they differ in the clock and presentation they were "
                    "trained with), and the path names neither: pass arch= (--arch NAME)"
                )
            chosen = hinted[0]
            notes.append(f"model convrnn_{chosen} from the checkpoint's folder name")
        return ConvRNNCheckpointSpec(f"convrnn_{chosen}", kwargs, published, candidates, notes)
    except _Refusal as why:
        raise ConvRNNCheckpointError(
            f"the checkpoint matches no ConvRNN of Nayebi et al. 2022: {why}.\n  Found: "
            f"{_summary(shapes)}.\n  Expected the reference's variables: tnn_model/conv1.."
            "conv5 (shallow) or conv1..conv10 (intermediate) with pre_0/weights_basenet, cell "
            "variables (ConvUGRNNCell, ConvGRUCell, ConvLSTMCell, ConvIntersectionRNNCell, "
            "ConvNormBasicCell, ReciprocalGateCell) or memory_decay (time decay), and "
            "tnn_model/imnetds/pre_1 (shallow) or pre_3 (intermediate)."
        ) from None


def _node_order(name: str) -> tuple[int, int]:
    return (1, 0) if name == "imnetds" else (0, int(name[4:]))


def _conv_names(n: int) -> list[str]:
    return [f"conv{k + 1}" for k in range(n)]


def _cell_widths(
    shapes: Mapping[str, tuple[int, ...]], cell: str, depth: str, layers: list[str]
) -> tuple[list[int] | None, list[int] | None]:
    """(cell widths, clampable kernel sides) of the cell layers, read from the kernels."""
    widths: list[int] = []
    kernels: list[int] = []
    for n in layers:
        p = f"tnn_model/{n}/"
        if cell == "timedecay":
            _shape(shapes, p + "memory_decay", 1)
            continue
        if cell == "simplernn":
            widths.append(_shape(shapes, p + "ConvNormBasicCell/s/weights", 4)[3])
        elif cell == "gru":
            widths.append(_shape(shapes, p + "ConvGRUCell/candidates/weights", 4)[3])
        elif cell == "ugrnn":
            widths.append(_shape(shapes, p + "ConvUGRNNCell/weights", 4)[3] // 2)
        elif cell == "intersectionrnn":
            widths.append(_shape(shapes, p + "ConvIntersectionRNNCell/weights", 4)[3] // 4)
        elif cell == "lstm":
            k = _shape(shapes, p + "ConvLSTMCell/weights", 4)
            widths.append(k[3] // 4)
            kernels.append(k[0])
        elif depth == "shallow":
            widths.append(_shape(shapes, p + "ReciprocalGateCell/cell/tau/weights", 4)[3])
        else:
            widths.append(_shape(shapes, p + "ReciprocalGateCell/cell/input_to_cell_weights", 4)[3])
            kernels.append(
                _shape(shapes, p + "ReciprocalGateCell/cell/tau/depthwise_weights", 4)[0]
            )
    return (widths or None), (kernels or None)


# --------------------------------------------------------------------------------- key map
def _hwio(value: Tensor) -> Tensor:
    return value.permute(3, 2, 0, 1).contiguous()


def _cell_key(tail: str, value: Tensor) -> tuple[str, Tensor] | None:
    """A cell variable (the part after ``tnn_model/<node>/``) -> (key under ``cell.``, value)."""
    scope, _, rest = tail.partition("/")
    leaf = rest.rsplit("/", 1)[-1]
    if leaf in ("w_f_diag", "w_i_diag", "w_o_diag"):  # LSTM peepholes [H, W, C] -> [C, H, W]
        return leaf, value.permute(2, 0, 1).contiguous()
    if leaf in ("gamma", "beta"):  # layer norms: [C]
        where = rest.rsplit("/", 1)[0]
        module = "norm" if scope == "ConvNormBasicCell" else f"norm_{where}"
        return f"{module}.{'weight' if leaf == 'gamma' else 'bias'}", value
    if scope == "ReciprocalGateCell":
        parts = rest.split("/")  # cell/tau/weights, cell/input_to_cell_weights, cell/tau/bias...
        if len(parts) == 2:  # median RGC plain convs: <side>/<conv>_weights | _bias
            side, name = parts
            conv, _, kind = name.rpartition("_")
            module = f"{side}_{conv}"
            return (f"{module}.weight", _hwio(value)) if kind == "weights" else (
                f"{module}.bias", value
            )  # fmt: skip
        side, conv, kind = parts[0], "_".join(parts[1:-1]), parts[-1]
        module = f"{side}_{conv}"
        if kind == "depthwise_weights":
            return f"{module}.depthwise.weight", value.permute(2, 3, 0, 1).contiguous()
        if kind == "pointwise_weights":
            return f"{module}.pointwise.weight", _hwio(value)
        if kind == "bias":
            return f"{module}.pointwise.bias", value
        return f"{module}.weight", _hwio(value)
    modules = {"ConvNormBasicCell": "", "ConvGRUCell": "", "ConvLSTMCell": "conv",
               "ConvIntersectionRNNCell": "conv", "ConvUGRNNCell": "conv"}  # fmt: skip
    if scope not in modules:
        return None
    module = modules[scope] or rest.rsplit("/", 1)[0]  # i, s, gates, candidates
    kind = "weight" if leaf == "weights" else "bias" if leaf == "bias" else None
    if kind is None:
        return None
    return f"{module}.{kind}", _hwio(value) if kind == "weight" else value


def tf_to_state_dict(state: Mapping[str, Any], model: Any) -> dict[str, Tensor]:
    """The reference's variables (``tnn_model/...``, TF layouts) -> ``model``'s keys.

    Optimizer slots and ``global_step`` are dropped; so are the decoders' unused diagnostic
    constants (``probs/softmax_beta``, ``alpha/softmax_beta``) and the ``memory_decay`` of
    layers without a time-decay cell, which must be 0 (memoryless: what the published models
    hold). Names that fit nothing are kept as they are, so a strict load reports them.

    Raises:
        InvalidWeightsError: a non-zero ``memory_decay`` where the model has no time decay.
    """
    from .models.convrnn import TimeDecayCell

    out: dict[str, Tensor] = {}
    for name, raw in state.items():
        if is_training_state(name) or name in _UNUSED:
            continue
        value = raw if isinstance(raw, Tensor) else torch.from_numpy(np.array(raw, copy=True))
        if name == "tnn_model/normalize/softmax_beta":
            out["softmax_beta"] = value.reshape(())
            continue
        if name == "tnn_model/decoder_threshold":
            out["decoder_threshold"] = value.reshape(())
            continue
        match = _NODE.match(name)
        if match is None:
            out[name] = value
            continue
        node, tail = match.groups()
        if tail == "memory_decay":
            layer = getattr(model, node, None) if node != "imnetds" else None
            if layer is not None and isinstance(layer.cell, TimeDecayCell):
                out[f"{node}.cell.memory_decay"] = value.reshape(1)
                continue
            if value.numel() != 1 or float(value.reshape(())) != 0.0:
                raise InvalidWeightsError(
                    f"{name} = {value.flatten().tolist()}: this node has no time-decay cell, and "
                    "the ConvRNNs keep its memory at 0 (memoryless); a checkpoint with a "
                    "non-zero value is not one of the published models."
                )
            continue
        if node == "imnetds":
            if tail in ("pre_1/weights", "pre_3/weights"):
                out["readout.weight"] = _hwio(value) if value.ndim == 4 else value.t().contiguous()
                continue
            if tail in ("pre_1/bias", "pre_3/bias"):
                out["readout.bias"] = value
                continue
        simple = {
            "pre_0/weights_basenet": "conv.weight", "pre_0/bias": "conv.bias",
            "post_0/weights": "post_conv.weight", "post_0/bias": "post_conv.bias",
            "post_1/residual_add_weights": "residual.weight",
        }  # fmt: skip
        if tail in simple:
            key = simple[tail]
            out[f"{node}.{key}"] = _hwio(value) if key.endswith("weight") else value
            continue
        mapped = _cell_key(tail, value)
        if mapped is None:
            out[name] = value
            continue
        out[f"{node}.cell.{mapped[0]}"] = mapped[1]
    return out


# --------------------------------------------------------------------------------- load
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
    from ._checkpoint import load_state_dict_strict
    from ._factory import create_model
    from ._registry import get_pretrained_cfg

    fixed = sorted(set(overrides) - {"timesteps"})
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)} cannot be chosen for a ConvRNN checkpoint: the variables fix the "
            "architecture; only timesteps (the default clock) can be set"
        )
    from ._tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint, resolve_tf_checkpoint_prefix

    prefix = resolve_tf_checkpoint_prefix(path)
    shapes = {k: info.shape for k, info in list_tf_checkpoint(prefix).items()}
    spec = inspect_convrnn_variables(shapes, arch=arch, name_hint=str(prefix))
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
    its widths come from the variables (:func:`inspect_convrnn_variables`). Returns the folder.

    Raises:
        ConvRNNCheckpointError: the checkpoint is no ConvRNN (the message lists what it holds).
    """
    from ._factory import create_model
    from ._published import save_pretrained

    model, _ = load_convrnn_checkpoint(path, arch=arch)
    out = save_pretrained(model, out_dir, **pretrained_cfg)
    reloaded = create_model(f"local-dir:{out}", pretrained=True)
    ref, got = model.state_dict(), reloaded.state_dict()
    if ref.keys() != got.keys() or not all(torch.equal(ref[k], got[k]) for k in ref):
        raise RuntimeError(f"{out} does not reload to the converted weights")
    return out


def fetch_convrnn_weights(cfg: Any) -> Path:
    """The weights of a ConvRNN tag, converted once into torch.hub's cache.

    ``cfg.url`` is the authors' ``.../<model>/model.ckpt.index``; the index and the data file
    are downloaded (if not cached) into ``$TORCH_HOME/hub/checkpoints/convrnn-<model>/`` and
    converted there to ``model.safetensors`` (written atomically), which later loads read
    directly. The authors publish no hash: the caller warns that the weights are unverified.

    Raises:
        WeightsUnavailableError: a file is neither cached nor downloadable (offline).
    """
    from urllib.parse import urlparse

    from safetensors.torch import save_file

    from ._hub import url_download

    index_url = str(cfg.url)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder = folder / f"convrnn-{Path(urlparse(index_url).path).parent.name}"
    converted = folder / "model.safetensors"
    if converted.is_file():
        return converted
    data_url = index_url.removesuffix(".index") + ".data-00000-of-00001"
    for url in (index_url, data_url):
        name = Path(urlparse(url).path).name
        url_download(url, name=cfg.name, arch=cfg.architecture, target=folder / name)
    model, _ = load_convrnn_checkpoint(folder / "model.ckpt", arch=cfg.architecture)
    partial = folder / f".model.safetensors.{os.getpid()}.tmp"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(partial), metadata={"source": index_url, "format": "pt"})
    os.replace(partial, converted)
    return converted
