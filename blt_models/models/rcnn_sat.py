"""The B and BL networks of Spoerer et al. 2020 (rcnn-sat), on the zoo's clock.

Re-implemented from the published description of the Keras code (github.com/cjspoerer/rcnn-sat,
MIT License): ``rcnn_b``, ``rcnn_b_k``, ``rcnn_b_f``, ``rcnn_b_d`` (feed-forward) and ``rcnn_bl``
(bottom-up + lateral recurrence). Given the same weights, every layer at every step equals the
Keras model's (channels-first here, channels-last there). Published Keras HDF5 weight files load
directly (``checkpoint_path="bl_ecoset.h5"``: the keys are mapped and the kernels transposed by
[`convert_state_dict`][blt_models.ClockedModel.convert_state_dict]) or convert to the zoo's format with ``blt-models convert``.

Architecture (``3 x 128 x 128`` input scaled to ``[-1, 1]``; every convolution stride 1, ``'same'``
zero padding, no bias; every pool ``MaxPool2d(2)``, floor):

* **B family**: per layer an optional 2x2 max-pool, a convolution, BatchNorm (eps 1e-3), ReLU;
  readout: global average pool, one Linear (with bias). B, B-K (larger kernels), B-F (more
  features): 7 layers, a pool before layers 1-6; B-D: 14 layers, a pool before layers 2, 4, ..., 12.
* **BL**: 7 recurrent convolutional layers. At step ``t`` layer ``n`` gets
  ``z = BConv_n(bottom-up) + LConv_n(a[t-1][n])`` (no lateral term at ``t = 0``), where the
  bottom-up input is the image for ``n = 0`` and ``maxpool(a[t][n-1])`` (the same step) otherwise;
  then a BatchNorm **of its own for every layer and step** and ReLU give ``a[t][n]``. Each step
  ends with a readout ``Linear(mean_hw(a[t][6]))`` (one Linear shared by all steps).

Time on the zoo's clock (standard unrolling):

* B variants are feed-forward: one step, one readout.
* ``rcnn_bl``: every layer is active from step 0 and every step ``0 .. T-1`` has a readout. The
  logits at step ``t`` are ``presoftmax[t]`` (instant readout, the default, as the published
  models were trained) or, with ``cumulative_readout=True``, ``presoftmax[0] + ... +
  presoftmax[t]``; their softmax is the Keras model's output ``t``. ``T`` is fixed by the weights
  (one BatchNorm per layer and step; published: 8). A run of ``t < T`` steps gives exactly the
  first ``t`` steps of the ``T``-step network; more than ``T`` steps is an error.

Time-varying input ``[T, B, C, H, W]`` (frame ``t`` at step ``t``): BL recomputes layer 0's
bottom-up drive from each frame (a static image still computes it once). Every layer reads the
layer below at the same step, so frame ``t`` reaches every layer at step ``t``
([`RcnnSatBL.arrival_steps`][blt_models.models.rcnn_sat.RcnnSatBL.arrival_steps]). The B variants sweep each frame, one readout per frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._clock import ClockedModel, InputStage, Step
from .._pretrained import PretrainedCfg, imagenet_class_names
from .._registry import register_model, register_pretrained_cfgs
from .._validate import check_widths
from ..errors import InputError, TimestepsError

__all__ = [
    "RcnnSatB",
    "RcnnSatBL",
    "RCNN_SAT_B_VARIANTS",
    "RCNN_SAT_BL_CHANNELS",
    "RCNN_SAT_BL_KERNELS",
    "rcnn_sat_ecoset_class_names",
]

# Published layer tables: (filters, kernels, pool before layer n).
_POOL_7 = (False,) + (True,) * 6
RCNN_SAT_B_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...]]] = {
    "b": ((96, 128, 192, 256, 512, 1024, 2048), (7, 5, 3, 3, 3, 3, 1), _POOL_7),
    "b_k": ((96, 128, 192, 256, 512, 1024, 2048), (11, 7, 5, 5, 5, 5, 3), _POOL_7),
    "b_f": ((192, 256, 384, 512, 1024, 2048, 4096), (7, 5, 3, 3, 3, 3, 1), _POOL_7),
    "b_d": (
        (96, 96, 128, 128, 192, 192, 256, 256, 512, 512, 1024, 1024, 2048, 2048),
        (7, 7, 5, 5, 3, 3, 3, 3, 3, 3, 3, 3, 1, 1),
        tuple(n > 0 and n % 2 == 0 for n in range(14)),
    ),
}
RCNN_SAT_BL_CHANNELS = (96, 128, 192, 256, 512, 1024, 2048)
RCNN_SAT_BL_KERNELS = (7, 5, 3, 3, 3, 3, 1)
_BL_POOLS = _POOL_7

# Keras BatchNormalization defaults: epsilon 1e-3, moving average with momentum 0.99.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=1, padding=kernel // 2, bias=False)


def _min_side(pools: Sequence[bool]) -> int:
    return 2 ** sum(pools)


def _keras_kernel(value: Tensor) -> Tensor:
    """Keras ``Conv2D`` kernel ``[kh, kw, in, out]`` -> PyTorch ``[out, in, kh, kw]``."""
    return value.permute(3, 2, 0, 1).contiguous()


# Keras weight names (``<layer>/<weight>``, as blt_models._keras_h5 reads them) of the two families.
_KERAS_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}  # fmt: skip
_KERAS_B_KEY = re.compile(r"^(Conv|BatchNorm)_Layer_(\d+)/(\w+)$")
_KERAS_BL_KEY = re.compile(r"^(?:RCL_(\d+)_(BConv|LConv)|BatchNorm_Layer_(\d+)_Time_(\d+))/(\w+)$")


def is_keras_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True if ``state_dict`` holds Keras weight names (``ReadoutDense/kernel``...)."""
    return any("/" in k for k in state_dict)


def _readout_from_keras(name: str, value: Tensor) -> tuple[str, Tensor]:
    if name == "kernel":
        return "readout.weight", value.t().contiguous()  # Dense [in, out] -> Linear [out, in]
    return f"readout.{name}", value


def _convert_keras_state_dict(state_dict: Mapping[str, Tensor], bl: bool) -> dict[str, Tensor]:
    """Keras weights of an rcnn-sat model (``<layer>/<weight>`` keys, Keras layouts) -> the zoo's
    keys and layouts. Keys that fit neither family are kept as they are (a strict load then
    reports them as unexpected)."""
    out: dict[str, Tensor] = {}
    norms: set[str] = set()
    for key, value in state_dict.items():
        if key.startswith("ReadoutDense/"):
            name, tensor = _readout_from_keras(key.split("/", 1)[1], value)
            out[name] = tensor
            continue
        match = (_KERAS_BL_KEY if bl else _KERAS_B_KEY).match(key)
        if match is None:
            out[key] = value
            continue
        if bl:
            rcl, conv, layer, step, weight = match.groups()
            if rcl is not None and weight == "kernel":
                out[f"layers.{rcl}.{conv[0].lower()}conv.weight"] = _keras_kernel(value)
                continue
            if layer is not None and weight in _KERAS_BN:
                prefix = f"layers.{layer}.norms.{step}"
                out[f"{prefix}.{_KERAS_BN[weight]}"] = value
                norms.add(prefix)
                continue
        else:
            kind, layer, weight = match.groups()
            if kind == "Conv" and weight == "kernel":
                out[f"layers.{layer}.conv.weight"] = _keras_kernel(value)
                continue
            if kind == "BatchNorm" and weight in _KERAS_BN:
                out[f"layers.{layer}.norm.{_KERAS_BN[weight]}"] = value
                norms.add(f"layers.{layer}.norm")
                continue
        out[key] = value
    for prefix in norms:  # Keras keeps no update counter; PyTorch's is unused with momentum set
        out.setdefault(f"{prefix}.num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


# --------------------------------------------------------------------------------- models
class _RcnnSat(ClockedModel):
    """What both families share: layer names, readout, input-size check."""

    classifier_name = "readout"
    arch_name = "rcnn_sat"
    #: Every layer is active from step 0, a readout at every step (the library's standard unrolling).
    unroll = "standard"
    layers: nn.ModuleList
    readout: nn.Module  # nn.Linear, or nn.Identity with num_classes=0 (pooled features)
    pools: tuple[bool, ...]

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(f"layer{n}" for n in range(len(self.layers)))

    def _check_spatial_size(self, height: int, width: int) -> None:
        need = _min_side(self.pools)
        if height < need or width < need:
            raise InputError(
                f"{self._display_name()} needs images of at least {need}x{need} px (it pools "
                f"{sum(self.pools)} times by 2; the published weights expect 128x128); got "
                f"{height}x{width}. Resize the images, e.g. with "
                "blt_models.create_transform(model)."
            )

    def _display_name(self) -> str:
        return super()._display_name() if self.pretrained_cfg is not None else self.arch_name

    def _logits(self, top: Tensor) -> Tensor:
        return self.readout(top.mean((2, 3)))


class _BLayer(nn.Module):
    """``[maxpool 2x2] -> conv (no bias) -> BatchNorm -> ReLU`` (Keras ``Conv_Layer_{n}`` ...)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, pool: bool) -> None:
        super().__init__()
        self.pool = pool
        self.conv = _conv(c_in, c_out, kernel)
        self.norm = _batch_norm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool:
            x = F.max_pool2d(x, 2)
        return F.relu(self.norm(self.conv(x)))

    def extra_repr(self) -> str:
        return f"pool={self.pool}"


class RcnnSatB(_RcnnSat):
    """A feed-forward B network of rcnn-sat (B, B-K, B-F or B-D), one clock step.

    Args:
        variant: ``"b"``, ``"b_k"``, ``"b_f"`` or ``"b_d"`` (kernels, pooling and default widths).
        num_classes: readout width (565 for ecoset, 1000 for ImageNet weights).
        in_chans: input channels (3 for the published weights).
        channels: layer widths instead of the published ones (e.g. of a reduced-width file).
        timesteps: must be 1 (or None): the network is feed-forward.

    Shapes: ``[B, in_chans, H, W]`` (H, W >= 64; 128 for the published weights) ->
    ``[B, num_classes]``. Layer ``layerN`` is the ReLU output of Keras ``ReLU_Layer_N``.
    """

    first_conv_name = "layers.0.conv"
    feedforward = True

    def __init__(
        self,
        variant: str = "b",
        num_classes: int = 565,
        in_chans: int = 3,
        channels: Sequence[int] | None = None,
        timesteps: int | None = None,
    ) -> None:
        super().__init__()
        if variant not in RCNN_SAT_B_VARIANTS:
            raise ValueError(
                f"variant must be one of {sorted(RCNN_SAT_B_VARIANTS)}; got {variant!r}"
            )
        default, kernels, pools = RCNN_SAT_B_VARIANTS[variant]
        self.variant = variant
        self.arch_name = f"rcnn_{variant}"
        self.channels = tuple(check_widths(channels, default, f"{self.arch_name} channels"))
        self.kernels, self.pools = kernels, pools
        self.num_classes, self.in_chans = num_classes, in_chans
        self.timesteps = 1
        self._resolve_timesteps(timesteps)
        widths = (in_chans, *self.channels)
        self.layers = nn.ModuleList(
            _BLayer(widths[n], widths[n + 1], kernels[n], pools[n]) for n in range(len(kernels))
        )
        self.readout = self._make_classifier(self.channels[-1], num_classes)

    @property
    def layer_aliases(self) -> dict[str, str]:  # type: ignore[override]
        return {f"ReLU_Layer_{n}": f"layer{n}" for n in range(len(self.layers))}

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Keras weights (``Conv_Layer_0/kernel``...) -> this model's keys; others unchanged."""
        if not is_keras_state_dict(state_dict):
            return dict(state_dict)
        return _convert_keras_state_dict(state_dict, bl=False)

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        features = {}
        for n, layer in enumerate(self.layers):
            x = layer(x)
            if f"layer{n}" in capture:
                features[f"layer{n}"] = x
        yield Step(0, features, self._logits(x) if 0 in readouts else None)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, channels={list(self.channels)}"


class RecurrentConvLayer(nn.Module):
    """One BL layer (Keras ``RCL_{n}``): bottom-up and lateral convs, one BatchNorm per step."""

    def __init__(self, c_in: int, c_out: int, kernel: int, timesteps: int, pool: bool) -> None:
        super().__init__()
        self.pool = pool
        self.bconv = _conv(c_in, c_out, kernel)
        self.lconv = _conv(c_out, c_out, kernel)
        self.norms = nn.ModuleList(_batch_norm(c_out) for _ in range(timesteps))

    def bottom_up(self, below: Tensor) -> Tensor:
        """``BConv`` of the bottom-up input (max-pooled first, except in layer 0)."""
        return self.bconv(F.max_pool2d(below, 2) if self.pool else below)

    def step(self, drive: Tensor, lateral: Tensor | None, t: int) -> Tensor:
        """``ReLU(BatchNorm_t(drive + LConv(lateral)))``; no lateral term at step 0."""
        z = drive if lateral is None else drive + self.lconv(lateral)
        return F.relu(self.norms[t](z))


class RcnnSatBL(_RcnnSat):
    """The BL network of rcnn-sat: 7 recurrent convolutional layers, a readout at every step.

    Args:
        num_classes: readout width (565 for ecoset, 1000 for ImageNet weights).
        in_chans: input channels (3 for the published weights).
        timesteps: number of steps ``T`` the weights hold BatchNorms for (published: 8); also the
            default clock length. Runs of ``1 .. T`` steps are possible.
        cumulative_readout: False (default; the published models were trained so): the logits at
            step t are that step's readout; True: the sum of the readouts of steps 0 .. t.
        channels: layer widths instead of the published ones (e.g. of a reduced-width file).

    Shapes: ``[B, in_chans, H, W]`` (H, W >= 64; 128 for the published weights) ->
    ``[B, num_classes]`` (``model(x)``: the readout at the last step). Layer ``layerN`` at step t
    is Keras ``ReLU_Layer_N_Time_t``; maps at 128 px are 128, 64, 32, 16, 8, 4, 2. A sequence
    ``[T, B, in_chans, H, W]`` (``T <= timesteps``) gives frame ``t`` to layer 0 at step ``t``.
    """

    first_conv_name = "layers.0.bconv"
    arch_name = "rcnn_bl"
    supports_sequences = True

    def __init__(
        self,
        num_classes: int = 565,
        in_chans: int = 3,
        timesteps: int = 8,
        cumulative_readout: bool = False,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise TimestepsError(
                f"rcnn_bl takes timesteps= as a positive integer (the number of steps its "
                f"BatchNorms cover; published: 8); got {timesteps!r}"
            )
        if not isinstance(cumulative_readout, bool):
            raise ValueError(
                f"cumulative_readout must be True or False; got {cumulative_readout!r}"
            )
        self.channels = tuple(check_widths(channels, RCNN_SAT_BL_CHANNELS, "rcnn_bl channels"))
        self.kernels, self.pools = RCNN_SAT_BL_KERNELS, _BL_POOLS
        self.num_classes, self.in_chans = num_classes, in_chans
        self.timesteps = timesteps
        self.cumulative_readout = cumulative_readout
        widths = (in_chans, *self.channels)
        self.layers = nn.ModuleList(
            RecurrentConvLayer(widths[n], widths[n + 1], self.kernels[n], timesteps, self.pools[n])
            for n in range(len(self.kernels))
        )
        self.readout = self._make_classifier(self.channels[-1], num_classes)

    @property
    def layer_aliases(self) -> dict[str, str]:  # type: ignore[override]
        names = {f"RCL_{n}": f"layer{n}" for n in range(len(self.layers))}
        names.update({f"ReLU_Layer_{n}": f"layer{n}" for n in range(len(self.layers))})
        return names

    def first_steps(self, timesteps: int | None = None) -> dict[str, int]:
        return dict.fromkeys(self.layer_names, 0)

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        return list(range(self.timesteps if timesteps is None else timesteps))

    def arrival_steps(self, onset: int, timesteps: int | None = None) -> dict[str, int]:
        """Frame ``onset`` is layer 0's bottom-up drive at step ``onset``, and layer ``n`` reads
        ``maxpool(a[t][n-1])`` of the same step (a full sweep inside every step), so the frame
        reaches every layer at step ``onset``; the lateral term carries it on to later steps."""
        return dict.fromkeys(self.layer_names, onset)

    def _resolve_timesteps(self, timesteps: int | None) -> int:
        t = super()._resolve_timesteps(timesteps)
        if t > self.timesteps:
            raise TimestepsError(
                f"{self._display_name()} has BatchNorms for {self.timesteps} steps (one per layer "
                f"and step, fixed by its weights), so it runs at most {self.timesteps} steps; got "
                f"timesteps={t}. Fewer steps give exactly the first steps of the "
                f"{self.timesteps}-step network; a longer clock needs a model built with "
                "timesteps=N (new, untrained BatchNorms)."
            )
        return t

    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Keras weights (``RCL_0_BConv/kernel``...) -> this model's keys; others unchanged."""
        if not is_keras_state_dict(state_dict):
            return dict(state_dict)
        return _convert_keras_state_dict(state_dict, bl=True)

    def input_drive(self, image: Tensor) -> Tensor:
        """The input stage: layer 0's bottom-up convolution of one frame ``[B, C, H, W]``.

        The reference computes it once and reuses it at every step, because its image does not
        change; so does a static image here. A sequence ``[T, B, C, H, W]`` recomputes it per
        frame (``_unroll`` calls it through ``InputStage``).
        """
        return self.rcls[0].bconv(image)

    @property
    def rcls(self) -> list[RecurrentConvLayer]:
        """The 7 recurrent convolutional layers (Keras ``RCL_0`` .. ``RCL_6``)."""
        return [cast(RecurrentConvLayer, layer) for layer in self.layers]

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        # A static image: computed once and reused; a sequence: once per frame, at its step.
        drive0 = InputStage(x, self.input_drive)
        previous: list[Tensor] | None = None
        running: Tensor | None = None
        for t in range(timesteps):
            current: list[Tensor] = []
            for n, layer in enumerate(self.rcls):
                drive = drive0(t) if n == 0 else layer.bottom_up(current[n - 1])
                current.append(layer.step(drive, None if previous is None else previous[n], t))
            logits = None
            if self.cumulative_readout:  # every step's readout enters the running sum
                step_logits = self._logits(current[-1])
                running = step_logits if running is None else running + step_logits
                logits = running if t in readouts else None
            elif t in readouts:
                logits = self._logits(current[-1])
            names = self.layer_names
            yield Step(
                t, {names[n]: a for n, a in enumerate(current) if names[n] in capture}, logits
            )
            previous = current

    def extra_repr(self) -> str:
        return (
            f"timesteps={self.timesteps}, cumulative_readout={self.cumulative_readout}, "
            f"channels={list(self.channels)}"
        )


# --------------------------------------------------------------------------------- configs
RCNN_SAT_CITATION = (
    "Spoerer, C. J., Kietzmann, T. C., Mehrer, J., Charest, I. & Kriegeskorte, N. (2020). "
    "Recurrent neural networks can explain flexible trading of speed and accuracy in biological "
    "vision. PLOS Computational Biology 16(10): e1008215. doi:10.1371/journal.pcbi.1008215"
)
RCNN_SAT_OSF = "https://osf.io/mz9hw/"
#: Download URLs of the published files that are known; the others are in the OSF project only.
RCNN_SAT_URLS = {("rcnn_bl", "ecoset"): "https://osf.io/9td5p/download"}
_ECOSET_FILE = Path(__file__).resolve().parent.parent / "weights" / "rcnn_sat_ecoset_categories.txt"


@cache
def rcnn_sat_ecoset_class_names() -> tuple[str, ...]:
    """The 565 ecoset categories in the output order of the published ecoset models.

    The lines of rcnn-sat's ``pretrained_output_categories/ecoset_categories.txt`` (MIT License,
    Copyright (c) 2019 cjspoerer), shipped unchanged as ``weights/rcnn_sat_ecoset_categories.txt``:
    ``"0001_man"``, ``"0005_house"``, ... (ecoset's category number, then its name).
    """
    names = tuple(_ECOSET_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != 565:  # a damaged install must not label outputs wrongly
        raise RuntimeError(
            f"{_ECOSET_FILE} holds {len(names)} names, not 565: reinstall blt-models"
        )
    return names


def _rcnn_sat_cfgs(arch: str) -> list[PretrainedCfg]:
    cfgs = []
    for tag, classes, data in (
        ("ecoset", 565, "ecoset (565 basic-level categories), 128 x 128 px"),
        ("imagenet", 1000, "ImageNet-1k (ILSVRC-2012), 128 x 128 px"),
    ):
        url = RCNN_SAT_URLS.get((arch, tag))
        where = (
            f"Keras HDF5 file {url} (OSF project {RCNN_SAT_OSF})"
            if url
            else f"a Keras HDF5 file in the OSF project {RCNN_SAT_OSF} (its download URL is not "
            "recorded in blt-models: download it there and pass checkpoint_path=FILE, or convert "
            "it with `blt-models convert FILE OUT_DIR`)"
        )
        cfgs.append(
            PretrainedCfg(
                architecture=arch,
                tag=tag,
                url=url,
                # No hash of the published files is published; the load checks their structure
                # (variant, widths, classes, steps) strictly instead.
                sha256=None,
                input_size=(3, 128, 128),
                interpolation="bilinear",
                crop_pct=1.0,
                # rcnn_sat.preprocess_image: uint8 / 127.5 - 1, i.e. (x - 0.5) / 0.5 on [0, 1].
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
                num_classes=classes,
                # ImageNet: torchvision's names, in the standard ILSVRC-2012 label order.
                class_names=rcnn_sat_ecoset_class_names()
                if tag == "ecoset"
                else imagenet_class_names(),
                timesteps=8 if arch == "rcnn_bl" else 1,
                license="MIT (rcnn-sat code, Copyright (c) 2019 cjspoerer); the OSF weight files "
                "state no license of their own",
                source=f"Spoerer et al. 2020, github.com/cjspoerer/rcnn-sat; weights: {where}; no "
                "SHA-256 of the file is published",
                training_data=data,
                citation=RCNN_SAT_CITATION,
                description=(
                    f"`{arch}` of rcnn-sat trained on {data.split(' (')[0]}: input 128 x 128 RGB "
                    "scaled to [-1, 1] (mean 0.5, std 0.5 on [0, 1] pixels). "
                    + (
                        "8 steps, a readout at every step (instant readout, as trained; "
                        "cumulative_readout=True sums them)."
                        if arch == "rcnn_bl"
                        else "Feed-forward, one readout."
                    )
                ),
            )
        )
    return cfgs


@register_model
def rcnn_bl(**kwargs: Any) -> RcnnSatBL:
    """rcnn-sat BL (Spoerer et al. 2020): 7 bottom-up + lateral recurrent layers, 8 steps."""
    return RcnnSatBL(**kwargs)


@register_model
def rcnn_b(**kwargs: Any) -> RcnnSatB:
    """rcnn-sat B (Spoerer et al. 2020): 7 conv layers, feed-forward."""
    return RcnnSatB(variant="b", **kwargs)


@register_model
def rcnn_b_k(**kwargs: Any) -> RcnnSatB:
    """rcnn-sat B-K (Spoerer et al. 2020): B with larger kernels, feed-forward."""
    return RcnnSatB(variant="b_k", **kwargs)


@register_model
def rcnn_b_f(**kwargs: Any) -> RcnnSatB:
    """rcnn-sat B-F (Spoerer et al. 2020): B with twice the features, feed-forward."""
    return RcnnSatB(variant="b_f", **kwargs)


@register_model
def rcnn_b_d(**kwargs: Any) -> RcnnSatB:
    """rcnn-sat B-D (Spoerer et al. 2020): 14 conv layers, feed-forward."""
    return RcnnSatB(variant="b_d", **kwargs)


RCNN_SAT_ARCHS = ("rcnn_bl", "rcnn_b", "rcnn_b_k", "rcnn_b_f", "rcnn_b_d")
register_pretrained_cfgs(cfg for arch in RCNN_SAT_ARCHS for cfg in _rcnn_sat_cfgs(arch))
