"""The ConvRNNs of Nayebi et al. 2022 (neuroailab/convrnns), on the zoo's clock.

Re-implemented from the published description of the TensorFlow 1.13 code (github.com/neuroailab/
convrnns, MIT License) of Nayebi, Sagastuy-Brena, Bear, Kar, Kubilius, Ganguli, Sussillo, DiCarlo &
Yamins (2022), "Recurrent connections in the primate ventral visual stream mediate a tradeoff
between task performance and network size during core object recognition", Neural Computation 34.
Given the same weights, every layer at every step and the decoded logits equal the reference's
(relative error < 1e-4 on fixtures made with the reference code; channels-first here, NHWC there).

The 20 published models are registered as ``convrnn_<authors' name>`` (``convrnn_rgc_intermediate``,
``convrnn_ugrnn_intermediate_t30_tmaxconf``...; ``list_models("convrnn*")``):

* **shallow** (6 nodes: ``conv1 .. conv5`` and the readout ``imnetds``) and **intermediate**
  (11 nodes: ``conv1 .. conv10``, ``imnetds``) networks, with recurrent cells in ``conv3-5`` /
  ``conv4-10``: time decay, SimpleRNN, GRU, LSTM, IntersectionRNN, UGRNN and the reciprocal gated
  cell (RGC; the intermediate RGC models use the "median" RGC found by the authors' search, with
  long-range feedback conv8->conv5, conv7/conv9->conv6, conv10->conv7, conv10->conv9).
* Decoders: ``last`` (logits at the last step), ``max_conf`` (the step of highest softmax
  confidence, per image; ``*_tmaxconf``) and ``thresh`` (the first step whose confidence reaches
  0.9, else the most confident one; ``*_dthresh``). Their window is the steps ``N .. T-1``, N the
  number of nodes (6 / 11). ``model(x)`` is the decoded answer.

Time on the zoo's clock (the reference's): **one step per edge**. At step ``t`` every node reads
its predecessors' outputs of step ``t - 1`` (``conv1`` reads frame ``t``); at step 0 they read
zeros, and every node still computes its convolutions and biases, so early outputs are
bias-driven. Layer ``convK`` first carries image information at step ``K - 1`` (its
``first_step``); the readout ``imnetds`` (the logits) at step ``N - 1``. Every step carries a
readout: the logits at step ``t`` read the top layer's map of step ``t - 1`` (``readout_delay``
= 1). Features at steps before a layer's ``first_step`` are the computed, image-independent
values: computed on one sample, once per weights and image size, and kept between inference calls
(docs/convrnn.md, "Speed and memory"). (The reference's ``include_all_times=False`` returns layer
``convK`` from step ``K``, one step after its first image-driven output.)

Input: ``[B, 3, H, W]`` normalised with the ImageNet mean / std (224 px for the published weights).
A static image is shown at every step, as for every other family. The authors trained and
evaluated the models with an image that turns "off" (a constant 0.5 in normalised units) after
12 steps (constant for the t22 / t30 models); ``blt_models.stimuli.convrnn_protocol`` builds that
and the neural protocol (26 steps, off at 10), and ``protocol_of(model)`` gives the one a tag was
trained with.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._clock import ClockedModel, Connection, InputStage, Step
from .._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, imagenet_class_names
from .._registry import register_model, register_pretrained_cfgs
from .._tf_checkpoint import is_training_state
from .._validate import check_widths
from ..errors import InputError, InvalidWeightsError, TimestepsError

__all__ = [
    "ConvRNN",
    "CONVRNN_MODELS",
    "CONVRNN_CELLS",
    "CONVRNN_FEEDBACK",
    "CONVRNN_AREAS",
    "convrnn_spec",
    "tf_to_state_dict",
]

#: Cell types, as the first token of the authors' model names.
CONVRNN_CELLS = ("timedecay", "simplernn", "gru", "lstm", "intersectionrnn", "ugrnn", "rgc")
DECODERS = ("last", "max_conf", "thresh")

#: Long-range feedback of the intermediate RGC models: ``{layer: sources}`` (string-sorted, the
#: reference's harbor order after the feed-forward input).
CONVRNN_FEEDBACK: dict[str, tuple[str, ...]] = {
    "conv5": ("conv8",),
    "conv6": ("conv7", "conv9"),
    "conv7": ("conv10",),
    "conv9": ("conv10",),
}

# Median RGC hyper-parameters (the authors' search; configs/median_rgcell_cfg.py).
_MEDIAN_TAU_OFFSET = 0.9219348064291611
_MEDIAN_GATE_OFFSET = 0.7006566684988862
_MEDIAN_CELL_DEPTH = 64
# lstm_shallow (configs/lstm_shallow.npz): kernel, cell depth, forget bias, peepholes per layer.
_LSTM_SHALLOW = (
    (2, 128, 1.3561755203084322, False),
    (3, 256, 0.977962918535079, True),
    (4, 256, 0.9249280259963113, False),
)
_TF_LN_EPS = 1e-12  # tf.contrib.layers.layer_norm


@dataclass(frozen=True)
class _ModelSpec:
    """One of the authors' 20 models: cell, depth, decoder, default clock and presentation."""

    name: str
    cell: str
    depth: str  # "shallow" | "intermediate"
    decoder: str
    timesteps: int
    image_off: int | None  # None: the image at every step (constant)
    top1: float  # the authors' README: ImageNet validation top-1 (%)


def _spec(name: str, top1: float) -> _ModelSpec:
    base = name.replace("_tmaxconf", "").replace("_dthresh", "")
    cell, depth = base.split("_")[:2]
    decoder = "max_conf" if name.endswith("tmaxconf") else "thresh" if "dthresh" in name else "last"
    if "_t30" in base:
        timesteps, off = 30, None
    elif "_t22" in base:
        timesteps, off = 22, None
    else:
        timesteps, off = (16 if depth == "shallow" else 17), 12
    return _ModelSpec(name, cell, depth, decoder, timesteps, off, top1)


_NAMES = [f"{c}_{d}" for d in ("shallow", "intermediate") for c in CONVRNN_CELLS] + [
    "ugrnn_intermediate_t30",
    "ugrnn_intermediate_t30_tmaxconf",
    "ugrnn_intermediate_t30_dthresh",
    "rgc_intermediate_tmaxconf",
    "rgc_intermediate_dthresh",
    "rgc_intermediate_t22_tmaxconf",
]
#: The authors' README: ImageNet validation top-1 / top-5 (%) of the published checkpoints, with
#: the presentation they were trained with.
_README_ACCURACY = {
    "timedecay_shallow": (50.06, 72.97), "simplernn_shallow": (61.11, 83.15),
    "gru_shallow": (62.16, 84.02), "lstm_shallow": (63.43, 84.89),
    "intersectionrnn_shallow": (65.42, 86.02), "ugrnn_shallow": (60.82, 83.23),
    "rgc_shallow": (66.97, 87.02), "timedecay_intermediate": (67.52, 87.80),
    "simplernn_intermediate": (70.47, 89.48), "gru_intermediate": (69.81, 89.25),
    "lstm_intermediate": (69.57, 89.18), "intersectionrnn_intermediate": (68.98, 88.67),
    "ugrnn_intermediate": (69.78, 89.21), "ugrnn_intermediate_t30": (70.09, 89.29),
    "ugrnn_intermediate_t30_dthresh": (69.30, 88.97),
    "ugrnn_intermediate_t30_tmaxconf": (70.04, 89.29), "rgc_intermediate": (73.0, 91.16),
    "rgc_intermediate_dthresh": (71.81, 90.16), "rgc_intermediate_tmaxconf": (72.29, 90.52),
    "rgc_intermediate_t22_tmaxconf": (72.98, 90.80),
}  # fmt: skip
#: Layers that best match each visual area in the authors' neural fits (their README).
CONVRNN_AREAS: dict[str, dict[str, tuple[str, ...]]] = {
    "shallow": {"V4": ("conv3",), "pIT": ("conv4",), "cIT/aIT": ("conv5",)},
    "intermediate": {"V4": ("conv5", "conv6"), "pIT": ("conv7", "conv8"),
                     "cIT/aIT": ("conv9", "conv10")},
}  # fmt: skip
#: The authors' 20 models by their names (``convrnn_`` + name is the zoo's architecture).
CONVRNN_MODELS: dict[str, _ModelSpec] = {n: _spec(n, _README_ACCURACY[n][0]) for n in _NAMES}


def convrnn_spec(arch: str) -> _ModelSpec:
    """The authors' model behind a zoo name (``"convrnn_rgc_intermediate"`` or the bare name)."""
    name = arch.removeprefix("convrnn_")
    if name not in CONVRNN_MODELS:
        raise KeyError(f"{arch!r} is none of the 20 ConvRNNs ({', '.join(CONVRNN_MODELS)})")
    return CONVRNN_MODELS[name]


# --------------------------------------------------------------------------------- ops
def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``SAME`` padding of one axis: (before, after); before = total // 2."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's ``SAME`` padding (asymmetric for even kernels / stride 2)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True,
        groups: int = 1,
    ) -> None:  # fmt: skip
        symmetric = stride == 1 and kernel % 2 == 1
        super().__init__(
            c_in, c_out, kernel, stride, kernel // 2 if symmetric else 0, bias=bias, groups=groups
        )
        self._symmetric = symmetric

    def forward(self, x: Tensor) -> Tensor:
        if not self._symmetric:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = _same_pads(int(x.shape[-2]), k, s)
            left, right = _same_pads(int(x.shape[-1]), k, s)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (same parameters) that runs as a batched matrix product on CPU maps in
    channels-first memory: ``W [Co, Ci] @ x [B, Ci, H*W] (+ bias)``. oneDNN's channels-first 1x1
    convolutions ran at 37-120 GFLOP/s on this model's maps, the matrix product at 190-290
    (benchmarks/RESULTS.md); other layouts and devices take ``nn.Conv2d``'s path."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True) -> None:
        super().__init__(c_in, c_out, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.ndim != 4 or not x.is_contiguous():
            return super().forward(x)
        b, c, h, w = x.shape
        weight = self.weight.reshape(self.out_channels, c)
        flat = x.view(b, c, h * w)
        if self.bias is None:
            out = torch.matmul(weight, flat)
        else:
            out = torch.baddbmm(self.bias.view(1, -1, 1), weight.expand(b, -1, -1), flat)
        return out.view(b, self.out_channels, h, w)


def _pool(x: Tensor) -> Tensor:
    """Max-pool 2x2 stride 2 ``SAME``: an odd side pads one row / column of -inf at the end.

    Inference on even sides in channels-first memory: the maximum of row pairs, then of column
    pairs (the same values; PyTorch's channels-first CPU max-pool computes indices too and was
    5-7x slower at 56x56 and 28x28). With autograd, max-pool's gradient (one winner per window,
    not a split between ties).
    """
    grad = torch.is_grad_enabled() and x.requires_grad
    if grad or x.shape[-2] % 2 or x.shape[-1] % 2 or not x.is_contiguous():
        return F.max_pool2d(x, 2, 2, ceil_mode=True)  # channels_last: oneDNN's is fast
    row_max = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(row_max[..., 0::2], row_max[..., 1::2])


def _rows(value: Any, rows: int) -> Any:
    """A value computed on one sample for every image (it does not depend on the image) as
    ``rows`` rows: an expanded view; tuples element-wise; other row counts and None unchanged."""
    if value is None or rows == 1:
        return value
    if isinstance(value, tuple):
        return tuple(_rows(v, rows) for v in value)
    return value.expand(rows, *value.shape[1:]) if value.shape[0] == 1 else value


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The harbor's bilinear resize (``align_corners=True``); identity at the same size."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ChannelLayerNorm(nn.Module):
    """TF ``layer_norm``: moments over (C, H, W) of each sample, per-channel gain and shift."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x, tuple(x.shape[1:]), eps=_TF_LN_EPS)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), y, self.weight.view(1, -1, 1, 1))


class SeparableConv2d(nn.Module):
    """``tf.nn.separable_conv2d`` (SAME) + bias: depthwise k x k, then pointwise 1x1 with bias."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = SameConv2d(c_in, c_in, kernel, bias=False, groups=c_in)
        self.pointwise = PointwiseConv2d(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


# --------------------------------------------------------------------------------- cells
# Every cell: ``cell(x, state, r, f) -> (output, new_state)``; ``x`` the component conv's output,
# ``state`` None at step 0 (zeros), ``r`` the harbor's feed-forward input, ``f`` the feedback.
class TimeDecayCell(nn.Module):
    """``s_t = memory_decay * s_{t-1} + x_t`` with a trainable scalar decay; output ``s_t``."""

    def __init__(self) -> None:
        super().__init__()
        self.memory_decay = nn.Parameter(torch.zeros(1))

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        s = x if state is None else torch.addcmul(x, state, self.memory_decay)
        return s, s


class SimpleRNNCell(nn.Module):
    """``h = ELU([LayerNorm](conv3(x) + conv3(h)))`` (reference ``ConvNormBasicCell``)."""

    def __init__(self, c_in: int, c_out: int, layer_norm: bool) -> None:
        super().__init__()
        self.i = SameConv2d(c_in, c_out, 3)
        self.s = SameConv2d(c_out, c_out, 3)
        self.norm = ChannelLayerNorm(c_out) if layer_norm else None

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        z = self.i(x)
        z = z + (self.s.bias.view(1, -1, 1, 1) if state is None else self.s(state))
        if self.norm is not None:
            z = self.norm(z)
        h = F.elu(z)
        return h, h


class GRUCell(nn.Module):
    """Convolutional GRU; the forget bias 1.0 is added to the reset gate (reference quirk)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.gates = SameConv2d(c_in + c_out, 2 * c_out, 3)
        self.candidates = SameConv2d(c_in + c_out, c_out, 3)

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        h = (
            x.new_zeros((x.shape[0], self.candidates.out_channels, *x.shape[2:]))
            if state is None
            else state
        )
        reset, update = self.gates(torch.cat([x, h], 1)).chunk(2, 1)
        reset, update = torch.sigmoid(reset + 1.0), torch.sigmoid(update)
        c = torch.tanh(self.candidates(torch.cat([x, reset * h], 1)))
        h = update * h + (1 - update) * c
        return h, h


class LSTMCell(nn.Module):
    """Convolutional LSTM (``[i, j, f, o]`` from one conv of ``[x, h]``), optional layer norms
    and peepholes (one weight per position and channel, ``[C, H, W]``)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, forget_bias: float, layer_norm: bool,
        peephole_size: tuple[int, int] | None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.c_out, self.forget_bias = c_out, float(forget_bias)
        self.conv = SameConv2d(c_in + c_out, 4 * c_out, kernel)
        self.layer_norm = layer_norm
        if layer_norm:
            self.norm_input = ChannelLayerNorm(c_out)
            self.norm_transform = ChannelLayerNorm(c_out)
            self.norm_forget = ChannelLayerNorm(c_out)
            self.norm_output = ChannelLayerNorm(c_out)
            self.norm_state = ChannelLayerNorm(c_out)
        self.peephole_size = peephole_size
        if peephole_size is not None:
            self.w_f_diag = nn.Parameter(torch.zeros(c_out, *peephole_size))
            self.w_i_diag = nn.Parameter(torch.zeros(c_out, *peephole_size))
            self.w_o_diag = nn.Parameter(torch.zeros(c_out, *peephole_size))

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        if state is None:
            c = h = x.new_zeros((x.shape[0], self.c_out, *x.shape[2:]))
        else:
            c, h = state
        i, j, fg, o = self.conv(torch.cat([x, h], 1)).chunk(4, 1)
        if self.layer_norm:
            i, j = self.norm_input(i), self.norm_transform(j)
            fg, o = self.norm_forget(fg), self.norm_output(o)
        fg = fg + self.forget_bias
        if self.peephole_size is not None:
            fg, i, o = fg + self.w_f_diag * c, i + self.w_i_diag * c, o + self.w_o_diag * c
        c_new = c * torch.sigmoid(fg) + torch.sigmoid(i) * torch.tanh(j)
        if self.layer_norm:
            c_new = self.norm_state(c_new)
        h_new = torch.tanh(c_new) * torch.sigmoid(o)
        return h_new, (c_new, h_new)

    def extra_repr(self) -> str:
        return f"forget_bias={self.forget_bias}, layer_norm={self.layer_norm}, peephole_size={self.peephole_size}"


class IntersectionRNNCell(nn.Module):
    """IntersectionRNN: a gated state ``h`` and a gated output mixing ``x`` with ``relu``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = SameConv2d(2 * channels, 4 * channels, 3)

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        h = torch.zeros_like(x) if state is None else state
        gh, ha, gy, ya = self.conv(torch.cat([x, h], 1)).chunk(4, 1)
        gh, gy = torch.sigmoid(gh + 1.0), torch.sigmoid(gy + 1.0)
        h_new = gh * h + (1 - gh) * torch.tanh(ha)
        y = gy * x + (1 - gy) * F.relu(ya)
        return y, h_new


class UGRNNCell(nn.Module):
    """UGRNN: ``g = sigmoid(g_act + 1)``, ``h = g * h + (1 - g) * tanh(c_act)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_out = c_out
        self.conv = SameConv2d(c_in + c_out, 2 * c_out, 3)

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        h = x.new_zeros((x.shape[0], self.c_out, *x.shape[2:])) if state is None else state
        g, c = self.conv(torch.cat([x, h], 1)).chunk(2, 1)
        g = torch.sigmoid(g + 1.0)
        h = g * h + (1 - g) * torch.tanh(c)
        return h, h


class ReciprocalGatedCell(nn.Module):
    """The reciprocal gated cell of the shallow RGC model (3x3 convs without bias).

    State ``(cell [Cc], out [Co])``; ``out`` is fed the raw ``x``, gated by the cell and by the
    harbor input ``r``.
    """

    def __init__(self, channels: int, cell_channels: int, residual_channels: int) -> None:
        super().__init__()
        co, cc = channels, cell_channels
        self.channels, self.cell_channels = co, cc
        self.cell_input_to_cell = SameConv2d(co, cc, 3, bias=False)
        self.cell_tau = SameConv2d(cc, cc, 3, bias=False)
        self.cell_gate = SameConv2d(co, cc, 3, bias=False)
        self.out_tau = SameConv2d(co, co, 3, bias=False)
        self.out_gate = SameConv2d(cc, co, 3, bias=False)
        self.out_residual_to_out_gate = SameConv2d(residual_channels, co, 3, bias=False)

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        cell_in = self.cell_input_to_cell(x)
        gate_r = self.out_residual_to_out_gate(r)
        if state is None:  # zero state: the recurrent convs (no bias) give zeros, sigmoid(0)
            cell_new = F.elu(0.5 * cell_in)
            out_new = F.elu((1 - torch.sigmoid(gate_r)) * x)
            return out_new, (cell_new, out_new)
        cell, out = state
        tau_c, gate_c = torch.sigmoid(self.cell_tau(cell)), torch.sigmoid(self.cell_gate(out))
        cell_new = F.elu((1 - tau_c) * cell + (1 - gate_c) * cell_in)
        tau_o = torch.sigmoid(self.out_tau(out))
        gate_o = torch.sigmoid(self.out_gate(cell) + gate_r)
        out_new = F.elu((1 - tau_o) * out + (1 - gate_o) * x)
        return out_new, (cell_new, out_new)


class MedianReciprocalGatedCell(nn.Module):
    """The "median" reciprocal gated cell of the intermediate RGC models.

    7x7 depth-separable tau (sigmoid) and gate (tanh) convs, a 2x2 input-to-cell and a 3x3
    input-to-out conv of ``ELU(x)``, the harbor input ``r`` added to the out drive (through a
    1x1 projection where widths differ) and the feedback ``f`` through a 1x1 conv.
    """

    def __init__(
        self, channels: int, cell_channels: int, residual_channels: int, feedback_channels: int,
        kernel: int = 7,
    ) -> None:  # fmt: skip
        super().__init__()
        co, cc = channels, cell_channels
        self.channels, self.cell_channels = co, cc
        self.cell_input_to_cell = SameConv2d(co, cc, 2)
        self.cell_tau = SeparableConv2d(cc, cc, kernel)
        self.cell_out_to_cell = SeparableConv2d(co, cc, kernel)
        self.out_input_to_out = SameConv2d(co, co, 3)
        self.out_residual_add = (
            None if residual_channels == co else PointwiseConv2d(residual_channels, co, bias=False)
        )
        self.out_feedback_to_out = (
            PointwiseConv2d(feedback_channels, co) if feedback_channels else None
        )
        self.out_tau = SeparableConv2d(co, co, kernel)
        self.out_gate = SeparableConv2d(cc, co, kernel)
        self.tau_offset, self.gate_offset = _MEDIAN_TAU_OFFSET, _MEDIAN_GATE_OFFSET

    def forward(self, x, state, r, f):  # type: ignore[no-untyped-def]
        a, b = self.tau_offset, self.gate_offset
        u = F.elu(x)
        cell_in = self.cell_input_to_cell(u)
        # In place only on fresh convolution outputs that no backward pass reads and no hook
        # keeps (`_writable_output`); else the same values out of place.
        o_in = self.out_input_to_out(u)
        if not _writable_output(self.out_input_to_out):
            o_in = o_in.clone()
        o_in.add_(r if self.out_residual_add is None else self.out_residual_add(r))
        if self.out_feedback_to_out is not None:
            o_in.add_(self.out_feedback_to_out(f))
        if state is None:
            # Zero state: the decay terms vanish and the gates' separable convs of zeros are
            # their pointwise biases (the depthwise convs have none), one value per channel.
            gate_c = torch.tanh(self.cell_out_to_cell.pointwise.bias).view(1, -1, 1, 1)
            gate_o = torch.tanh(self.out_gate.pointwise.bias).view(1, -1, 1, 1)
            cell_new = F.elu(b * (1 - gate_c) * cell_in, inplace=True)
            out_new = F.elu(b * (1 - gate_o) * o_in, inplace=True)
            return out_new, (cell_new, out_new)
        cell, out = state
        tau_c = _apply(self.cell_tau, cell, torch.sigmoid, torch.sigmoid_)
        gate_c = _apply(self.cell_out_to_cell, out, torch.tanh, torch.tanh_)
        tau_o = _apply(self.out_tau, out, torch.sigmoid, torch.sigmoid_)
        gate_o = _apply(self.out_gate, cell, torch.tanh, torch.tanh_)
        cell_new = F.elu(_decay_and_drive(a, cell, tau_c, b, cell_in, gate_c), inplace=True)
        out_new = F.elu(_decay_and_drive(a, out, tau_o, b, o_in, gate_o), inplace=True)
        return out_new, (cell_new, out_new)


def _apply(module: nn.Module, x: Tensor, fn: Any, fn_: Any) -> Tensor:
    """``fn(module(x))`` for an element-wise ``fn``; its in-place form ``fn_`` where
    ``module``'s output allows."""
    y = module(x)
    return fn_(y) if _writable_output(module) else fn(y)


def _apply_add(module: nn.Module, x: Tensor, other: Tensor) -> Tensor:
    """``module(x) + other``; in place where ``module``'s output allows."""
    y = module(x)
    return y.add_(other) if _writable_output(module) else y + other


def _decay_and_drive(
    a: float, state: Tensor, tau: Tensor, b: float, drive: Tensor, gate: Tensor
) -> Tensor:
    """``a * (1 - tau) * state + b * (1 - gate) * drive`` in four passes over the maps (two
    fresh ones) instead of six; nothing autograd keeps is written."""
    decay = torch.addcmul(state, state, tau, value=-1)
    return decay.mul_(a).add_(torch.addcmul(drive, drive, gate, value=-1), alpha=b)


# --------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class _LayerSpec:
    kernel: int
    stride: int
    channels: int
    conv_act: bool  # ELU after the component conv
    cell: bool
    post_conv: bool  # 3x3 conv + residual add (intermediate, non-RGC)
    post_act: bool  # ELU in post_memory
    pool: bool


class ConvRNNLayer(nn.Module):
    """One node ``convK``: harbor -> component conv -> [cell] -> post ops (ELU, conv +
    residual, max-pool), as the reference's layer tables give them."""

    def __init__(
        self, spec: _LayerSpec, c_in: int, cell: nn.Module | None, feedback: tuple[str, ...]
    ) -> None:
        super().__init__()
        self.conv_act, self.post_act, self.pool = spec.conv_act, spec.post_act, spec.pool
        self.feedback = feedback
        self.conv = SameConv2d(c_in, spec.channels, spec.kernel, spec.stride)
        self.cell = cell
        out = _cell_out(cell, spec.channels)
        self.post_conv = SameConv2d(out, out, 3) if spec.post_conv else None
        self.residual = (
            PointwiseConv2d(c_in, out, bias=False) if spec.post_conv and c_in != out else None
        )
        self.out_channels = out

    def forward(self, r: Tensor, f: Tensor | None, state: Any) -> tuple[Tensor, Any]:
        x = self.conv(r)
        # own: x is a map of this call that nothing else holds, so it may be written in place
        own = _writable_output(self.conv)
        if self.conv_act:
            x, own = F.elu(x, inplace=own), True
        if self.cell is not None:
            x, state = self.cell(x, state, r, f)
            own = False  # the cell's output is (part of) its state
        if self.post_conv is not None:
            x = _apply_add(self.post_conv, x, r if self.residual is None else self.residual(r))
            own = True
        if self.post_act:
            x = F.elu(x, inplace=own)
        if self.pool:
            x = _pool(x)
        return x, state

    def extra_repr(self) -> str:
        fb = f", feedback={list(self.feedback)}" if self.feedback else ""
        return f"conv_act={self.conv_act}, post_act={self.post_act}, pool={self.pool}{fb}"


# ----------------------------------------------------------------------- prelude
_PRELUDE_CACHE = "_prelude_cache"


@dataclass
class _Prelude:
    """Layer ``n``'s steps ``t < n``: the image has not reached it yet (one step per edge, and
    feedback comes from above, later still), so its values are the same for every image. They
    run on one sample that stands for the batch (a quarter of rgc_intermediate's layer-steps at
    17 steps). ``outputs[n][t]`` ``[1, C, H, W]``; ``states[n]`` the cell state after the last
    of them."""

    outputs: list[list[Tensor]]
    states: list[Any]


class _PreludeCache:
    """A prelude kept for the next call with the same geometry and the same weights.

    ``weights`` are copies of every parameter and buffer, compared value for value at each
    call: a change made in any way (an optimiser step, ``load_state_dict``, ``p.data``, NumPy)
    is seen; everything else the prelude depends on is in ``key`` (`_prelude_key`), and what
    cannot be compared by value is not kept (`_prelude_reusable`). The copy costs memory (59 MiB for
    rgc_intermediate, 193 MiB for ugrnn_intermediate) and the comparison time (16 / 53 ms on 2
    cores), less than recomputing the prelude at every image size measured (32-112 px, batch 1
    and 8: 1.03-1.43x faster).
    """

    def __init__(self, key: tuple, weights: list[tuple[str, Tensor]], prelude: _Prelude) -> None:
        self.key, self.prelude = key, prelude
        self.weights = [(name, t.detach().clone()) for name, t in weights]

    def same_weights(self, weights: list[tuple[str, Tensor]]) -> bool:
        if [name for name, _ in weights] != [name for name, _ in self.weights]:
            return False
        for (_, now), (_, kept) in zip(weights, self.weights, strict=True):
            if (now.dtype, now.device, now.shape, now.stride()) != (
                kept.dtype, kept.device, kept.shape, kept.stride()
            ) or not torch.equal(now, kept):  # fmt: skip
                return False
        return True


def _weights_of(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]


def _prelude_reusable(model: nn.Module, conv1_out: Tensor) -> bool:
    """Kept only in plain eager inference: not with autograd (the values would carry no graph to
    the weights), not while ``torch.compile``, ``torch.jit.trace``, ``torch.fx`` or
    ``torch.export`` record the call (a kept value would become a constant of the graph), not for
    meta, fake or ``torch.func``-transformed tensors, and not with forward hooks (they would not
    see the kept steps)."""
    tracing = (
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch.fx._symbolic_trace.is_fx_symbolic_tracing()
    )
    if torch.is_grad_enabled() or tracing:
        return False
    if type(conv1_out) is not Tensor or conv1_out.device.type not in ("cpu", "cuda", "xpu", "mps"):
        return False
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is not None and functorch.is_functorch_wrapped_tensor(conv1_out):
        return False
    return not _any_forward_hooks(model)


def _any_forward_hooks(module: nn.Module) -> bool:
    from torch.nn.modules import module as module_globals

    if any(
        getattr(module_globals, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
    ):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


#: Modules whose output is a new tensor that nothing else holds (without hooks): the cells may
#: update it in place. A replaced submodule (``nn.Identity()`` for a lesion) is not one of them.
_FRESH_OUTPUT = (SameConv2d, PointwiseConv2d, SeparableConv2d, nn.Conv2d)


def _writable_output(module: nn.Module) -> bool:
    """Whether ``module``'s output may be written in place: every module in it is one of
    `_FRESH_OUTPUT` exactly and no forward hook (which may keep the output) is registered."""
    return all(type(m) in _FRESH_OUTPUT for m in module.modules()) and not _any_forward_hooks(
        module
    )


class _Uncacheable(Exception):
    """A setting the prelude key cannot hold by value: the prelude is computed in the call."""


def _setting_value(value: Any) -> Any:
    """A module attribute as a key entry (compared by value), or `_Uncacheable`."""
    if value is None or isinstance(value, (bool, int, float, complex, str, torch.dtype)):
        return value
    if isinstance(value, np.generic):
        return (type(value), value.item())
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_setting_value(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple((k, _setting_value(v)) for k, v in value.items()))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a config record
        fields = dataclasses.fields(value)
        return (
            type(value),
            tuple((f.name, _setting_value(getattr(value, f.name))) for f in fields),
        )
    if isinstance(value, Tensor) and value.numel() <= 64 and value.device.type != "meta":
        return (Tensor, value.dtype, tuple(value.shape), tuple(value.detach().flatten().tolist()))
    raise _Uncacheable(type(value).__name__)


def _prelude_key(model: nn.Module, conv1_out: Tensor) -> tuple | None:
    """What the prelude depends on besides the weights' values, or None where it cannot be told:

    * conv1's map: shape, dtype, device, layout; autocast; the global numeric settings (float32
      matmul precision, TF32, oneDNN / cuDNN switches, deterministic algorithms, threads);
    * every module's type, its class's ``forward`` and its own attributes by value (offsets,
      strides, flags; NumPy scalars and small tensors too); an attribute that cannot be compared
      by value (an instance-level ``forward``, an object) makes the prelude computed in the call;
    * the family module's helper functions (a patched one changes the key).
    """
    device = conv1_out.device.type
    try:
        autocast = torch.is_autocast_enabled(device)
        autocast_dtype = torch.get_autocast_dtype(device) if autocast else None
    except RuntimeError:  # a device type autocast does not know
        return None
    backends = torch.backends
    numerics = (
        torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled(),
        torch.get_num_threads(), backends.mkldnn.enabled, backends.cudnn.enabled,
        backends.cudnn.allow_tf32, backends.cudnn.deterministic, backends.cudnn.benchmark,
        backends.cuda.matmul.allow_tf32,
    )  # fmt: skip
    settings = []
    for name, m in model.named_modules():
        entries = []
        for k, v in vars(m).items():
            if k.startswith("_") and (isinstance(v, (dict, set)) or k.endswith("_cache")):
                continue  # nn.Module's registries and the model's own caches
            try:
                entries.append((k, _setting_value(v)))
            except _Uncacheable:
                return None
        settings.append((name, type(m), type(m).forward, tuple(entries)))
    helpers = (_decay_and_drive, _pool, _rows, _resize, _same_pads, F.elu, F.conv2d)
    return (
        tuple(conv1_out.shape[1:]), conv1_out.dtype, conv1_out.device,
        conv1_out.is_contiguous(memory_format=torch.channels_last),
        autocast, autocast_dtype, numerics, tuple(settings), helpers,
    )  # fmt: skip


def _cell_out(cell: nn.Module | None, conv_channels: int) -> int:
    if isinstance(cell, (SimpleRNNCell, UGRNNCell)):
        return cell.s.out_channels if isinstance(cell, SimpleRNNCell) else cell.c_out
    if isinstance(cell, GRUCell):
        return cell.candidates.out_channels
    if isinstance(cell, LSTMCell):
        return cell.c_out
    return conv_channels


def _layer_table(cell: str, depth: str) -> list[_LayerSpec]:
    """Published layer table (224 px) of a (cell, depth) pair: one spec per ``convK``."""
    L = _LayerSpec
    rgc = cell == "rgc"
    if depth == "shallow":
        a = rgc  # shallow RGC: every component conv has an ELU
        return [
            L(7, 2, 64, True, False, False, False, True),
            L(3, 1, 128, True, False, False, False, True),
            L(3, 1, 256, a, True, False, False, True),
            L(3, 1, 256, a, True, False, False, True),
            L(3, 1, 512, a, True, False, False, True),
        ]
    if rgc:
        widths = (64, 128, 128, 128, 128, 256, 256, 256, 512, 512)
        pools = (True, False, False, True, False, True, True, False, False, True)
        return [
            L(7 if n == 0 else 3, 2 if n == 0 else 1, w, False, n >= 3, False, n < 3, p)
            for n, (w, p) in enumerate(zip(widths, pools, strict=True))
        ]
    widths = (64, 64, 64, 128, 128, 256, 256, 512, 512, 512)
    pools = (True, False, False, True, False, True, True, False, False, True)
    return [
        L(7, 2, 64, False, False, False, True, True)
        if n == 0
        else L(3, 1, w, True, n >= 3, True, True, p)
        for n, (w, p) in enumerate(zip(widths, pools, strict=True))
    ]


def _default_cell_channels(cell: str, depth: str, channels: Sequence[int]) -> tuple[int, ...]:
    cells = [c for n, c in enumerate(channels) if n >= (2 if depth == "shallow" else 3)]
    if cell == "rgc":
        return tuple(cells) if depth == "shallow" else (_MEDIAN_CELL_DEPTH,) * len(cells)
    if depth == "shallow" and cell == "simplernn":
        return (128, 256, 256)
    if depth == "shallow" and cell == "lstm":
        return tuple(c for _, c, _, _ in _LSTM_SHALLOW)
    return tuple(cells)


# --------------------------------------------------------------------------------- model
class ConvRNN(ClockedModel):
    """A ConvRNN of Nayebi et al. 2022 on the zoo's clock (see the module docstring).

    Args:
        cell: ``"timedecay"``, ``"simplernn"``, ``"gru"``, ``"lstm"``, ``"intersectionrnn"``,
            ``"ugrnn"`` or ``"rgc"``.
        depth: ``"shallow"`` (conv1-5, cells in conv3-5) or ``"intermediate"`` (conv1-10, cells
            in conv4-10; the RGC models with long-range feedback).
        decoder: ``"last"`` (the logits at the last step), ``"max_conf"`` or ``"thresh"``:
            what ``model(x)`` returns (see `decode`).
        timesteps: default clock length (the reference's ``times``; authors: 16 shallow, 17
            intermediate, 22 / 30 for the t22 / t30 models).
        num_classes: readout width (1000 for the published weights; 0: pooled features).
        in_chans: input channels (3 for the published weights).
        channels: the component convs' output widths, one per ``convK`` (published ones by
            default; a reduced-width checkpoint's ``blt-models convert`` reads them off).
        cell_channels: the cells' widths (shallow SimpleRNN / LSTM: their output depths; RGC:
            the depth of the cell state), one per cell layer; None: the published ones.
        cell_kernels: LSTM and median-RGC models: the side of each cell layer's clampable
            kernels (LSTM: its gate conv; median RGC: its 7x7 depth-separable convs). The
            reference clamps them to the map size, so checkpoints made at small images hold
            smaller kernels; None: the published ones (LSTM shallow 2, 3, 4; others 3; RGC 7).
        image_size: input side the LSTM peepholes of ``lstm_shallow`` are sized for (their
            weights hold one value per position); other models ignore it.

    Shapes: ``[B, in_chans, H, W]`` (shallow: H, W >= 65; 224 px for the published weights), or a
    time-major sequence ``[T, B, in_chans, H, W]`` (frame ``t`` is ``conv1``'s input at step
    ``t``) -> ``[B, num_classes]``.
    """

    classifier_name = "readout"
    first_conv_name = "conv1.conv"
    supports_sequences = True
    readout_delay = 1
    unroll = "biological"

    def __init__(
        self,
        cell: str = "rgc",
        depth: str = "intermediate",
        decoder: str = "last",
        timesteps: int | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        channels: Sequence[int] | None = None,
        cell_channels: Sequence[int] | None = None,
        cell_kernels: Sequence[int] | None = None,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        if cell not in CONVRNN_CELLS:
            raise ValueError(f"cell must be one of {CONVRNN_CELLS}; got {cell!r}")
        if depth not in ("shallow", "intermediate"):
            raise ValueError(f"depth must be 'shallow' or 'intermediate'; got {depth!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}; got {decoder!r}")
        self.cell_type, self.depth, self.decoder = cell, depth, decoder
        self.num_classes, self.in_chans = num_classes, in_chans
        self.image_size = int(image_size)
        table = _layer_table(cell, depth)
        widths = check_widths(channels, [s.channels for s in table], "channels")
        table = [
            _LayerSpec(s.kernel, s.stride, w, s.conv_act, s.cell, s.post_conv, s.post_act, s.pool)
            for s, w in zip(table, widths, strict=True)
        ]
        n_cells = sum(s.cell for s in table)
        default_cells = _default_cell_channels(cell, depth, widths)
        self.channels = tuple(widths)
        self.cell_channels = tuple(
            check_widths(cell_channels, list(default_cells), "cell_channels")
        )
        assert len(self.cell_channels) == n_cells
        if cell == "lstm":
            kernels = [k for k, _, _, _ in _LSTM_SHALLOW] if depth == "shallow" else [3] * n_cells
        elif cell == "rgc" and depth == "intermediate":
            kernels = [7] * n_cells
        elif cell_kernels is not None:
            raise ValueError(
                f"cell_kernels applies to the LSTM and intermediate RGC models, not {cell} {depth}"
            )
        else:
            kernels = [3] * n_cells
        self.cell_kernels = tuple(check_widths(cell_kernels, kernels, "cell_kernels"))
        self.feedback = CONVRNN_FEEDBACK if (cell == "rgc" and depth == "intermediate") else {}
        names = [f"conv{n + 1}" for n in range(len(table))]
        self._names = tuple(names)
        # Output channels of every node (needed for the feedback widths): built in order.
        out_channels: dict[str, int] = {}
        side = self.image_size
        c_in, k_cell = in_chans, 0
        for name, spec in zip(names, table, strict=True):
            side = -(-side // spec.stride)
            cell_module: nn.Module | None = None
            if spec.cell:
                cell_module = self._make_cell(
                    spec, c_in, self.cell_channels[k_cell], k_cell, (side, side),
                    self._feedback_channels(name, table), self.cell_kernels[k_cell],
                )  # fmt: skip
                k_cell += 1
            layer = ConvRNNLayer(spec, c_in, cell_module, self.feedback.get(name, ()))
            self.add_module(name, layer)
            out_channels[name] = layer.out_channels
            if spec.pool:
                side = -(-side // 2)
            c_in = layer.out_channels
        self._out_channels = out_channels
        self.num_nodes = len(names) + 1  # with the readout node imnetds
        # The readout (imnetds): shallow a 2x2 VALID conv then the spatial mean; intermediate
        # the spatial mean then a Linear.
        self._top_channels = c_in
        self.readout = self._make_classifier(c_in, num_classes)
        if decoder != "last":
            self.register_buffer("softmax_beta", torch.ones(()))
        if decoder == "thresh":
            self.register_buffer("decoder_threshold", torch.tensor(0.9))
        self.timesteps = 1  # placeholder for the check below
        spec_t = 16 if depth == "shallow" else 17
        self.timesteps = self._resolve_timesteps(spec_t if timesteps is None else timesteps)

    # ----------------------------------------------------------------------------- building
    def _feedback_channels(self, name: str, table: list[_LayerSpec]) -> int:
        total = 0
        for src in self.feedback.get(name, ()):
            total += table[int(src[4:]) - 1].channels  # RGC: cell output = conv width
        return total

    def _make_cell(
        self, spec: _LayerSpec, c_in: int, cell_channels: int, k: int,
        size: tuple[int, int], feedback_channels: int, kernel: int,
    ) -> nn.Module:  # fmt: skip
        co = spec.channels
        cell, depth = self.cell_type, self.depth
        if cell == "timedecay":
            return TimeDecayCell()
        if cell == "simplernn":
            return SimpleRNNCell(co, cell_channels, layer_norm=depth == "shallow")
        if cell == "gru":
            return GRUCell(co, cell_channels)
        if cell == "ugrnn":
            return UGRNNCell(co, cell_channels)
        if cell == "intersectionrnn":
            if cell_channels != co:
                raise ValueError(
                    f"IntersectionRNN needs equal input and cell widths; got {co} and {cell_channels}"
                )
            return IntersectionRNNCell(co)
        if cell == "lstm":
            if depth == "shallow":
                _, _, fb, peep = _LSTM_SHALLOW[k]
                return LSTMCell(co, cell_channels, kernel, fb, True, size if peep else None)
            return LSTMCell(co, cell_channels, kernel, 1.0, False, None)
        if depth == "shallow":
            return ReciprocalGatedCell(co, cell_channels, c_in)
        return MedianReciprocalGatedCell(co, cell_channels, c_in, feedback_channels, kernel)

    def _make_classifier(self, in_features: int, num_classes: int) -> nn.Module:  # type: ignore[override]
        if getattr(self, "depth", "intermediate") == "shallow" and num_classes > 0:
            if isinstance(num_classes, bool) or not isinstance(num_classes, int):
                return ClockedModel._make_classifier(in_features, num_classes)  # its error
            return nn.Conv2d(in_features, num_classes, 2)
        return ClockedModel._make_classifier(in_features, num_classes)

    # ----------------------------------------------------------------------------- clock
    @property
    def layer_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def layer_aliases(self) -> dict[str, str]:  # type: ignore[override]
        return {}

    def first_steps(self, timesteps: int | None = None) -> dict[str, int]:
        """Layer ``convK`` first depends on the image at step ``K - 1`` (one step per edge)."""
        return {name: n for n, name in enumerate(self.layer_names)}

    def arrival_steps(self, onset: int, timesteps: int | None = None) -> dict[str, int]:
        """Frame ``onset`` is conv1's input at step ``onset``; each edge takes one step, and the
        feedback edges only go down, so layer ``convK`` first sees it at ``onset + K - 1``."""
        return {name: onset + n for n, name in enumerate(self.layer_names)}

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        """Every step: the reference's ``imnetds`` has an output (logits) at each step; they
        depend on the image from step ``N - 1`` (N nodes: 6 shallow, 11 intermediate)."""
        return list(range(self.timesteps if timesteps is None else timesteps))

    @property
    def decoder_window(self) -> int:
        """First step of the temporal decoders' window ``[N, T)`` (N = number of nodes)."""
        return self.num_nodes

    def _resolve_timesteps(self, timesteps: int | None) -> int:
        t = super()._resolve_timesteps(timesteps)
        if t < 2:
            raise TimestepsError(
                f"{self._display_name()} needs timesteps >= 2: its readout at step t reads the "
                f"top layer of step t - 1 (one step per edge); got timesteps={t}."
            )
        if self.decoder != "last" and t <= self.num_nodes:
            raise TimestepsError(
                f"{self._display_name()} decodes with {self.decoder!r} over the steps "
                f"{self.num_nodes} .. T-1 (the reference's window), so it needs timesteps > "
                f"{self.num_nodes}; got timesteps={t}."
            )
        return t

    def _display_name(self) -> str:
        name = super()._display_name()
        return f"convrnn ({self.cell_type}, {self.depth})" if name == "ConvRNN" else name

    @property
    def fixed_input_size(self) -> tuple[int, int, int] | None:
        """``(C, image_size, image_size)`` where LSTM peepholes fix the map sizes (the
        ``lstm`` models' peepholes are sized for one image side), else None."""
        if any(
            isinstance(layer.cell, LSTMCell) and layer.cell.peephole_size is not None
            for layer in self._layers()
        ):
            return (self.in_chans, self.image_size, self.image_size)
        return None

    def _check_spatial_size(self, height: int, width: int) -> None:
        if self.depth == "shallow" and self.num_classes > 0 and min(height, width) < 65:
            raise InputError(
                f"{self._display_name()} needs images of at least 65x65 px (its readout is a "
                f"2x2 convolution on the top map, side / 64 rounded up; the published weights "
                f"expect 224x224); got {height}x{width}."
            )
        fixed = self.fixed_input_size
        if fixed is not None and (height, width) != fixed[1:]:
            # Peepholes are per-position weights of one map size: the model takes the one image
            # side it declares (pretrained_cfg.fixed_input_size), as timm's fixed-size models do.
            raise InputError(
                f"{self._display_name()}: takes {fixed[1]}x{fixed[2]} px images only (its LSTM "
                f"peepholes are per-position weights of one map size); got {height}x{width}. "
                f"Resize the images to {fixed[1]} px, or build the model with image_size=N "
                "(untrained peepholes)."
            )
        for layer in self._layers():
            cell = layer.cell
            if isinstance(cell, LSTMCell) and cell.peephole_size is not None:
                side_h, side_w = self._map_side(height, layer), self._map_side(width, layer)
                if (side_h, side_w) != tuple(cell.peephole_size):
                    raise InputError(
                        f"{self._display_name()}: the LSTM peepholes of this model are sized "
                        f"for a {cell.peephole_size[0]}x{cell.peephole_size[1]} map "
                        f"({self.image_size} px images); {height}x{width} px images give "
                        f"{side_h}x{side_w}. Resize the images to {self.image_size} px, or "
                        "build the model with image_size=N (untrained peepholes)."
                    )

    def _map_side(self, side: int, target: ConvRNNLayer) -> int:
        for layer in self._layers():
            side = -(-side // layer.conv.stride[0])
            if layer is target:
                return side
            if layer.pool:
                side = -(-side // 2)
        raise AssertionError("layer not in the model")

    def _layers(self) -> list[ConvRNNLayer]:
        return [getattr(self, name) for name in self._names]

    def connections(self) -> tuple[Connection, ...]:
        """The image into conv1 (same step); each layer into the next, each cell into itself and
        each feedback edge one step later; the readout reads the top layer of the step before."""
        names = self.layer_names
        out = [Connection("input", names[0], "input", 0, f"{names[0]}.conv")]
        for below, name in zip(names[:-1], names[1:], strict=True):
            out.append(Connection(below, name, "bottom_up", 1, f"{name}.conv"))
        for name in names:
            layer = getattr(self, name)
            if layer.cell is not None:
                out.append(Connection(name, name, "lateral", 1, f"{name}.cell"))
            for src in layer.feedback:
                out.append(Connection(src, name, "top_down", 1, f"{name}.cell.out_feedback_to_out"))
        out.append(Connection(names[-1], "readout", "readout", 1, "readout"))
        return tuple(out)

    # ----------------------------------------------------------------------------- readout
    def _logits(self, top: Tensor) -> Tensor:
        """``imnetds`` of the top map: shallow ``mean(conv2x2_valid(top))``, intermediate
        ``Linear(mean(top))``; with no classifier, ``mean(top)``."""
        if isinstance(self.readout, nn.Conv2d):
            return self.readout(top).mean((2, 3))
        return self.readout(top.mean((2, 3)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Readout of a `forward_features` map ``[B, C, H, W]`` (the reference's
        ``imnetds``); ``pre_logits=True``: the spatial mean ``[B, C]``."""
        if pre_logits:
            return x.mean((2, 3)) if x.ndim == 4 else x
        return self._logits(x)

    def decode(self, logits: Tensor, steps: Tensor | Sequence[int]) -> Tensor:
        """The model's answer from per-step logits ``[R, B, K]`` at clock ``steps`` ``[R]``.

        ``last``: the logits of the last step. ``max_conf``: per image, the logits of the step
        in the window ``N .. T-1`` whose softmax (``softmax_beta * logits``) has the largest
        maximum (the first such step on ties). ``thresh``: the first window step whose maximum
        softmax probability reaches ``decoder_threshold`` (0.9), else as ``max_conf``.

        Returns:
            ``[B, K]``.
        """
        if self.decoder == "last":
            return logits[-1]
        steps = steps.tolist() if isinstance(steps, Tensor) else [int(s) for s in steps]
        keep = [i for i, s in enumerate(steps) if s >= self.num_nodes]
        if keep == list(range(keep[0], keep[-1] + 1)) if keep else False:
            window = logits[keep[0] : keep[-1] + 1]  # [W, B, K]; a slice (no data-dependent op)
        else:
            window = logits[keep]
        if window.shape[0] == 0:
            raise TimestepsError(
                f"no logits in the decoder window (steps >= {self.num_nodes}); run more steps"
            )
        beta = self.get_buffer("softmax_beta")
        conf = torch.softmax(beta * window, dim=-1).amax(-1)  # [W, B]
        best = conf.argmax(0)  # first maximum
        if self.decoder == "thresh":
            reached = conf >= self.get_buffer("decoder_threshold")
            first = reached.to(torch.uint8).argmax(0)
            best = torch.where(reached.any(0), first, best)
        return window.gather(0, best.view(1, -1, 1).expand(1, -1, window.shape[-1]))[0]

    def forward(self, x: Tensor) -> Tensor:
        """The authors' decoded answer ``[B, num_classes]`` on the default clock (``decoder``:
        the last step's logits, max-confidence or threshold; see `decode`). With
        ``num_classes=0``: the pooled features of the last step."""
        if self.decoder == "last" or self.num_classes == 0:
            return super().forward(x)
        _, timesteps = self._prepare_input(x, None)
        out = self.forward_timesteps(x)
        return self.decode(out.logits, self.readout_steps(timesteps))

    # ----------------------------------------------------------------------------- unroll
    def _last_steps(
        self, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> list[int]:
        """The last step at which each layer's output reaches a requested output (-1: never).

        A captured layer is needed at every step; the readout at step ``t`` needs the top layer
        at ``t - 1``; a layer at step ``t`` feeds the next layer, itself and its feedback
        targets at ``t + 1``. Later layer-steps are skipped (they change no requested value).
        Step 0 of every layer runs (the zero inputs of step 0 take their shapes from it).
        """
        names = self._names
        index = {name: n for n, name in enumerate(names)}
        last = [timesteps - 1 if name in capture else -1 for name in names]
        if readouts:
            last[-1] = max(last[-1], max(readouts) - 1)
        consumers: list[list[int]] = [[n + 1] for n in range(len(names) - 1)] + [[]]
        for n, name in enumerate(names):
            for src in self.feedback.get(name, ()):
                consumers[index[src]].append(n)
        changed = True
        while changed:  # a fixed point: feedback edges point down
            changed = False
            for n in reversed(range(len(names))):
                for c in consumers[n]:
                    if last[c] - 1 > last[n]:
                        last[n], changed = last[c] - 1, True
        return [max(step, 0) for step in last]

    def _feedback(
        self, layer: ConvRNNLayer, r: Tensor, previous: Sequence[Tensor | None], rows: int
    ) -> Tensor | None:
        """``layer``'s feedback input: its sources' maps of the step before (``previous``, by
        layer index; None at step 0: zeros), resized to ``r``'s map, in the harbor's order."""
        if not layer.feedback:
            return None
        size = (int(r.shape[-2]), int(r.shape[-1]))
        parts = []
        for name in layer.feedback:
            value = previous[self._names.index(name)]
            if value is None:
                c = self._out_channels[name]
                parts.append(r.new_zeros((rows, c, *size)))
            else:
                parts.append(_rows(_resize(value, size), rows))
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def _compute_prelude(self, conv1_out: Tensor, last: Sequence[int]) -> _Prelude:
        """Every layer ``n >= 1`` at the steps ``t < n`` (up to ``last[n]``), on one sample."""
        layers = self._layers()
        outputs: list[list[Tensor]] = [[] for _ in layers]
        states: list[Any] = [None] * len(layers)
        for t in range(len(layers) - 1):
            for n in range(t + 1, len(layers)):
                if t > last[n]:  # reaches no requested output
                    continue
                if t == 0:  # the layer below has no output yet: zeros of its shape
                    below = conv1_out if n == 1 else outputs[n - 1][0]
                    r = below.new_zeros((1, *below.shape[1:]))
                else:
                    r = outputs[n - 1][t - 1]
                previous = [o[t - 1] if 0 < t <= len(o) else None for o in outputs]
                f = self._feedback(layers[n], r, previous, 1)
                out, states[n] = layers[n](r, f, states[n])
                outputs[n].append(out)
        return _Prelude(outputs, states)

    def _prelude(self, conv1_out: Tensor, last: Sequence[int]) -> _Prelude:
        """The layer-steps before the image reaches each layer, kept between calls where that is
        safe (see `_Prelude`); ``conv1_out`` gives their input geometry."""
        key = _prelude_key(self, conv1_out) if _prelude_reusable(self, conv1_out) else None
        if key is None:
            return self._compute_prelude(conv1_out, last)
        weights = _weights_of(self)
        cached: _PreludeCache | None = self.__dict__.get(_PRELUDE_CACHE)
        if cached is not None and cached.key == key and cached.same_weights(weights):
            return cached.prelude
        self.__dict__.pop(_PRELUDE_CACHE, None)  # free it before computing the next
        prelude = self._compute_prelude(conv1_out, [len(self._names)] * len(self._names))
        self.__dict__[_PRELUDE_CACHE] = _PreludeCache(key, weights, prelude)
        return prelude

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # pickles and deep copies recompute the prelude
        state.pop(_PRELUDE_CACHE, None)
        return state

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        layers = self._layers()
        names = self._names
        last = self._last_steps(timesteps, capture, readouts)
        first = layers[0]
        # conv1 without a cell or memory is a function of the frame: once for a static image.
        stage = InputStage(x, lambda frame: first(frame, None, None)[0])
        prev: list[Tensor | None] = [None] * len(layers)
        prelude: _Prelude | None = None
        states: list[Any] = [None] * len(layers)
        batch = 1
        for t in range(timesteps):
            current: list[Tensor | None] = [None] * len(layers)
            for n, layer in enumerate(layers):
                if t > last[n]:  # reaches no requested output
                    continue
                if n == 0:
                    current[0] = frame = stage(t)
                    batch = int(frame.shape[0])
                    if prelude is None:
                        prelude = self._prelude(frame, last)
                        states = list(prelude.states)
                    continue
                assert prelude is not None
                if t < n:  # before the image reaches layer n: the same for every image
                    current[n] = prelude.outputs[n][t]
                    continue
                r = prev[n - 1]  # layer n - 1 at step t - 1 >= n - 1: image-driven
                assert r is not None
                f = self._feedback(layer, r, prev, batch)
                current[n], states[n] = layer(r, f, _rows(states[n], batch))
            logits = None
            if t in readouts:
                top = prev[-1]
                if top is None:
                    last_out = current[-1]
                    assert t == 0 and last_out is not None
                    top = torch.zeros_like(last_out)
                # own memory: `forward` returns these logits to the caller as they are
                logits = _rows(self._logits(top), batch).contiguous()
            features = {}
            for n, name in enumerate(names):
                value = current[n]
                if name in capture and value is not None:
                    features[name] = _rows(value, batch)  # a view: the clock copies features
            yield Step(t, features, logits)
            prev = current

    def extra_repr(self) -> str:
        return (
            f"cell={self.cell_type!r}, depth={self.depth!r}, decoder={self.decoder!r}, "
            f"timesteps={self.timesteps}, channels={list(self.channels)}, "
            f"cell_channels={list(self.cell_channels)}, cell_kernels={list(self.cell_kernels)}"
        )

    # ----------------------------------------------------------------------------- weights
    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """TensorFlow variable names (``tnn_model/conv3/ConvUGRNNCell/weights``...) and layouts
        -> this model's keys; a state dict without them is returned unchanged."""
        if not any(k.startswith("tnn_model/") for k in state_dict):
            return dict(state_dict)
        return tf_to_state_dict(state_dict, self)


_NODE = re.compile(r"^tnn_model/(conv\d+|imnetds)/(.+)$")
#: Diagnostic constants of the temporal decoders that the reference never uses for the answer.
_UNUSED = ("tnn_model/probs/softmax_beta", "tnn_model/alpha/softmax_beta")


# --------------------------------------------------------------------------------- TF key map
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
    if leaf not in ("weights", "bias"):
        return None
    if leaf == "weights":
        return f"{module}.weight", _hwio(value)
    return f"{module}.bias", value


def tf_to_state_dict(state: Mapping[str, Any], model: Any) -> dict[str, Tensor]:
    """The reference's variables (``tnn_model/...``, TF layouts) -> ``model``'s keys.

    Optimizer slots and ``global_step`` are dropped; so are the decoders' unused diagnostic
    constants (``probs/softmax_beta``, ``alpha/softmax_beta``) and the ``memory_decay`` of
    layers without a time-decay cell, which must be 0 (memoryless: what the published models
    hold). Names that fit nothing are kept as they are, so a strict load reports them.

    Raises:
        InvalidWeightsError: a non-zero ``memory_decay`` where the model has no time decay.
    """
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


# --------------------------------------------------------------------------------- configs
CONVRNN_CITATION = (
    "Nayebi, A., Sagastuy-Brena, J., Bear, D. M., Kar, K., Kubilius, J., Ganguli, S., Sussillo, "
    "D., DiCarlo, J. J. & Yamins, D. L. K. (2022). Recurrent connections in the primate ventral "
    "visual stream mediate a tradeoff between task performance and network size during core "
    "object recognition. Neural Computation 34(8): 1652-1675. doi:10.1162/neco_a_01506"
)
CONVRNN_BUCKET = "https://convrnnckpts.s3-us-west-1.amazonaws.com"


def convrnn_checkpoint_urls(name: str) -> dict[str, str]:
    """The authors' checkpoint files of one model: ``{"index": URL, "data": URL}`` (the ``.meta``
    graph is not needed)."""
    base = f"{CONVRNN_BUCKET}/{convrnn_spec(name).name}/model.ckpt"
    return {"index": f"{base}.index", "data": f"{base}.data-00000-of-00001"}


def _protocol_record(spec: _ModelSpec) -> dict[str, Any]:
    # blt_models.stimuli.Presentation(timesteps=T, off=image_off, blank=0.5).to_dict(), written
    # out (stimuli imports this module for convrnn_protocol); tests check that they agree.
    return {"protocol": "Presentation", "timesteps": spec.timesteps, "blank": 0.5,
            "contrast": 1.0, "noise_std": 0.0, "seed": 0, "on": 0, "off": spec.image_off}  # fmt: skip


def _cfg(spec: _ModelSpec) -> PretrainedCfg:
    arch = f"convrnn_{spec.name}"
    shown = (
        f"the image for steps 0-{spec.image_off - 1}, then the 'off' frame (0.5 in normalised "
        f"units) to step {spec.timesteps - 1}"
        if spec.image_off is not None
        else f"the image at every one of the {spec.timesteps} steps"
    )
    decoded = {
        "last": "the logits of the last step",
        "max_conf": "the logits of the most confident step (max-confidence decoder, trained "
        "inverse temperature)",
        "thresh": "the logits of the first step whose confidence reaches 0.9 (threshold "
        "decoder), else of the most confident step",
    }[spec.decoder]
    top1, top5 = _README_ACCURACY[spec.name]
    metrics = {"top1_readme": top1, "top5_readme": top5}
    return PretrainedCfg(
        architecture=arch,
        tag="imagenet",
        url=convrnn_checkpoint_urls(spec.name)["index"],
        sha256=None,
        input_size=(3, 224, 224),
        interpolation="bilinear",
        crop_pct=0.875,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_classes=1000,
        class_names=imagenet_class_names(),
        timesteps=spec.timesteps,
        protocol=_protocol_record(spec),
        license="MIT (the neuroailab/convrnns code); the checkpoints state no license of their own",
        source=f"Nayebi et al. 2022, github.com/neuroailab/convrnns; weights: the TensorFlow "
        f"checkpoint {CONVRNN_BUCKET}/{spec.name}/model.ckpt.*, converted by blt-models; no "
        "SHA-256 of the files is published",
        training_data="ImageNet-1k (ILSVRC-2012), 224 x 224 px",
        citation=CONVRNN_CITATION,
        metrics=metrics,
        description=(
            f"ConvRNN `{spec.name}` of Nayebi et al. 2022 ({spec.cell}, {spec.depth}), trained "
            f"on ImageNet with {shown} (protocol_of(model)). model(x) returns {decoded}. A "
            "static image is shown at every step."
        ),
    )


def _entrypoint(spec: _ModelSpec) -> Any:
    def build(**kwargs: Any) -> ConvRNN:
        if kwargs.get("timesteps") is None:
            kwargs["timesteps"] = spec.timesteps
        return ConvRNN(cell=spec.cell, depth=spec.depth, decoder=spec.decoder, **kwargs)

    build.__name__ = build.__qualname__ = f"convrnn_{spec.name}"
    build.__doc__ = (
        f"ConvRNN ``{spec.name}`` (Nayebi et al. 2022): {spec.cell} cells, {spec.depth}, "
        f"decoder {spec.decoder!r}, {spec.timesteps} steps by default."
    )
    return build


for _s in CONVRNN_MODELS.values():
    register_model(_entrypoint(_s))
register_pretrained_cfgs(_cfg(s) for s in CONVRNN_MODELS.values())
