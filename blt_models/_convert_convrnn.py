"""TensorFlow checkpoints of the ConvRNNs (Nayebi et al. 2022, neuroailab/convrnns) -> zoo models.

`inspect_convrnn_variables` reads which of the 20 models a checkpoint holds (cell, depth,
decoder) and its widths from the variable names and shapes alone, and refuses a checkpoint that
fits none with a report of what it holds; `fetch_convrnn_weights` downloads a tag's
checkpoint and converts it once into the cache. The key map is the family's
(``models.convrnn.tf_to_state_dict``); loading and converting files is in ``_convert.py``
(``load_convrnn_checkpoint``, ``convert_convrnn_checkpoint``). Optimizer slots (``.../Momentum``)
and ``global_step`` are ignored, as the reference's loader ignores them. TensorFlow is not
needed: the checkpoint is read by `blt_models._tf_checkpoint.read_tf_checkpoint`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import torch

from ._tf_checkpoint import is_training_state
from .errors import ConvRNNCheckpointError

__all__ = [
    "ConvRNNCheckpointSpec",
    "inspect_convrnn_variables",
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
        name_hint: the checkpoint's path (``.../<folder>/model.ckpt``); a folder named exactly
            after one of the authors' models (their published layout) chooses among look-alikes.
            Folders further up are not read.

    Raises:
        ConvRNNCheckpointError: the variables fit no ConvRNN (or not ``arch``); the message says
            why and lists what the checkpoint holds.
    """
    from .models.convrnn import _NODE, CONVRNN_MODELS, ConvRNN, convrnn_spec

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
            # Only the folder holding the checkpoint names it (the authors' layout
            # <model>/model.ckpt): a folder further up may hold a look-alike's sub-folder.
            folder = PurePath(name_hint.replace("\\", "/")).parent.name if name_hint else ""
            hinted = [c for c in candidates if folder == c]
            if len(hinted) != 1:
                raise _Refusal(
                    f"the variables fit {' and '.join('convrnn_' + c for c in candidates)} "
                    "(the same layers; they differ in the clock and presentation they were "
                    f"trained with), and the checkpoint's folder ({folder or 'none'!r}) is named "
                    "after neither: pass arch= (--arch NAME)"
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


# --------------------------------------------------------------------------------- load
#: Version of what a ConvRNN checkpoint converts to (key map, layouts, model choice): bump it when
#: a change would convert the same files to other tensors, so that caches made before reconvert.
CONVERTER_VERSION = "1"
_CONVERTER_KEY = "blt_models_convrnn_converter"


def _converted_by_this_version(converted: Path, source: str) -> bool:
    """Whether the cached conversion exists, is readable and was made from ``source`` by this
    converter version (a file from an older blt-models, or of another URL, is made again)."""
    if not converted.is_file():
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(converted), framework="pt") as f:
            metadata = f.metadata() or {}
    except (OSError, SafetensorError):
        return False
    return metadata.get(_CONVERTER_KEY) == CONVERTER_VERSION and metadata.get("source") == source


def fetch_convrnn_weights(cfg: Any) -> Path:
    """The weights of a ConvRNN tag, converted once into torch.hub's cache.

    ``cfg.url`` is the authors' ``.../<model>/model.ckpt.index``; the index and the data file
    are downloaded (if not cached) into ``$TORCH_HOME/hub/checkpoints/convrnn-<model>/`` and
    converted there to ``model.safetensors`` (written atomically), which later loads read
    directly as long as it records this `CONVERTER_VERSION` and ``cfg.url`` (else it is made
    again from the checkpoint files, downloaded again if they were removed). The authors publish no hash: the caller warns that the weights are unverified.

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
    if _converted_by_this_version(converted, index_url):
        return converted
    data_url = index_url.removesuffix(".index") + ".data-00000-of-00001"
    for url in (index_url, data_url):
        name = Path(urlparse(url).path).name
        url_download(url, name=cfg.name, arch=cfg.architecture, target=folder / name)
    from ._checkpoint import load_state_dict_strict
    from ._registry import get_model_entrypoint
    from ._tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint
    from .models.convrnn import tf_to_state_dict

    prefix = folder / "model.ckpt"
    shapes = {k: info.shape for k, info in list_tf_checkpoint(prefix).items()}
    spec = inspect_convrnn_variables(shapes, arch=cfg.architecture)
    model = get_model_entrypoint(spec.arch)(**spec.kwargs)
    what = f"ConvRNN checkpoint {prefix}"
    load_state_dict_strict(model, tf_to_state_dict(read_tf_checkpoint(prefix), model), what=what)
    partial = folder / f".model.safetensors.{os.getpid()}.tmp"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {"source": index_url, "format": "pt", _CONVERTER_KEY: CONVERTER_VERSION}
    save_file(state, str(partial), metadata=metadata)
    os.replace(partial, converted)
    return converted
