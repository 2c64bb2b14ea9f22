"""BLT-VS: bottom-up, lateral and top-down streams of the ventral stream (Thorat & Kietzmann, 2024).

Eight areas (Retina, LGN, V1, V2, V3, V4, LOC, Readout). Every area from LGN to LOC keeps two
streams, bottom-up (BU) and top-down (TD), that gate each other multiplicatively: the BU output is
``ReLU(BU drive) * 2 * sigmoid(TD feed)`` and the TD output ``ReLU(TD drive) * 2 * sigmoid(BU feed)``,
each followed by a one-group GroupNorm. Drives add the area's lateral input to the feeds (the
convolution from the neighbouring area plus the V1 <-> V4 skips). The Readout's convolution gives
the logits (spatial mean of the first ``num_classes`` channels) and, through ReLU and GroupNorm,
the top-down signal that goes back to LOC (``num_classes + add_feats`` channels).

Inputs that are not given contribute nothing, not even a bias: that is how areas that nothing has
reached yet stay absent. A stream whose drive is missing while the other stream exists outputs the
GroupNorm of zeros, i.e. the norm's bias ``beta``: an image-independent tensor that later steps use
like any other value.

Time: ``unroll="standard"`` (the ImageNet weights) runs a full BU sweep,
the readout and a full TD sweep at every step, so every step has a readout; ``unroll="biological"``
(the ecoset weights) updates every area synchronously from the previous step's values, one area
per step, and the first readout comes at step 4. The reference's quirks are kept because the
published weights were trained with them: in standard mode the V4 -> V1 top-down skip is never
applied and V4's TD gate leaves out the V1 skip. One reference crash is fixed: with biological
unrolling and ``skip_connections=False`` the reference wakes V4 at step 3 through a skip module that
does not exist and fails; here an area wakes only through inputs it has modules for (V4 wakes at 5).

Module names are the zoo's (``v1.bu_lateral.spatial``...); the published files' names
(``connections.V1.bu_l_conv_depthwise``...) are mapped by
``convert_blt_vs_state_dict`` (below) when a file is loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._clock import ClockedModel, Connection, InputStage, Step
from .._pretrained import PretrainedCfg, imagenet_class_names
from .._registry import register_model, register_pretrained_cfgs
from ..errors import CheckpointMismatchError, InputError, TimestepsError

__all__ = [
    "BLTVS",
    "AREAS",
    "REFERENCE_AREAS",
    "STREAM_LAYERS",
    "blt_vs_key_from_reference",
    "blt_vs_key_to_reference",
    "convert_blt_vs_state_dict",
    "blt_vs_state_dict_to_reference",
    "is_blt_vs_reference_state_dict",
]

UNROLLS = ("biological", "standard")
READOUT_TYPES = ("multi", "single")
IMAGE_SIZES = (224, 128)

# Areas: zoo names and the reference's names, in order.
AREAS = ("retina", "lgn", "v1", "v2", "v3", "v4", "loc", "readout")
REFERENCE_AREAS = ("Retina", "LGN", "V1", "V2", "V3", "V4", "LOC", "Readout")
CHANNELS = (32, 32, 576, 480, 352, 256, 352)  # Retina ... LOC; the Readout has classes + add_feats
STRIDES = (2, 2, 2, 1, 1, 1, 2, 2)
BU_KERNELS = {224: (7, 7, 5, 1, 5, 3, 3, 5), 128: (5, 3, 3, 1, 3, 3, 3, 3)}
LATERAL_KERNELS = {224: (0, 0, 5, 5, 5, 5, 5, 0), 128: (0, 0, 3, 3, 3, 3, 3, 0)}
V1, V4, LOC, READOUT = 2, 5, 6, 7
SKIP_BU_KERNEL = {224: 7, 128: 5}  # V1 -> V4
SKIP_TD_KERNEL = 3  # V4 -> V1
SKIP_GROUPS = math.gcd(CHANNELS[V1], CHANNELS[V4])  # 64

# Feature layers: one per stream, in area order. The Retina's TD stream is left out: nothing
# reaches it (standard mode: the constant beta of its GroupNorm; biological mode: never computed)
# and nothing reads it. The Readout's BU activation is the logits (``forward_timesteps().logits``).
STREAM_LAYERS = (
    "retina_bu", "lgn_bu", "lgn_td", "v1_bu", "v1_td", "v2_bu", "v2_td", "v3_bu", "v3_td",
    "v4_bu", "v4_td", "loc_bu", "loc_td", "readout_td",
)  # fmt: skip

_ABSENT, _CONST, _IMAGE = 0, 1, 2  # what a stream holds at a step (see _trace)


# --------------------------------------------------------------------------------- blocks
class SeparableConv(nn.Module):
    """A spatial convolution (depthwise, or grouped for the skips) followed by a 1x1 convolution.

    The reference calls the two parts ``*_depthwise`` and ``*_pointwise``; each has its own bias.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, groups=groups)
        self.pointwise = nn.Conv2d(c_out, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.spatial(x))


def _apply(module: nn.Module | None, x: Tensor | None) -> Tensor | None:
    """An input contributes only if it is given and the area has a module for it."""
    return None if module is None or x is None else module(x)


def _sum(*terms: Tensor | None) -> Tensor | None:
    """Left-to-right sum of the present terms (None if none is present)."""
    out = None
    for term in terms:
        if term is not None:
            out = term if out is None else out + term
    return out


def _gated(drive: Tensor | None, feed: Tensor | None) -> Tensor:
    """``ReLU(drive) * 2 * sigmoid(feed)``; a missing drive gives zeros, a missing feed no gate."""
    if feed is None:
        if drive is None:
            raise RuntimeError("BLT-VS area called without any input")  # unreachable by schedule
        return F.relu(drive)
    if drive is None:
        return torch.zeros_like(feed)
    return F.relu(drive) * 2 * torch.sigmoid(feed)


class BLTVSArea(nn.Module):
    """One area from the Retina to LOC: BU and TD streams with their convolutions and norms.

    Modules (absent ones are None and have no weights): ``bu_conv`` (from the area below),
    ``bu_lateral`` (own BU, previous step), ``td_conv`` (transposed conv from the area above),
    ``td_lateral`` (own TD, previous step), ``bu_skip`` (V4 only, from V1's BU), ``td_skip`` (V1
    only, from V4's TD), ``norm_bu`` and ``norm_td`` (GroupNorm with one group).
    """

    def __init__(
        self,
        index: int,
        c_in: int,
        c_above: int | None,
        image_size: int,
        out_size: int,
        above_in_size: int | None,
        lateral: bool,
        topdown: bool,
        skip: bool,
    ) -> None:
        super().__init__()
        kernels, lateral_kernels = BU_KERNELS[image_size], LATERAL_KERNELS[image_size]
        c, k = CHANNELS[index], kernels[index]
        self.index = index
        self.bu_conv = nn.Conv2d(c_in, c, k, STRIDES[index], (k - 1) // 2)
        lk = lateral_kernels[index]
        self.bu_lateral = SeparableConv(c, c, lk, c) if lateral and lk > 0 else None
        if topdown and index >= 1:
            assert c_above is not None and above_in_size is not None
            ka, sa = kernels[index + 1], STRIDES[index + 1]
            pad = (ka - 1) // 2
            # The reference forces the output to the area's own size; fix that statically.
            output_padding = out_size - ((above_in_size - 1) * sa - 2 * pad + ka)
            self.td_conv: nn.ConvTranspose2d | None = nn.ConvTranspose2d(
                c_above, c, ka, sa, pad, output_padding=output_padding
            )
        else:
            self.td_conv = None
        self.td_lateral = (
            SeparableConv(c, c, lk, c) if self.td_conv is not None and lateral and lk > 0 else None
        )
        self.bu_skip = (
            SeparableConv(CHANNELS[V1], c, SKIP_BU_KERNEL[image_size], SKIP_GROUPS)
            if skip and index == V4
            else None
        )
        self.td_skip = (
            SeparableConv(CHANNELS[V4], c, SKIP_TD_KERNEL, SKIP_GROUPS)
            if skip and index == V1
            else None
        )
        self.norm_bu = nn.GroupNorm(1, c)
        self.norm_td = nn.GroupNorm(1, c)

    def forward(
        self,
        bu: Tensor | None = None,
        bu_l: Tensor | None = None,
        td: Tensor | None = None,
        td_l: Tensor | None = None,
        bu_skip: Tensor | None = None,
        td_skip: Tensor | None = None,
        *,
        want_bu: bool = True,
        want_td: bool = True,
        bu_feed: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """BU and TD outputs (None where not wanted) from the given inputs.

        ``bu_feed`` passes an already computed ``bu_conv(bu)`` (the standard TD sweep reuses the
        BU sweep's value of the same step instead of recomputing it).
        """
        b = bu_feed if bu_feed is not None else _apply(self.bu_conv, bu)
        sb = _apply(self.bu_skip, bu_skip)
        d = _apply(self.td_conv, td)
        sd = _apply(self.td_skip, td_skip)
        bu_out = td_out = None
        if want_bu:
            drive = _sum(b, _apply(self.bu_lateral, bu_l), sb)
            bu_out = self.norm_bu(_gated(drive, _sum(d, sd)))
        if want_td:
            drive = _sum(d, _apply(self.td_lateral, td_l), sd)
            td_out = self.norm_td(_gated(drive, _sum(b, sb)))
        return bu_out, td_out


class BLTVSReadout(nn.Module):
    """Area 7: ``conv`` over LOC's BU output; logits = spatial mean of the first ``num_classes``
    channels, TD output = ``norm_td(ReLU(conv))`` with all ``num_classes + add_feats`` channels.

    ``num_classes=0`` (timm's "no classifier"): the logits are the pooled LOC BU features
    ``[B, 352]``; the ``add_feats`` channels still feed LOC top-down.
    """

    def __init__(self, c_in: int, num_classes: int, add_feats: int, image_size: int) -> None:
        super().__init__()
        k = BU_KERNELS[image_size][READOUT]
        self.num_classes = num_classes
        self.conv = nn.Conv2d(c_in, num_classes + add_feats, k, STRIDES[READOUT], (k - 1) // 2)
        self.norm_td = nn.GroupNorm(1, num_classes + add_feats)

    def forward(self, x: Tensor, want_td: bool = True) -> tuple[Tensor, Tensor | None]:
        z = self.conv(x)
        if self.num_classes == 0:
            logits = F.adaptive_avg_pool2d(x, 1).flatten(1)
        else:
            logits = F.adaptive_avg_pool2d(z, 1).flatten(1)[:, : self.num_classes]
        td = self.norm_td(F.relu(z)) if want_td else None
        return logits, td


def _map_sizes(image_size: int) -> tuple[int, ...]:
    """Output side of every area (reference ``compute_output_shapes``): 112 ... 7 at 224 px."""
    sizes, s = [], image_size
    for k, stride in zip(BU_KERNELS[image_size], STRIDES, strict=True):
        s = (s + 2 * ((k - 1) // 2) - k) // stride + 1
        sizes.append(s)
    return tuple(sizes)


# --------------------------------------------------------------------------------- model
class BLTVS(ClockedModel):
    """BLT-VS of Thorat & Kietzmann (2024), with the reference's options.

    Args:
        timesteps: default number of clock steps (the reference's ``timesteps``).
        num_classes: number of logits.
        add_feats: extra readout channels that are not logits; they only travel top-down to LOC.
        lateral_connections, topdown_connections, skip_connections: build the lateral, top-down
            and V1 <-> V4 skip connections.
        unroll: ``"standard"`` (reference ``bio_unroll=False``: full sweep per step, a readout at
            every step) or ``"biological"`` (``bio_unroll=True``: one area per step, readouts from
            step 4).
        image_size: 224 or 128 (kernel sizes differ; published weights are 224 px). Inputs must
            have exactly this height and width.
        readout_type: ``"multi"`` (a readout at every readout step) or ``"single"`` (one readout at
            the last step: a learned softmax-weighted sum of the per-step logits).
        in_chans: input channels (3 in the reference).

    The defaults are the ImageNet configuration (the default tag ``blt_vs.imagenet``); the
    reference class's own defaults (12 steps, 565 classes, biological) are ``blt_vs.ecoset``.

    Shapes: input ``[B, in_chans, S, S]`` with ``S = image_size``, or a sequence
    ``[T, B, in_chans, S, S]`` whose frame ``t`` is the Retina's input at step ``t``; logits
    ``[B, num_classes]``.
    """

    classifier_name = "readout.conv"
    first_conv_name = "retina.bu_conv"
    supports_sequences = True

    def __init__(
        self,
        timesteps: int = 6,
        num_classes: int = 1000,
        add_feats: int = 100,
        lateral_connections: bool = True,
        topdown_connections: bool = True,
        skip_connections: bool = True,
        unroll: str = "standard",
        image_size: int = 224,
        readout_type: str = "multi",
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if unroll not in UNROLLS:
            raise ValueError(f"unroll must be one of {UNROLLS}; got {unroll!r}")
        if readout_type not in READOUT_TYPES:
            raise ValueError(f"readout_type must be one of {READOUT_TYPES}; got {readout_type!r}")
        if image_size not in IMAGE_SIZES:
            raise ValueError(
                f"image_size must be 224 or 128 (the reference's two layouts); got {image_size!r}"
            )
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps must be a positive integer; got {timesteps!r}")
        if num_classes < 0 or add_feats < 0 or num_classes + add_feats < 1:
            raise ValueError(
                f"need num_classes >= 0 (0: no classifier, pooled LOC features), add_feats >= 0 "
                f"and num_classes + add_feats >= 1 (the readout's channels); got {num_classes}, "
                f"{add_feats}"
            )
        self.timesteps = timesteps
        self.num_classes = num_classes
        self.add_feats = add_feats
        self.lateral_connections = lateral_connections
        self.topdown_connections = topdown_connections
        self.skip_connections = skip_connections
        self.unroll = unroll
        self.image_size = image_size
        self.readout_type = readout_type
        self.in_chans = in_chans
        self.map_sizes = _map_sizes(image_size)

        c_readout = num_classes + add_feats
        for i in range(READOUT):
            c_above = c_readout if i + 1 == READOUT else CHANNELS[i + 1]
            area = BLTVSArea(
                i, in_chans if i == 0 else CHANNELS[i - 1], c_above if i >= 1 else None, image_size,
                self.map_sizes[i], self.map_sizes[i + 1], lateral_connections,
                topdown_connections, skip_connections,
            )  # fmt: skip
            self.add_module(AREAS[i], area)
        self.readout = BLTVSReadout(CHANNELS[LOC], num_classes, add_feats, image_size)

        self._trace_cache: dict[object, list[dict[tuple[str, int], int]]] = {}
        if readout_type == "single":
            n = len(self._multi_readout_steps(timesteps))
            if n < 1:
                raise ValueError(
                    f"readout_type='single' with {unroll} unrolling needs a readout within "
                    f"timesteps={timesteps} (first readout at step {self._multi_readout_steps(64)[0]})"
                )
            # A module's own parameters come first in its state dict, as in the reference.
            self.readout_weights = nn.Parameter(torch.ones(n))

    @property
    def areas(self) -> tuple[BLTVSArea, ...]:
        """Retina ... LOC (the Readout is ``self.readout``)."""
        return tuple(cast(BLTVSArea, self.get_submodule(name)) for name in AREAS[:READOUT])

    # ----------------------------------------------------------------------------- timing
    def _trace(self, timesteps: int, onset: int | None = None) -> list[dict[tuple[str, int], int]]:
        """What every stream holds at every step: absent, an image-independent constant, or a
        value that depends on the image. Mirrors ``_unroll`` on flags instead of tensors.

        Keys are ``("bu", i)`` for areas 0..6 and ``("td", i)`` for areas 1..7 (7: the Readout).
        ``onset=None``: the image is the input at every step. ``onset=s``: dependence on the frame
        of step ``s`` of a sequence (the Retina depends on it at step ``s`` only).
        """
        horizon = max(timesteps, 32 if onset is None else onset + 32)
        key = horizon if onset is None else (horizon, onset)
        if key in self._trace_cache:
            return self._trace_cache[key]
        has = self._has_module
        steps: list[dict[tuple[str, int], int]] = []
        prev: dict[tuple[str, int], int] = {}

        def combine(drive: list[int], feed: list[int]) -> int:
            drive = [s for s in drive if s != _ABSENT]
            feed = [s for s in feed if s != _ABSENT]
            if not drive:  # GroupNorm of zeros: beta
                return _CONST
            return max(drive + feed)

        for t in range(horizon):
            retina = _IMAGE if onset is None or t == onset else _CONST
            cur: dict[tuple[str, int], int] = {("bu", 0): retina}
            g = prev.get
            if self.unroll == "biological":
                if t > 0:
                    for i in range(1, READOUT):
                        b = g(("bu", i - 1), _ABSENT)
                        lb = g(("bu", i), _ABSENT) if has(i, "bu_lateral") else _ABSENT
                        sb = g(("bu", V1), _ABSENT) if has(i, "bu_skip") else _ABSENT
                        d = g(("td", i + 1), _ABSENT) if has(i, "td_conv") else _ABSENT
                        ld = g(("td", i), _ABSENT) if has(i, "td_lateral") else _ABSENT
                        sd = g(("td", V4), _ABSENT) if has(i, "td_skip") else _ABSENT
                        if max(b, sb, d, sd) == _ABSENT:
                            continue
                        cur[("bu", i)] = combine([b, lb, sb], [d, sd])
                        cur[("td", i)] = combine([d, ld, sd], [b, sb])
            else:
                for i in range(1, READOUT):  # BU sweep
                    b = cur[("bu", i - 1)]
                    lb = prev.get(("bu", i), _ABSENT) if has(i, "bu_lateral") else _ABSENT
                    sb = cur[("bu", V1)] if has(i, "bu_skip") else _ABSENT
                    d = prev.get(("td", i + 1), _ABSENT) if has(i, "td_conv") else _ABSENT
                    cur[("bu", i)] = combine([b, lb, sb], [d])
            if cur.get(("bu", LOC), _ABSENT) != _ABSENT:
                cur[("td", READOUT)] = cur[("bu", LOC)]
            if self.unroll == "standard":
                for i in reversed(range(1, READOUT)):  # TD sweep
                    d = cur[("td", i + 1)] if has(i, "td_conv") else _ABSENT
                    ld = prev.get(("td", i), _ABSENT) if has(i, "td_lateral") else _ABSENT
                    cur[("td", i)] = combine([d, ld], [cur[("bu", i - 1)]])
            steps.append(cur)
            prev = cur
        self._trace_cache[key] = steps
        return steps

    def _has_module(self, index: int, name: str) -> bool:
        return getattr(self.get_submodule(AREAS[index]), name) is not None

    def _stream_key(self, layer: str) -> tuple[str, int]:
        area, stream = layer.rsplit("_", 1)
        return stream, AREAS.index(area)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The streams that carry image information at some step (all 14 in the published
        configurations; with ``topdown_connections=False`` only those TD streams that a skip
        still feeds)."""
        trace = self._trace(0)
        return tuple(
            name for name in STREAM_LAYERS
            if any(step.get(self._stream_key(name), _ABSENT) == _IMAGE for step in trace)
        )  # fmt: skip

    @property
    def layer_aliases(self) -> dict[str, str]:  # type: ignore[override]
        """Reference names (as in its ``hook_type='separate'`` hooks, without the step)."""
        out = {}
        for name in self.layer_names:
            area, stream = name.rsplit("_", 1)
            out[f"{REFERENCE_AREAS[AREAS.index(area)]}_{stream.upper()}"] = name
        return out

    def connections(self) -> tuple[Connection, ...]:
        """The streams' inputs, as ``_unroll_standard`` / ``_unroll_biological`` compute them.

        Each area's BU stream sums its bottom-up drive, its own BU lateral input and (V4) the V1
        skip, gated by the TD input of the area above (and, biological V1, V4's TD skip); its TD
        stream sums the TD input from above, its own TD lateral input and (biological V1) the V4
        TD skip, gated by the same bottom-up drive (and, biological V4, the V1 skip). Biological
        unrolling reads every input from the previous step; standard unrolling runs the BU sweep,
        the Readout and the TD sweep within a step, so only lateral inputs and the TD gate of the
        BU sweep come from the previous step (and it has no skips in the TD sweep).
        """
        standard = self.unroll == "standard"
        sweep = 0 if standard else 1  # delay of within-sweep inputs
        names = set(self.layer_names)
        out: list[Connection] = []

        def add(src: str, dst: str, kind: str, delay: int, module: str) -> None:
            if (src == "input" or src in names) and (dst in names or dst == "readout"):
                out.append(Connection(src, dst, kind, delay, module))

        add("input", "retina_bu", "input", 0, "retina.bu_conv")
        for i, area in enumerate(self.areas[1:], start=1):
            name, below, above = AREAS[i], f"{AREAS[i - 1]}_bu", f"{AREAS[i + 1]}_td"
            bu, td = f"{name}_bu", f"{name}_td"
            # BU stream
            add(below, bu, "bottom_up", sweep, f"{name}.bu_conv")
            if area.bu_lateral is not None:
                add(bu, bu, "lateral", 1, f"{name}.bu_lateral")
            if area.td_conv is not None:
                add(above, bu, "top_down", 1, f"{name}.td_conv")
            if area.bu_skip is not None:
                add("v1_bu", bu, "skip", sweep, f"{name}.bu_skip")
            if area.td_skip is not None and not standard:
                add("v4_td", bu, "top_down", 1, f"{name}.td_skip")
            # TD stream
            if area.td_conv is not None:
                add(above, td, "top_down", sweep, f"{name}.td_conv")
            if area.td_lateral is not None:
                add(td, td, "lateral", 1, f"{name}.td_lateral")
            if area.td_skip is not None and not standard:
                add("v4_td", td, "top_down", 1, f"{name}.td_skip")
            add(below, td, "bottom_up", sweep, f"{name}.bu_conv")  # the gate
            if area.bu_skip is not None and not standard:
                add("v1_bu", td, "skip", 1, f"{name}.bu_skip")
        add("loc_bu", "readout_td", "bottom_up", 0, "readout.conv")
        add("loc_bu", "readout", "readout", 0, "readout.conv")
        return tuple(out)

    def first_steps(self, timesteps: int | None = None) -> dict[str, int]:
        """First step at which each stream depends on the image.

        Before that step a stream is absent (zeros in features) or, for TD streams, holds the
        image-independent beta of its GroupNorm, reported as computed.
        """
        trace = self._trace(self.timesteps if timesteps is None else timesteps)
        first = {}
        for name in self.layer_names:
            key = self._stream_key(name)
            first[name] = next(t for t, step in enumerate(trace) if step.get(key) == _IMAGE)
        return first

    def arrival_steps(self, onset: int, timesteps: int | None = None) -> dict[str, int]:
        """First step at which each stream depends on the frame of step ``onset``, from the same
        flag trace as [`first_steps`][blt_models.models.blt_vs.BLTVS.first_steps] with the Retina depending on that frame at step
        ``onset`` only. Standard unrolling: ``onset`` for every stream (full BU sweep, readout
        and TD sweep within a step)."""
        trace = self._trace(self.timesteps if timesteps is None else timesteps, onset)
        first = {}
        for name in self.layer_names:
            key = self._stream_key(name)
            first[name] = next(
                (t for t in range(onset, len(trace)) if trace[t].get(key) == _IMAGE), len(trace)
            )
        return first

    def present_steps(self, timesteps: int | None = None) -> dict[str, int]:
        """First step at which each stream holds a value at all (image-dependent or beta)."""
        trace = self._trace(self.timesteps if timesteps is None else timesteps)
        return {
            name: next(t for t, step in enumerate(trace) if self._stream_key(name) in step)
            for name in self.layer_names
        }

    def _multi_readout_steps(self, timesteps: int) -> list[int]:
        trace = self._trace(timesteps)
        return [t for t in range(timesteps) if ("bu", LOC) in trace[t]]

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        t_total = self.timesteps if timesteps is None else timesteps
        steps = self._multi_readout_steps(t_total)
        if self.readout_type == "single":
            return [t_total - 1] if steps else []
        return steps

    def _resolve_timesteps(self, timesteps: int | None) -> int:
        if self.readout_type == "single" and timesteps is not None and timesteps != self.timesteps:
            raise TimestepsError(
                f"readout_type='single' weighs the readouts of exactly {self.timesteps} steps "
                f"(readout_weights has {self.readout_weights.numel()} entries); got timesteps={timesteps}."
            )
        return super()._resolve_timesteps(timesteps)

    @property
    def fixed_input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)

    @property
    def head_layer(self) -> str:
        return "loc_bu"

    @property
    def num_features(self) -> int:
        return CHANNELS[LOC]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Readout of a LOC BU map ``[B, 352, h, w]`` (``forward_features``); ``pre_logits``: its
        spatial mean ``[B, 352]``. A 'single' readout weighs the logits of every readout step,
        which one map cannot give: only ``pre_logits=True`` is defined for it."""
        if self.global_pool == "":  # no pooling (reset_classifier(0, "")): the map itself
            return x
        if pre_logits or self.num_classes == 0:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.readout_type == "single":
            raise NotImplementedError(
                "readout_type='single' combines the logits of every readout step; one feature "
                "map cannot give them. Use model(x) or model.forward_timesteps(x).logits, or "
                "forward_head(..., pre_logits=True) for the pooled features."
            )
        return cast(BLTVSReadout, self.readout)(x, want_td=False)[0]

    def _check_spatial_size(self, height: int, width: int) -> None:
        s = self.image_size
        if (height, width) != (s, s):
            raise InputError(
                f"{self._display_name()} takes {s}x{s} images (image_size={s}); got {height}x{width}. "
                f"Resize and centre-crop to {s}x{s} (the reference transform: shorter side to 224, "
                "centre crop, x -> 2x - 1)."
            )

    # ----------------------------------------------------------------------------- unrolling
    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        if self.readout_type == "single":
            per_step = frozenset(self._multi_readout_steps(timesteps)) if readouts else frozenset()
        else:
            per_step = readouts
        collected: list[Tensor] = []
        run = self._unroll_standard if self.unroll == "standard" else self._unroll_biological
        for t, values, logits in run(x, timesteps, capture, per_step):
            features = {}
            for name in capture:
                value = values.get(self._stream_key(name))
                if value is not None:
                    features[name] = value
            if self.readout_type == "single":
                if logits is not None:
                    collected.append(logits)
                logits = self._combine_readouts(collected) if t in readouts else None
            yield Step(t, features, logits)

    def _combine_readouts(self, logits: list[Tensor]) -> Tensor:
        """'single' readout: softmax(readout_weights)-weighted sum over the per-step logits."""
        stacked = torch.stack(logits).permute(1, 0, 2)  # [B, R, C], as the reference lays it out
        weights = torch.softmax(self.readout_weights, dim=0).view(1, -1, 1)
        return (stacked * weights).sum(dim=1)

    def _last_needed(
        self, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> int:
        return timesteps - 1 if capture else max(readouts, default=-1)

    def _unroll_standard(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[tuple[int, dict[tuple[str, int], Tensor], Tensor | None]]:
        areas = self.areas
        last = self._last_needed(timesteps, capture, readouts)
        want_td = any(name.endswith("_td") for name in capture)
        # The Retina of frame t: computed once for a static image, once per step for a sequence.
        retina = InputStage(x, lambda frame: areas[0](bu=frame, want_td=False)[0])
        prev: dict[tuple[str, int], Tensor] = {}
        for t in range(timesteps):
            if t > last:
                yield t, {}, None
                continue
            # The TD sweep (and the readout's TD) feed only the next step's BU gates.
            td_sweep = want_td or (t < last and self.topdown_connections)
            cur: dict[tuple[str, int], Tensor] = {("bu", 0): retina(t)}
            feeds: dict[int, Tensor] = {}
            for i in range(1, READOUT):
                area = areas[i]
                feeds[i] = area.bu_conv(cur[("bu", i - 1)])
                cur[("bu", i)] = area(
                    bu_l=prev.get(("bu", i)),
                    td=prev.get(("td", i + 1)),
                    bu_skip=cur[("bu", V1)] if i == V4 else None,
                    bu_feed=feeds[i],
                    want_td=False,
                )[0]
            logits, td = self.readout(cur[("bu", LOC)], want_td=td_sweep)
            if td is not None:
                cur[("td", READOUT)] = td
                for i in reversed(range(1, READOUT)):
                    # Reference quirk: no V4 -> V1 skip here, and V4's gate is bu_conv alone.
                    td_i = areas[i](
                        td=cur[("td", i + 1)],
                        td_l=prev.get(("td", i)),
                        bu_feed=feeds[i],
                        want_bu=False,
                    )[1]
                    assert td_i is not None
                    cur[("td", i)] = td_i
            yield t, cur, logits if t in readouts else None
            prev = cur

    def _bio_needed(
        self, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> list[set[tuple[str, int]]]:
        """Streams to compute at each step: the requested ones and what they depend on."""
        trace = self._trace(timesteps)
        needed: list[set[tuple[str, int]]] = [set() for _ in range(timesteps)]
        for t in readouts:
            needed[t].add(("bu", LOC))
        for name in capture:
            key = self._stream_key(name)
            for t in range(timesteps):
                needed[t].add(key)
        for t in reversed(range(timesteps)):
            if ("td", READOUT) in needed[t]:
                needed[t].add(("bu", LOC))
            needed[t] = {key for key in needed[t] if key in trace[t]}
            if t == 0:
                continue
            for stream, i in needed[t]:
                if i in (0, READOUT):
                    continue
                deps = [("bu", i - 1), ("td", i + 1)] + ([("bu", V1)] if i == V4 else [])
                deps += [("td", V4)] if i == V1 else []
                deps.append((stream, i))  # own lateral input
                needed[t - 1].update(deps)
        return needed

    def _unroll_biological(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[tuple[int, dict[tuple[str, int], Tensor], Tensor | None]]:
        areas = self.areas
        trace = self._trace(timesteps)
        needed = self._bio_needed(timesteps, capture, readouts)
        # The Retina of frame t (read by the LGN at t + 1): computed once for a static image,
        # once per step that needs it for a sequence.
        retina = InputStage(x, lambda frame: areas[0](bu=frame, want_td=False)[0])
        prev: dict[tuple[str, int], Tensor] = {}
        for t in range(timesteps):
            cur: dict[tuple[str, int], Tensor] = {}
            if ("bu", 0) in needed[t]:
                cur[("bu", 0)] = retina(t)
            if t > 0:
                for i in range(1, READOUT):
                    want_bu, want_td = ("bu", i) in needed[t], ("td", i) in needed[t]
                    if not (want_bu or want_td):
                        continue
                    assert ("bu", i) in trace[t]  # needed streams are present streams
                    bu_out, td_out = areas[i](
                        bu=prev.get(("bu", i - 1)),
                        bu_l=prev.get(("bu", i)),
                        td=prev.get(("td", i + 1)),
                        td_l=prev.get(("td", i)),
                        bu_skip=prev.get(("bu", V1)) if i == V4 else None,
                        td_skip=prev.get(("td", V4)) if i == V1 else None,
                        want_bu=want_bu,
                        want_td=want_td,
                    )
                    if bu_out is not None:
                        cur[("bu", i)] = bu_out
                    if td_out is not None:
                        cur[("td", i)] = td_out
            logits = None
            if ("bu", LOC) in needed[t]:
                want_td = ("td", READOUT) in needed[t]
                logits, td = self.readout(cur[("bu", LOC)], want_td=want_td)
                if td is not None:
                    cur[("td", READOUT)] = td
            yield t, cur, logits if t in readouts else None
            prev = cur

    # ----------------------------------------------------------------------------- weights
    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Published (``connections.<Area>.*``) keys -> this model's; zoo keys pass through."""
        try:
            return convert_blt_vs_state_dict(state_dict)
        except KeyError:
            unknown = []
            for key in state_dict:
                try:
                    blt_vs_key_from_reference(key)
                except KeyError:
                    unknown.append(key)
            raise CheckpointMismatchError(
                "state dict in the published BLT-VS layout",
                [],
                unknown,
                [],
                "These keys are not in the reference BLT_VS model.",
            ) from None

    def get_classifier(self) -> nn.Conv2d:  # type: ignore[override]
        return cast(BLTVSReadout, self.readout).conv

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New class channels in the readout conv, its norm and LOC's top-down conv.

        The ``add_feats`` channels keep their weights (and their ``requires_grad``: a frozen
        readout stays frozen); the class channels are freshly initialised. ``global_pool`` as
        for every model (``"avg"`` or ``""``).
        """
        pool = self._resolve_global_pool(global_pool, num_classes)
        readout = cast(BLTVSReadout, self.readout)
        old_conv, old_norm = readout.conv, readout.norm_td
        k, dev, dtype = self.num_classes, old_conv.weight.device, old_conv.weight.dtype
        new = BLTVSReadout(CHANNELS[LOC], num_classes, self.add_feats, self.image_size).to(
            dev, dtype
        )
        assert new.conv.bias is not None and old_conv.bias is not None
        with torch.no_grad():
            new.conv.weight[num_classes:] = old_conv.weight[k:]
            new.conv.bias[num_classes:] = old_conv.bias[k:]
            new.norm_td.weight[num_classes:] = old_norm.weight[k:]
            new.norm_td.bias[num_classes:] = old_norm.bias[k:]
        self.readout = new
        loc = self.areas[LOC]
        if loc.td_conv is not None:
            old_td = loc.td_conv
            shape: Any = old_td  # same geometry, new input channels
            td = nn.ConvTranspose2d(
                num_classes + self.add_feats, shape.out_channels, shape.kernel_size,
                shape.stride, shape.padding, output_padding=shape.output_padding,
            ).to(dev, dtype)  # fmt: skip
            assert td.bias is not None and old_td.bias is not None
            with torch.no_grad():
                td.weight[num_classes:] = old_td.weight[k:]
                td.bias.copy_(old_td.bias)
            _keep_requires_grad(td, old_td)
            loc.td_conv = td.train(self.training)
        _keep_requires_grad(new, readout)
        new.train(self.training)
        self.num_classes = num_classes
        self.global_pool = pool

    def extra_repr(self) -> str:
        return (
            f"unroll={self.unroll!r}, timesteps={self.timesteps}, image_size={self.image_size}, "
            f"readout_type={self.readout_type!r}, lateral={self.lateral_connections}, "
            f"topdown={self.topdown_connections}, skip={self.skip_connections}"
        )


# --------------------------------------------------------------------------------- key map
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


def _keep_requires_grad(new: nn.Module, old: nn.Module) -> None:
    """``new``'s parameters take the ``requires_grad`` of ``old``'s of the same name."""
    flags = {name: p.requires_grad for name, p in old.named_parameters()}
    for name, p in new.named_parameters():
        p.requires_grad_(flags.get(name, p.requires_grad))


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
    already removed, e.g. by ``blt_models._checkpoint.extract_state_dict``). A state dict that is
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


# --------------------------------------------------------------------------------- configs
BLT_VS_HUB_ID = "novelmartis/blt_vs_model"
BLT_VS_FILES = {
    "imagenet": "blt_vs_slt_111_biounroll_0_t_6_readout_multi_dataset_imagenet_num_1.pth",
    "ecoset": "blt_vs_slt_111_biounroll_1_t_12_readout_multi_dataset_ecoset_num_1.pth",
}
BLT_VS_CITATION = (
    "Thorat, S. & Kietzmann, T. C. (2024). BLT-VS: a recurrent, columnar, model of the ventral "
    "stream. https://github.com/KietzmannLab/BLT-VS"
)


def _blt_vs_cfgs() -> list[PretrainedCfg]:
    common: dict[str, Any] = dict(
        architecture="blt_vs",
        hf_hub_id=BLT_VS_HUB_ID,
        # The Hub commit of the files is not known here (no network when this was written): the
        # revision follows the repo's main branch until it is pinned to a commit hash.
        hf_hub_revision="main",
        # To be pinned once the published files' SHA-256 digests are known.
        sha256=None,
        # Reference transform: shorter side to 224 (bilinear, antialiased), centre crop 224,
        # x -> 2x - 1, i.e. mean 0.5 and std 0.5 on [0, 1] pixels.
        input_size=(3, 224, 224),
        interpolation="bilinear",
        crop_pct=1.0,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        license="MIT (code and weights: Copyright (c) 2024 KietzmannLab)",
        source="Thorat & Kietzmann, github.com/KietzmannLab/BLT-VS; weights: "
        f"huggingface.co/{BLT_VS_HUB_ID}",
        citation=BLT_VS_CITATION,
    )
    arch = dict(add_feats=100, lateral_connections=True, topdown_connections=True,
                skip_connections=True, image_size=224, readout_type="multi")  # fmt: skip
    return [
        PretrainedCfg(
            tag="imagenet", hf_hub_filename=BLT_VS_FILES["imagenet"], num_classes=1000,
            class_names=imagenet_class_names(), timesteps=6, unroll="standard", model_args=arch,
            training_data="ImageNet-1k (ILSVRC-2012)",
            description="BLT-VS trained on ImageNet with standard unrolling: 6 steps, a readout "
            "at every step; the last readout is the model's prediction.",
            metrics={"top1_readme": 70.2, "params": 34_989_732, "gflops_all_steps_readme": 158},
            **common,
        ),
        PretrainedCfg(
            tag="ecoset", hf_hub_filename=BLT_VS_FILES["ecoset"], num_classes=565,
            # The 565 ecoset class names ship only with the reference code (ecoset.json).
            class_names=None, timesteps=12, unroll="biological", model_args=arch,
            training_data="ecoset (565 basic-level categories)",
            description="BLT-VS trained on ecoset with biological unrolling: 12 steps, readouts "
            "at steps 4-11; the last readout is the model's prediction.",
            metrics={"top1_readme": 69.8, "params": 27_332_427, "gflops_all_steps_readme": 115},
            **common,
        ),
    ]  # fmt: skip


@register_model
def blt_vs(**kwargs) -> BLTVS:
    """BLT-VS (Thorat & Kietzmann 2024): BU/TD streams of Retina ... LOC; tags imagenet, ecoset."""
    return BLTVS(**kwargs)


register_pretrained_cfgs(_blt_vs_cfgs())
