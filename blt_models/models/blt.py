"""BLT: bottom-up, lateral and top-down recurrent convnets (CCN 2024 reference family).

One configurable model, [`BLT`][blt_models.models.blt.BLT], built from a connectivity description: the reference's
model name (``bl``, ``b2lt3``...) gives the set of "shifts" (source - target layer index) and a
layer table gives channels and map sizes. Module and state-dict names follow the reference code
(``conv_input``, ``pool_input``, ``norm_{k}``, ``conv_{src}_{dst}``, ``read_out.linear``), so its
checkpoints load as they are.

Time, as in the reference code: step 0 runs the stem and layer 0; at every later step each layer sums
the edges from the *previous* step's outputs (synchronous update), layer 0 adds the stem drive
last, and ``ReLU(GroupNorm(.))`` gives the layer's output. A layer that nothing has reached yet is
absent. Names whose connectivity is bottom-up only (``blt_b``, ``blt_b_pm``,
``blt_b_top2linear``) are feed-forward: one sweep, one readout, ``timesteps`` ignored, as in the
reference.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from antialiased_cnns import BlurPool
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .._clock import ClockedModel, Connection, InputStage, Step
from .._pretrained import (
    CCN2024_CITATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGGFACE2_MEAN,
    VGGFACE2_STD,
    PretrainedCfg,
)
from .._registry import register_model, register_pretrained_cfgs
from .._validate import check_int, check_int_sequence
from ..errors import InputError, InvalidWeightsError

__all__ = ["BLT", "parse_connectivity", "BLT_NAMES", "LAYER_TABLES"]

POOLS = ("max", "avg", "blur")
UNROLLS = ("biological", "standard")

# Layer tables of the reference code: channels and map sizes at a 224 px input.
LAYER_TABLES: dict[tuple[int, str], tuple[tuple[int, ...], tuple[int, ...]]] = {
    (4, "standard"): ((64, 128, 256, 512), (56, 28, 14, 7)),
    (5, "standard"): ((64, 128, 128, 256, 512), (56, 28, 14, 7, 7)),
    (6, "standard"): ((64, 64, 128, 256, 512, 512), (56, 56, 28, 14, 7, 7)),
    (6, "top2linear"): ((64, 128, 256, 512, 1024, 2048), (56, 28, 14, 7, 1, 1)),
    (6, "pm"): ((64, 128, 256, 256, 512, 512), (112, 56, 28, 28, 14, 7)),
    (8, "standard"): ((64, 128, 128, 256, 256, 256, 256, 512), (112, 56, 28, 28, 7, 7, 7, 7)),
}

# The 27 BLT choices of the reference training script, without the "blt_" prefix.
BLT_NAMES = (
    "b", "b_pm", "b_top2linear", "b2", "b3", "bl", "bl_top2linear", "b2l", "b3l",
    "bt", "b2t", "b3t", "blt", "b2lt", "b3lt", "bt2", "b2t2", "b3t2", "blt2", "b2lt2", "b3lt2",
    "bt3", "b2t3", "b3t3", "blt3", "b2lt3", "b3lt3",
)  # fmt: skip


def parse_connectivity(name: str) -> tuple[tuple[int, ...], str]:
    """Shifts and layer-table variant of a reference model name (``"bl_top2linear"``...).

    Shifts are ``source - target`` layer offsets: -1 bottom-up from the layer below, 0 lateral,
    +1 top-down from the layer above, and so on. As in the reference, the table variant is chosen
    on the full name, the shifts on the part before the first underscore, by substring tests.
    """
    variant = "pm" if "b_pm" in name else "top2linear" if "top2linear" in name else "standard"
    stem = name.split("_", 1)[0]
    if not stem.startswith("b") or set(stem) - set("blt23"):
        raise ValueError(f"not a BLT connectivity name: {name!r} (expected e.g. 'bl', 'b2lt3')")
    shifts = [-1]
    if "l" in stem:
        shifts.append(0)
    if "b2" in stem:
        shifts.append(-2)
    if "b3" in stem:
        shifts += [-2, -3]
    if "t" in stem:
        shifts.append(1)
    if "t2" in stem:
        shifts.append(2)
    if "t3" in stem:
        shifts += [2, 3]
    return tuple(sorted(set(shifts))), variant


@dataclass(frozen=True)
class Edge:
    """A connection ``src -> dst``; ``kind`` is bottom_up, lateral or top_down."""

    src: int
    dst: int
    factor: int  # map-size ratio between the two layers (>= 1)

    @property
    def kind(self) -> str:
        return (
            "bottom_up"
            if self.src < self.dst
            else "lateral"
            if self.src == self.dst
            else "top_down"
        )

    @property
    def name(self) -> str:
        return f"conv_{self.src}_{self.dst}"


def _make_pool(pool: str, channels: int) -> tuple[str, nn.Module]:
    if pool == "max":
        return "maxpool", nn.MaxPool2d(3, 2, 1)
    if pool == "avg":
        return "avgpool", nn.AvgPool2d(3, 2, 1)
    return "blurpool", BlurPool(channels, stride=2)


def _bottom_up_module(
    edge: Edge, c_in: int, c_out: int, s_in: int, s_out: int, pool: str
) -> nn.Module:
    """Bottom-up or lateral edge, built as the reference code builds it."""
    if edge.factor == 1:
        k = 1 if (s_in == 1 or s_out == 1) else 3
        return nn.Conv2d(c_in, c_out, k, 1, k // 2)
    if s_out == 1:
        if (edge.src, edge.dst) != (3, 4) or s_in == 1:
            raise ValueError(f"unsupported edge {edge.name}: only 3->4 may map onto a 1x1 layer")
        pooled = math.ceil(s_in / 2)
        # Always max pooling, whatever `pool` says, and a Linear over the flattened pooled map.
        return nn.Sequential(
            dict_of(
                maxpool=nn.MaxPool2d(3, 2, 1),
                flatten=nn.Flatten(),
                linear=nn.Linear(c_in * pooled * pooled, c_out),
                unflatten=nn.Unflatten(1, (c_out, 1, 1)),
            )
        )
    if edge.factor not in (2, 4, 8, 16):
        raise ValueError(f"unsupported bottom-up factor {edge.factor} for edge {edge.name}")
    # The pool halves the map; the conv's stride does the rest.
    stride = edge.factor // 2
    pool_name, pool_module = _make_pool(pool, c_in)
    conv = nn.Conv2d(c_in, c_out, 2 * stride + 1, stride, stride)
    return nn.Sequential(dict_of(**{pool_name: pool_module, "conv": conv}))


def _top_down_module(edge: Edge, c_in: int, c_out: int) -> nn.Module:
    if edge.factor == 1:
        return nn.Conv2d(c_in, c_out, 3, 1, 1)
    if edge.factor not in (2, 4, 8, 16):
        raise ValueError(f"unsupported top-down factor {edge.factor} for edge {edge.name}")
    f = edge.factor
    return nn.ConvTranspose2d(c_in, c_out, f + 1, f, padding=1, output_padding=1)


def dict_of(**modules: nn.Module):
    from collections import OrderedDict

    return OrderedDict(modules)


class BLT(ClockedModel):
    """A BLT network built from a connectivity description.

    Args:
        connectivity: reference model name without ``blt_`` (``"bl"``, ``"b2lt3"``,
            ``"bl_top2linear"``, ``"b_pm"``...), or an explicit sequence of shifts.
        num_layers: 4, 5, 6 (default) or 8; channels and map sizes from the reference table.
        pool: ``"max"``, ``"avg"`` (``"average"`` accepted) or ``"blur"``: the stem pool and the
            pool in front of strided bottom-up convs.
        num_classes: width of the linear readout (0: none; logits are then the pooled features).
        in_chans: input channels.
        timesteps: default number of clock steps (the reference's ``times``).
        unroll: ``"biological"`` (reference; layer k first active at step f(k)) or ``"standard"``
            (full bottom-up sweep inside every step, a readout at every step).
        channels, sizes: override the layer table (sizes are map sizes at ``nominal_size``).
        nominal_size: input size at which ``sizes`` hold (224 for the reference tables).

    Shapes: input ``[B, in_chans, H, W]``, or a sequence ``[T, B, in_chans, H, W]`` whose frame
    ``t`` is the stem input of step ``t`` (feed-forward names: one sweep per frame); logits
    ``[B, num_classes]``.
    """

    classifier_name = "read_out.linear"
    first_conv_name = "conv_input"
    supports_grad_checkpointing = True
    supports_sequences = True

    def __init__(
        self,
        connectivity: str | Sequence[int] = "bl",
        num_layers: int = 6,
        pool: str = "max",
        num_classes: int = 1000,
        in_chans: int = 3,
        timesteps: int = 10,
        unroll: str = "biological",
        channels: Sequence[int] | None = None,
        sizes: Sequence[int] | None = None,
        nominal_size: int = 224,
    ) -> None:
        super().__init__()
        # Values that would build a wrong or broken network are refused here, by name (the
        # factory adds where they came from); 4.7 layers are not 4, a 0 px map divides by zero.
        num_layers = check_int(num_layers, "num_layers", None, 1, 64)
        nominal_size = check_int(nominal_size, "nominal_size", None, 1, 65_536)
        if channels is not None:
            channels = check_int_sequence(channels, "channels", None, 1, 65_536)
        if sizes is not None:
            sizes = check_int_sequence(sizes, "sizes", None, 1, 65_536)
        if isinstance(connectivity, str):
            shifts, variant = parse_connectivity(connectivity)
        else:
            shifts, variant = tuple(sorted(set(connectivity))), "standard"
        pool = "avg" if pool == "average" else pool
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS} (or 'average'); got {pool!r}")
        if unroll not in UNROLLS:
            raise ValueError(f"unroll must be one of {UNROLLS}; got {unroll!r}")
        if channels is None or sizes is None:
            key = (num_layers, variant)
            if key not in LAYER_TABLES:
                known = sorted({n for n, _ in LAYER_TABLES})
                raise ValueError(
                    f"no layer table for num_layers={num_layers} with the {variant!r} variant "
                    f"(tables: num_layers in {known}; 'top2linear' and 'pm' exist for 6 layers)."
                )
            table_channels, table_sizes = LAYER_TABLES[key]
            channels = channels or table_channels
            sizes = sizes or table_sizes
        if len(channels) != len(sizes):
            raise ValueError("channels and sizes must have one entry per layer")
        self.connectivity = connectivity if isinstance(connectivity, str) else "custom"
        self.shifts = shifts
        self.channels = tuple(int(c) for c in channels)
        self.sizes = tuple(int(s) for s in sizes)
        self.num_layers = len(self.channels)
        self.pool = pool
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.nominal_size = nominal_size
        self.feedforward = set(shifts) == {-1}
        self.unroll = "standard" if self.feedforward else unroll
        self.timesteps = 1 if self.feedforward else timesteps
        num_layers = self.num_layers

        # Edges: conn[i, j] = 1 iff i - j is a shift (rows source, columns target).
        self.edges: list[Edge] = []
        for i in range(num_layers):
            for j in range(num_layers):
                if i - j in shifts:
                    si, sj = self.sizes[i], self.sizes[j]
                    factor = max(si, sj) // min(si, sj)
                    self.edges.append(Edge(i, j, factor))
        self.sources: list[list[Edge]] = [
            [e for e in self.edges if e.dst == k] for k in range(num_layers)
        ]

        # Modules in the reference registration order (state-dict order).
        c0, s0 = self.channels[0], self.sizes[0]
        if s0 * 4 == nominal_size:
            self.conv_input = nn.Conv2d(in_chans, c0, 7, 2, 3)
        elif s0 * 2 == nominal_size:
            self.conv_input = nn.Conv2d(in_chans, c0, 5, 1, 2)
        else:
            raise ValueError(
                f"layer 0 size must be nominal_size/4 or /2; got {s0} at {nominal_size}"
            )
        self.pool_input = _make_pool(pool, c0)[1]
        for i in range(num_layers):
            self.add_module(f"norm_{i}", nn.GroupNorm(32, self.channels[i]))
            for edge in (e for e in self.edges if e.src == i):
                ci, cj = self.channels[edge.src], self.channels[edge.dst]
                if edge.kind == "top_down":
                    if self.sizes[edge.src] == 1 and self.sizes[edge.dst] != 1:
                        raise ValueError(
                            f"unsupported top-down edge {edge.name} out of a 1x1 layer"
                        )
                    module = _top_down_module(edge, ci, cj)
                else:
                    module = _bottom_up_module(
                        edge, ci, cj, self.sizes[edge.src], self.sizes[edge.dst], pool
                    )
                self.add_module(edge.name, module)
        self.read_out = nn.Sequential(
            dict_of(
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                linear=self._make_classifier(self.channels[-1], num_classes),
            )
        )
        self._first = self._first_active_steps()

    # ----------------------------------------------------------------------------- clock protocol
    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(f"layer{k}" for k in range(self.num_layers))

    @property
    def layer_aliases(self) -> dict[str, str]:  # type: ignore[override]
        return {f"output_{k}": f"layer{k}" for k in range(self.num_layers)}

    def _remove_layers_after(self, last: int) -> None:
        """A BLT of layers ``0 .. last``: their edges stay, the later layers' norms and every
        edge into or out of them go (``prune_intermediate_layers`` checked that none feeds a
        kept layer)."""
        n = last + 1
        for k in range(n, self.num_layers):
            delattr(self, f"norm_{k}")
        for edge in self.edges:
            if max(edge.src, edge.dst) >= n:
                delattr(self, edge.name)
        self.edges = [e for e in self.edges if max(e.src, e.dst) < n]
        self.sources = [[e for e in self.edges if e.dst == k] for k in range(n)]
        self.channels, self.sizes = self.channels[:n], self.sizes[:n]
        self.num_layers = n
        self._first = self._first_active_steps()

    def _first_active_steps(self) -> list[int]:
        """f(0) = 0, f(k) = 1 + min over bottom-up sources f(src), as in the reference code."""
        first = [0] * self.num_layers
        for k in range(1, self.num_layers):
            first[k] = 1 + min(first[e.src] for e in self.sources[k] if e.src < k)
        return first

    def first_steps(self, timesteps: int | None = None) -> dict[str, int]:
        if self.unroll == "standard":
            return dict.fromkeys(self.layer_names, 0)
        return dict(zip(self.layer_names, self._first, strict=True))

    def connections(self) -> tuple[Connection, ...]:
        """The image into layer 0 (stem) and every edge ``conv_{src}_{dst}``: one step late in
        the biological unrolling; in the standard one, bottom-up edges act within the step."""
        names, standard = self.layer_names, self.unroll == "standard"
        out = [Connection("input", names[0], "input", 0, "conv_input")]
        for e in self.edges:
            kind = "skip" if e.src < e.dst - 1 else e.kind
            delay = 0 if standard and e.src < e.dst else 1
            out.append(Connection(names[e.src], names[e.dst], kind, delay, e.name))
        return (*out, self._readout_connection(names[-1]))

    def arrival_steps(self, onset: int, timesteps: int | None = None) -> dict[str, int]:
        """Frame ``onset`` enters layer 0 with the stem drive of step ``onset`` and travels as the
        image does: layer ``k`` at ``onset + first_step(k)`` (biological; ``onset`` with the
        full sweep of standard unrolling)."""
        return {name: onset + f for name, f in self.first_steps(timesteps).items()}

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        t_total = self.timesteps if timesteps is None or self.feedforward else timesteps
        start = 0 if self.unroll == "standard" else self._first[-1]
        return list(range(start, t_total))

    def _resolve_timesteps(self, timesteps: int | None) -> int:
        # Feed-forward names ignore `timesteps`, as the reference ignores `times` for them.
        return 1 if self.feedforward else super()._resolve_timesteps(timesteps)

    @property
    def min_input_size(self) -> int:
        """Smallest square input side: the total stride down to the smallest non-1x1 map; with
        blur pooling also large enough that every blur-pooled map has 3 px (reflection padding);
        with a Linear over a fixed pooled map (``top2linear``) large enough to give that map."""
        key = (self.pool, self.nominal_size, tuple(self.sizes))
        cached = self.__dict__.get("_min_input_size")
        if cached is not None and cached[0] == key:
            return int(cached[1])
        stride = self.nominal_size // min(s for s in self.sizes if s > 1)
        side = stride
        while self.pool == "blur" and min(self._blur_pooled_sides(side, side)) < 3:
            side += stride
        while self._linear_misfit(side, side) is not None and side < 64 * self.nominal_size:
            side += 1
        self.__dict__["_min_input_size"] = (key, side)
        return side

    def _linear_misfit(self, height: int, width: int) -> str | None:
        """Why a Linear edge over a fixed pooled map cannot take this input size, or None."""
        sizes = self.layer_sizes(height, width)
        for edge in self.edges:
            if self.sizes[edge.dst] == 1 and self.sizes[edge.src] != 1:
                pooled = tuple(math.ceil(s / 2) for s in sizes[edge.src])
                nominal = math.ceil(self.sizes[edge.src] / 2)
                if pooled != (nominal, nominal):
                    return (
                        f"edge {edge.name} is a Linear over a fixed {nominal}x{nominal} pooled "
                        f"map, which needs an input of about {self.nominal_size}x"
                        f"{self.nominal_size} (layer {edge.src} must be {2 * nominal - 1} or "
                        f"{2 * nominal} px; got {sizes[edge.src]})"
                    )
        return None

    def _blur_pooled_sides(self, height: int, width: int) -> list[int]:
        """Sides of the maps that go through a pool (the stem's and strided bottom-up edges')."""
        stem_side = [
            math.ceil(s / 2) if self.sizes[0] * 4 == self.nominal_size else s
            for s in (height, width)
        ]
        sizes = self.layer_sizes(height, width)
        sides = list(stem_side)
        for edge in self.edges:
            if edge.kind == "bottom_up" and edge.factor > 1 and self.sizes[edge.dst] != 1:
                sides += list(sizes[edge.src])
        return sides

    def layer_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Map size of every layer for an input of ``height x width``."""
        out = []
        for side in (height, width):
            sides = []
            s = math.ceil(side / 2) if self.sizes[0] * 4 == self.nominal_size else side
            s = math.ceil(s / 2)
            sides.append(s)
            for k in range(1, self.num_layers):
                if self.sizes[k] == 1 and self.sizes[k - 1] != 1:
                    s = 1
                else:
                    s = math.ceil(s / (self.sizes[k - 1] // self.sizes[k]))
                sides.append(s)
            out.append(sides)
        return list(zip(out[0], out[1], strict=True))

    def _check_spatial_size(self, height: int, width: int) -> None:
        name = self._display_name()
        stride = self.nominal_size // min(s for s in self.sizes if s > 1)
        too_small = height < stride or width < stride
        if not too_small and self.pool == "blur":
            too_small = min(self._blur_pooled_sides(height, width)) < 3
        if too_small:
            need = self.min_input_size
            why = (
                "with blur pooling, whose reflection padding needs maps of 3 px or more"
                if self.pool == "blur"
                else f"its deepest layer sees the input at stride {stride}"
            )
            raise InputError(
                f"image {height}x{width} is too small for {name}: it needs at least {need}x{need} "
                f"({why}). Resize the images, e.g. to {self.nominal_size}x{self.nominal_size}."
            )
        sizes = self.layer_sizes(height, width)
        for edge in self.edges:
            if edge.kind == "top_down" and edge.factor > 1:
                got = tuple(edge.factor * s for s in sizes[edge.src])
                if got != sizes[edge.dst]:
                    raise InputError(
                        f"image {height}x{width} does not fit {name}: top-down edge {edge.name} "
                        f"maps layer {edge.src} ({sizes[edge.src]}) to {got}, but layer {edge.dst} "
                        f"is {sizes[edge.dst]}. Use a height and width divisible by "
                        f"{stride} "
                        f"(e.g. {self.nominal_size})."
                    )
        misfit = self._linear_misfit(height, width)
        if misfit is not None:
            need = self.min_input_size
            raise InputError(
                f"image {height}x{width} does not fit {name}: {misfit}. Its smallest input is "
                f"{need}x{need}; resize the images, e.g. to {self.nominal_size}x{self.nominal_size}."
            )

    def validate_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Blur checkpoints carry the fixed BlurPool filters (``*.filt``); they must be unchanged."""
        own = self.state_dict()
        for key, value in state_dict.items():
            if key.endswith("filt") and not torch.allclose(value.float(), own[key].float()):
                raise InvalidWeightsError(
                    f"{key} is not the fixed [1,3,3,1]x[1,3,3,1]/64 blur filter of antialiased-cnns; "
                    "the checkpoint was not written by a BLT model with pool='blur'."
                )

    # ----------------------------------------------------------------------------- unrolling
    def _schedule(
        self, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> list[list[bool]]:
        """``needed[t][k]``: whether layer k must be computed at step t.

        Only work that reaches a requested output runs: readouts at ``readouts`` and every active
        step of the captured layers; everything else is pruned by walking the dependencies back
        in time. This never changes a computed value.
        """
        L = self.num_layers
        standard = self.unroll == "standard"
        active = [[standard or t >= self._first[k] for k in range(L)] for t in range(timesteps)]
        needed = [[False] * L for _ in range(timesteps)]
        for t in readouts:
            needed[t][L - 1] = True
        for k, name in enumerate(self.layer_names):
            if name in capture:
                for t in range(timesteps):
                    needed[t][k] = active[t][k]
        for t in reversed(range(timesteps)):
            for k in reversed(range(L)):
                if not needed[t][k]:
                    continue
                for edge in self.sources[k]:
                    if standard and edge.src < k:
                        needed[t][edge.src] = True
                    elif t > 0 and active[t - 1][edge.src]:
                        needed[t - 1][edge.src] = True
        return needed

    @staticmethod
    def _post(norm: nn.GroupNorm, z: Tensor) -> Tensor:
        """``ReLU(GroupNorm(z))``, the output of a layer from its summed drive."""
        if z.dtype == norm.weight.dtype:
            return F.relu(norm(z), inplace=True)
        # Low-precision activations under autocast: autocast would run GroupNorm in fp32 and cast
        # every map twice; normalising in the activation dtype (fp32 accumulation inside the
        # kernel) keeps the whole step in bf16.
        with torch.autocast(z.device.type, enabled=False):
            out = F.group_norm(
                z, norm.num_groups, norm.weight.to(z.dtype), norm.bias.to(z.dtype), norm.eps
            )
        return F.relu(out, inplace=True)

    def _last_readers(self) -> dict[int, list[int]]:
        """``{k: [j, ...]}``: the previous step's outputs ``j`` that no layer after ``k`` reads
        within a step (for the unrolling set now)."""
        last: dict[int, int] = {}
        for k in range(self.num_layers):
            for e in self.sources[k]:
                if not (self.unroll == "standard" and e.src < k):  # reads prev[e.src]
                    last[e.src] = max(last.get(e.src, -1), k)
        readers: dict[int, list[int]] = {}
        for j, k in last.items():
            readers.setdefault(k, []).append(j)
        return readers

    def _step(
        self, needed: list[bool], prev: list[Tensor | None], drive: Tensor | None,
        release: dict[int, list[int]] | None = None,
    ) -> list[Tensor | None]:  # fmt: skip
        """Outputs of every needed layer at one step, from the previous step's outputs."""
        standard = self.unroll == "standard"
        cur: list[Tensor | None] = [None] * self.num_layers
        # ``release`` (inference only, see _unroll): drop each previous output after its last
        # reader in this step (up to one step of all layers less at the peak).
        for k in range(self.num_layers):
            for j in (release or {}).get(k - 1, ()):
                prev[j] = None
            if not needed[k]:
                continue
            z: Tensor | None = None
            for edge in self.sources[k]:
                src = cur[edge.src] if (standard and edge.src < k) else prev[edge.src]
                if src is None:
                    continue
                term = getattr(self, edge.name)(src)
                z = term if z is None else z + term
            if k == 0:
                assert drive is not None  # the schedule computes the drive where layer 0 runs
                z = drive if z is None else z + drive
            if z is not None:
                cur[k] = self._post(getattr(self, f"norm_{k}"), z)
        return cur

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        needed = self._schedule(timesteps, capture, readouts)
        names = self.layer_names
        checkpointed = self.grad_checkpointing and torch.is_grad_enabled()
        # Layer-0 drive of frame t: computed once for a static image, once per step for a sequence.
        stem = InputStage(x, lambda frame: self.pool_input(self.conv_input(frame)))
        prev: list[Tensor | None] = [None] * self.num_layers
        # Never under autograd: checkpointing recomputes a step from the same list.
        release = self._last_readers() if not torch.is_grad_enabled() else None
        for t in range(timesteps):
            drive = stem(t) if needed[t][0] else None
            if checkpointed:  # keep only the step outputs; recompute the step in backward
                cur = checkpoint(self._step, needed[t], prev, drive, use_reentrant=False)
            else:
                cur = self._step(needed[t], prev, drive, release)
            features = {
                n: cur[k] for k, n in enumerate(names) if n in capture and cur[k] is not None
            }
            logits = None
            if t in readouts and cur[-1] is not None:
                logits = self.read_out(cur[-1])
            yield Step(t, features, logits)  # type: ignore[arg-type]
            del features, logits  # the consumer has them; _step may release prev's entries
            prev = cur

    def extra_repr(self) -> str:
        return (
            f"connectivity={self.connectivity!r}, shifts={self.shifts}, unroll={self.unroll!r}, "
            f"timesteps={self.timesteps}, pool={self.pool!r}"
        )


# --------------------------------------------------------------------------------- configs
def _ccn_cfgs(arch: str) -> list[PretrainedCfg]:
    """Training setups of the CCN 2024 runs. Their weights are not public: these records carry
    preprocessing and timing so that a checkpoint from those runs can be used correctly."""
    common: dict[str, Any] = dict(
        architecture=arch,
        license="GPL-3.0 (reference code); weights not published",
        source="github.com/Hosseinadeli/BLT_recurrent_models (main.py)",
        citation=CCN2024_CITATION,
        timesteps=10,
        unroll="biological",
    )
    return [
        PretrainedCfg(tag="imagenet", num_classes=1000, training_data="ImageNet-1k",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, **common),
        PretrainedCfg(tag="vggface2", num_classes=3890, training_data="VGGFace2 (3890 identities)",
                      mean=VGGFACE2_MEAN, std=VGGFACE2_STD, **common),
        PretrainedCfg(tag="imagenet_vggface2", num_classes=2420,
                      training_data="ImageNet classes 0-499 + VGGFace2 1920 identities (labels 500-2419); "
                      "each part normalised with its own statistics",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, **common),
    ]  # fmt: skip


def _build_blt(name: str, **kwargs) -> BLT:
    return BLT(connectivity=name, **kwargs)


def _entrypoint_signature() -> inspect.Signature:
    """BLT's constructor arguments minus ``connectivity`` (fixed by the name), keyword-only, so
    that the zoo can record every argument of a built model (config.json of a saved model)."""
    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for name, p in inspect.signature(BLT.__init__).parameters.items()
        if name not in ("self", "connectivity")
    ]
    return inspect.Signature(params, return_annotation=BLT)


def _register_all() -> None:
    cfgs: list[PretrainedCfg] = []
    signature = _entrypoint_signature()
    for short in BLT_NAMES:
        arch = f"blt_{short}"

        def entrypoint(_short: str = short, **kwargs) -> BLT:
            return _build_blt(_short, **kwargs)

        entrypoint.__name__ = arch
        entrypoint.__qualname__ = arch
        entrypoint.__doc__ = f"BLT ``{short}`` (reference ``--model {arch}``)."
        entrypoint.__signature__ = signature  # type: ignore[attr-defined]
        register_model(entrypoint)
        cfgs += _ccn_cfgs(arch)
    # The reference's recorded training runs used 15 steps for bl_top2linear.
    for cfg in cfgs:
        if cfg.architecture == "blt_bl_top2linear":
            cfg.timesteps = 15
    register_pretrained_cfgs(cfgs)


_register_all()


# --------------------------------------------------------------------------------- blt_bl_tiny
# A small grayscale BLT trained by the recipe in examples/train/ (issue 5). Kept in its own block.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
TINY_ARGS = dict(
    num_layers=4, channels=(32, 32, 64, 64), sizes=(16, 16, 8, 4), nominal_size=32, pool="max"
)


@register_model
def blt_bl_tiny(**kwargs) -> BLT:
    """BLT ``bl`` (bottom-up + lateral), 4 narrow layers (32-32-64-64 channels), grayscale 32 px
    input (maps 16-16-8-4), 10 classes, 8 steps; readouts at steps 3..7 (biological unrolling)."""
    args: dict = dict(TINY_ARGS, num_classes=10, in_chans=1, timesteps=8)
    args.update(kwargs)
    return BLT(connectivity="bl", **args)


register_pretrained_cfgs([
    PretrainedCfg(
        architecture="blt_bl_tiny",
        tag="fashion_mnist",
        file="blt_bl_tiny.fashion_mnist.safetensors",
        sha256="a3074dccbceb09d01b0d5b86a9b8aa5bf5cd73fbad85ac75b65fada28b4e15be",
        input_size=(1, 32, 32),
        interpolation="bilinear",
        crop_pct=1.0,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        num_classes=10,
        class_names=FASHION_MNIST_CLASSES,
        timesteps=8,
        unroll="biological",
        license="Apache-2.0 (weights); Fashion-MNIST is MIT-licensed (Zalando Research)",
        source="blt-models examples/train/train.py (see the model card blt_bl_tiny.fashion_mnist.md)",
        training_data="Fashion-MNIST, 60k training images (Debian package dataset-fashion-mnist)",
        description=(
            "Preprocessing: 28x28 grayscale -> resize to 32x32 (bilinear) -> scale to [0, 1] -> "
            "normalise with mean/std. Readouts at clock steps 3..7. Trained in 20 min on 2 CPU "
            "processes (torchrun, DDP); command and history in the model card "
            "blt_models/weights/blt_bl_tiny.fashion_mnist.md."
        ),
        # Top-1 / top-5 (%) on the 10,000 Fashion-MNIST test images at each readout step.
        metrics={
            "dataset": "Fashion-MNIST test (10,000 images)",
            "readout_steps": [3, 4, 5, 6, 7],
            "top1_per_step": [86.01, 88.55, 90.45, 90.93, 90.83],
            "top5_per_step": [99.69, 99.85, 99.83, 99.82, 99.82],
            "top1": 90.83,
            "top5": 99.82,
        },
    ),
])  # fmt: skip
