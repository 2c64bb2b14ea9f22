"""One clock for every model: the unroller behind ``forward`` and ``forward_timesteps``.

A family implements a small protocol ([`ClockedModel`][blt_models.ClockedModel]): its layer names, when each layer
first has activity, which steps carry a readout, and a generator ``_unroll`` that yields one
``Step`` per step of the clock. Everything users see about time (stacking readouts, capturing
features on the global clock, validating inputs and timesteps) lives here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import MAX_TIMESTEPS, as_int
from ._weights_hash import removing_weights
from .errors import (
    ConfigValueError,
    InputError,
    InvalidArgumentError,
    StepOutOfRangeError,
    TimestepsError,
    UnknownLayerError,
    UnsupportedError,
)

__all__ = [
    "CONNECTION_KINDS",
    "ClockedModel",
    "Connection",
    "InputError",
    "InputStage",
    "Step",
    "TimestepOutput",
    "TimestepsError",
]

#: Kinds of [`Connection`][blt_models.Connection]: from the image, from a lower layer (``skip``: past at least one
#: layer), within a layer (its own previous output), from a higher layer, into the readout.
CONNECTION_KINDS = ("input", "bottom_up", "skip", "lateral", "top_down", "readout")


@dataclass(frozen=True)
class Connection:
    """One connection of a clocked model: ``dst`` at step ``t`` reads ``src`` at ``t - delay``.

    Attributes:
        src: a name of ``model.layer_names``, or ``"input"`` for the image.
        dst: a name of ``model.layer_names``, or ``"readout"`` for the classifier (kind
            ``readout``: the layer whose output gives the logits).
        kind: one of ``CONNECTION_KINDS``.
        delay: steps between the source's output and its use (0: the same step, as bottom-up
            connections of a feed-forward sweep; 1: the previous step).
        module: dotted name of the submodule that carries it (``""``: none, e.g. a gate).
    """

    src: str
    dst: str
    kind: str
    delay: int = 1
    module: str = ""


@dataclass
class TimestepOutput:
    """Result of [`ClockedModel.forward_timesteps`][blt_models.ClockedModel.forward_timesteps].

    Attributes:
        logits: ``[R, B, num_classes]``, one row per step that has a readout, in time order.
        steps: ``LongTensor [R]``, the clock step of each row of ``logits`` (on the input's
            device, like every tensor of the output).
        features: ``{layer: Tensor [S, B, C, H, W]}`` for the requested layers, indexed by the
            kept steps ``feature_steps`` (by default every clock step ``0 .. T-1``; a view of
            batch-major storage, ``.contiguous()`` makes it time-major). Steps at which a layer
            is absent (nothing has reached it yet, as
            in BLT's biological unrolling) hold zeros, which is what no activity means after a
            ReLU. A family whose layers compute something image-independent before the image
            arrives (CORnet-RT's bias response) reports those values as computed.
        first_step: ``{layer: int}``, the first step at which each layer carries information
            about the image.
        timesteps: ``T``, the number of steps the clock ran.
        feature_steps: ``LongTensor [S]``, the clock step of each index of dimension 0 of
            ``features`` (all ``0 .. T-1`` unless ``forward_timesteps(steps=...)`` kept fewer).
        logits_are_features: True for a model without classifier (``num_classes=0``, e.g.
            after ``prune_intermediate_layers`` or in ``features_only``): ``logits`` then holds
            the pooled features ``[R, B, num_features]``, not class scores.
    """

    logits: Tensor
    steps: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    first_step: dict[str, int] = field(default_factory=dict)
    timesteps: int = 0
    feature_steps: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    logits_are_features: bool = False

    def __repr__(self) -> str:  # shapes, not values: print(out) must not dump the tensors
        feats = ", ".join(
            f"{name}: {list(t.shape)} from step {self.first_step.get(name, '?')}"
            for name, t in self.features.items()
        )
        return (
            f"TimestepOutput(timesteps={self.timesteps}, steps={self.steps.tolist()}, "
            f"logits={list(self.logits.shape)} {str(self.logits.dtype).replace('torch.', '')}, "
            f"features={{{feats}}})"
        )


@dataclass
class Step:
    """What a family's ``_unroll`` yields for clock step ``t``.

    ``features`` holds the captured layers that are active at ``t`` (canonical names);
    ``logits`` is the readout if one was requested at ``t``, else None.
    """

    t: int
    features: dict[str, Tensor]
    logits: Tensor | None = None


class InputStage:
    """A family's input stage on the clock: ``stage(t)`` is ``fn(frame at step t)``.

    ``x`` is a static image batch ``[B, C, H, W]`` (the frame of every step: ``fn`` runs once,
    at the first step that asks, and its result is reused) or a time-major sequence
    ``[T, B, C, H, W]`` (``fn`` runs on ``x[t]`` at each step ``t`` that asks, at most once per
    step). Families call it only at the steps whose input-stage output is needed.
    """

    def __init__(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> None:
        self.x, self.fn = x, fn
        self.static = x.ndim == 4
        self._t: int | None = None
        self._value: Tensor | None = None

    def __call__(self, t: int) -> Tensor:
        if self._value is None or (not self.static and t != self._t):
            self._value = self.fn(self.x if self.static else self.x[t])
            self._t = t
        return self._value


class ClockedModel(nn.Module):
    """Base class of every zoo model: ``forward`` and ``forward_timesteps`` on one clock.

    Subclasses set ``in_chans``, ``num_classes``, ``timesteps`` (default number of steps) and
    implement ``layer_names``, ``first_steps``, ``readout_steps``, ``_unroll`` and optionally
    ``layer_aliases`` and ``_check_spatial_size``.
    """

    in_chans: int
    num_classes: int
    timesteps: int
    pretrained_cfg: object | None = None
    #: Dotted names of the classifier Linear and the first convolution (for head / input changes).
    classifier_name: str = ""
    first_conv_name: str = ""
    #: Reference-code names accepted in place of ``layer_names`` (e.g. ``output_3``).
    layer_aliases: dict[str, str] = {}
    #: One sweep, one readout. Given a sequence ``[T, B, C, H, W]``, the clock runs one sweep per
    #: frame: step ``t`` is the sweep of frame ``t``, with its own readout.
    feedforward: bool = False
    #: Recurrent families whose input stage takes frame ``t`` at step ``t`` (``InputStage``).
    supports_sequences: bool = False
    #: Steps between the head layer's map and the readout that pools it: 0, the readout at step
    #: ``t`` reads `head_layer` at ``t``; 1 (ConvRNNs: one step per edge), at ``t - 1``.
    readout_delay: int = 0

    def __init__(self) -> None:
        super().__init__()
        # Foreign key layouts load with plain ``load_state_dict`` too (``module.`` prefixes, the
        # family's ``convert_state_dict``: e.g. published BLT-VS or reference ResNet keys).
        self._register_load_state_dict_pre_hook(self._accept_foreign_layouts)

    def _accept_foreign_layouts(
        self, state_dict: dict[str, Tensor], prefix: str, *args: object
    ) -> None:
        from timm.models import clean_state_dict

        keys = [k for k in state_dict if k.startswith(prefix)]
        local = self.convert_state_dict(
            clean_state_dict({k[len(prefix) :]: state_dict[k] for k in keys})
        )
        if list(local) != [k[len(prefix) :] for k in keys]:
            for k in keys:
                del state_dict[k]
            state_dict.update({prefix + k: v for k, v in local.items()})

    # ----------------------------------------------------------------------------- protocol
    @property
    def layer_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def first_steps(self, timesteps: int | None = None) -> dict[str, int]:
        """``{layer: first clock step with activity}`` for a run of ``timesteps`` steps."""
        if self.feedforward:
            return dict.fromkeys(self.layer_names, 0)
        raise NotImplementedError

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        """Clock steps that carry a readout in a run of ``timesteps`` steps."""
        if self.feedforward:
            return [0]
        raise NotImplementedError

    def arrival_steps(self, onset: int, timesteps: int | None = None) -> dict[str, int]:
        """``{layer: first clock step at which the input frame of step onset can change it}``.

        The delays of the family's update rule for a time-varying input ``[T, B, C, H, W]``:
        nothing at a step before ``onset`` depends on frame ``onset`` (causality), and layer
        ``k`` first does at ``arrival_steps(onset)[k]``. A static image is the same frame at every
        step, so [`first_steps`][blt_models.ClockedModel.first_steps] is the minimum over onsets (for BLT and CORnet:
        ``arrival_steps(0)``). A value ``>= timesteps`` means the frame does not reach the layer
        within the run. Feed-forward models: ``onset`` for every layer (a frame only changes its
        own step).
        """
        if self.feedforward:
            return dict.fromkeys(self.layer_names, onset)
        raise NotImplementedError

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        raise NotImplementedError

    def _check_spatial_size(self, height: int, width: int) -> None:
        """Raise [`InputError`][blt_models.errors.InputError] if the architecture cannot take this image size."""

    # Optional weight hooks (defaults: nothing to do). Every loader calls them, so a family that
    # has a foreign key layout or values to refuse overrides them, and nothing probes for them.
    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A foreign key layout (the family's reference code) -> this model's keys.

        Called on every load after wrapper prefixes (``module.``, ``_orig_mod.``) are removed;
        the default keeps the keys. Must return this model's own layout unchanged.
        """
        return dict(state_dict)

    def validate_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Refuse a state dict that fits in keys and shapes but not in meaning (raise
        [`InvalidWeightsError`][blt_models.errors.InvalidWeightsError]); the default accepts it."""

    def connections(self) -> tuple[Connection, ...]:
        """Every connection between layers, with its kind and delay in clock steps.

        What diagrams ([`blt_models.analysis.model_graph`][blt_models.analysis.model_graph]) draw. The default is a
        feed-forward chain: the image into the first layer, each layer into the next at the same
        step. Recurrent families override it with what their ``_unroll`` really computes.
        """
        names = self.layer_names
        chain = [Connection("input", names[0], "input", 0)]
        chain += [
            Connection(a, b, "bottom_up", 0) for a, b in zip(names[:-1], names[1:], strict=True)
        ]
        return (*chain, self._readout_connection(names[-1]))

    def _readout_connection(self, layer: str) -> Connection:
        head = self.classifier_name.rsplit(".", 1)[0] if "." in self.classifier_name else ""
        return Connection(layer, "readout", "readout", 0, head or self.classifier_name)

    # ----------------------------------------------------------------------------- public
    def resolve_layer(self, name: str) -> str:
        """Canonical layer name for ``name`` (a layer name or a reference alias).

        Raises [`UnknownLayerError`][blt_models.errors.UnknownLayerError] (also a ``KeyError``) naming close matches."""
        if name in self.layer_names:
            return name
        if name in self.layer_aliases:
            return self.layer_aliases[name]
        import difflib

        known = list(self.layer_names) + list(self.layer_aliases)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownLayerError(
            f"{type(self).__name__} has no layer {name!r}.{hint} "
            f"Layers: {', '.join(self.layer_names)}."
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` of the readout at the last step of the default clock.

        ``x``: images ``[B, C, H, W]``, or a time-major sequence ``[T, B, C, H, W]`` (frame ``t``
        is the input at step ``t``; ``T`` sets the number of steps). With ``num_classes=0`` (or
        after ``reset_classifier(0)``) the readout has no classifier and this returns the pooled
        features ``[B, num_features]`` instead, as in timm.
        """
        if self.global_pool == "":  # no pooling, no classifier (timm): the unpooled map
            return self.forward_features(x)
        x, timesteps = self._prepare_input(x, None)
        self._refuse_unseen_hooks()
        last = self._readout_steps_for(x, timesteps)[-1]
        logits = None
        for step in self._run_clock(x, timesteps, frozenset(), frozenset({last})):
            if step.logits is not None:
                logits = step.logits
        assert logits is not None
        return logits

    def forward_timesteps(
        self,
        x: Tensor,
        timesteps: int | None = None,
        layers: Sequence[str] | str | None = None,
        *,
        steps: int | Sequence[int] | slice | str | None = None,
        buffers: dict[str, Tensor] | None = None,
    ) -> TimestepOutput:
        """Run the clock and return every readout and the requested layers at the kept steps.

        Args:
            x: images ``[B, C, H, W]``, floating point, normalised as ``pretrained_cfg`` says
                (the same image at every step), or a time-major sequence ``[T, B, C, H, W]``:
                frame ``t`` is the input at clock step ``t`` (see ``blt_models.stimuli``). A 5-D
                tensor is always read as time-major, never as ``[B, T, ...]``.
            timesteps: number of clock steps ``T``; None uses ``model.timesteps`` (or, for a
                sequence, its length; a given value must equal the length).
            layers: names from ``model.layer_names`` (reference aliases accepted), ``"all"``, or
                None for no features.
            steps: clock steps whose features are kept (see [`resolve_steps`][blt_models.ClockedModel.resolve_steps]); None keeps
                all ``0 .. T-1``. Every step still runs (later steps need the earlier ones); only
                the kept ones are stored.
            buffers: optional ``{canonical layer: Tensor [B, S, C, H, W]}`` to write the kept
                steps into (any dtype / device; values are converted while copied), e.g. the
                rows of a preallocated result. Layers without a buffer get a fresh one.

        Returns:
            [`TimestepOutput`][blt_models.TimestepOutput] with ``logits [R, B, K]``, ``steps [R]``, ``features
            {layer: [S, B, C, H, W]}`` (keys as requested; a view of batch-major ``[B, S, ...]``
            storage), ``feature_steps [S]`` and ``first_step``.

        Raises:
            UnknownLayerError: a layer the model does not have (also a ``KeyError``).
            StepOutOfRangeError: a step outside the clock.
        """
        x, timesteps = self._prepare_input(x, timesteps)
        if layers is None:
            requested: list[str] = []
        elif isinstance(layers, str):
            requested = list(self.layer_names) if layers == "all" else [layers]
        elif isinstance(layers, (list, tuple)):
            requested = list(layers)
        else:
            raise UnknownLayerError(
                f"layers must be layer names (a string, a list of strings, 'all' or None); got "
                f"{layers!r} ({type(layers).__name__}). Layers: {', '.join(self.layer_names)}."
            )
        canonical = {name: self._canonical_layer(name) for name in requested}
        capture = frozenset(canonical.values())
        readouts = self._readout_steps_for(x, timesteps)
        kept = self.resolve_steps(steps, timesteps)
        slot_of = {t: i for i, t in enumerate(kept)}
        n_kept = len(kept)

        # Stored batch-major ([B, S, ...]) and returned as an [S, B, ...] view: per-image
        # consumers (extraction to [N, S, ...] stores) then read contiguous memory.
        out_buffers: dict[str, Tensor] = dict(buffers or {})
        written: dict[str, set[int]] = {name: set() for name in capture}
        logits: list[Tensor] = []
        for step in self._run_clock(x, timesteps, capture, frozenset(readouts)):
            slot = slot_of.get(step.t)
            if slot is not None:
                for name, value in step.features.items():
                    buffer = out_buffers.get(name)
                    if buffer is None:
                        buffer = value.new_empty((value.shape[0], n_kept, *value.shape[1:]))
                        out_buffers[name] = buffer
                    buffer[:, slot].copy_(value)
                    written[name].add(slot)
            if step.logits is not None:
                logits.append(step.logits)
            del step  # lets the family free this step's maps while it computes the next
        for name in capture:  # kept steps at which the layer was absent: zeros
            missing = sorted(set(range(n_kept)) - written[name])
            if missing and name not in out_buffers:  # never active: shape from the probe
                shape = self.layer_shapes(int(x.shape[-2]), int(x.shape[-1]))[name]
                out_buffers[name] = x.new_empty((x.shape[0], n_kept, *shape))
            for i in missing:
                out_buffers[name][:, i].zero_()

        first = self.first_steps(timesteps)
        first_step = dict(first)
        features = {}
        for name, layer in canonical.items():
            features[name] = out_buffers[layer].transpose(0, 1)
            first_step[name] = first[layer]
        return TimestepOutput(
            logits=torch.stack(logits),
            steps=torch.tensor(readouts, dtype=torch.long, device=x.device),
            features=features,
            first_step=first_step,
            timesteps=timesteps,
            feature_steps=torch.tensor(kept, dtype=torch.long, device=x.device),
            logits_are_features=self.num_classes == 0,
        )

    # ----------------------------------------------------------------------------- resolution
    def resolve_timesteps(self, timesteps: int | None = None) -> int:
        """The clock length of a run asked for with ``timesteps`` (None: ``model.timesteps``).

        Feed-forward models give 1. Raises [`TimestepsError`][blt_models.errors.TimestepsError] for a value that is not a
        positive integer or gives no readout.
        """
        return self._resolve_timesteps(timesteps)

    def resolve_layers(self, layers: str | Sequence[str] | None) -> list[str]:
        """Canonical names of ``layers`` (a name, names, reference aliases, ``"all"``), in the
        order given, without repeats; None gives ``[]``.

        Raises:
            UnknownLayerError: a name the model does not have (close matches listed), a
                non-string, or an empty list.
        """
        if layers is None:
            return []
        if isinstance(layers, str):
            return list(self.layer_names) if layers == "all" else [self._canonical_layer(layers)]
        if not isinstance(layers, (list, tuple)):
            raise UnknownLayerError(
                f"layers must be layer names (a string, a list of strings or 'all'); got "
                f"{layers!r} ({type(layers).__name__}). Layers: {', '.join(self.layer_names)}."
            )
        if not layers:
            raise UnknownLayerError("no layers requested (pass layer names or 'all')")
        return list(dict.fromkeys(self._canonical_layer(name) for name in layers))

    def resolve_steps(
        self, steps: int | Sequence[int] | slice | str | None, timesteps: int
    ) -> list[int]:
        """Sorted clock steps selected by ``steps`` in a run of ``timesteps`` steps.

        ``steps``: None or ``"all"`` (every step), an int, a sequence of ints (negative counts
        from the end) or a slice over ``0 .. timesteps-1``.

        Raises:
            StepOutOfRangeError: a step outside the clock, a non-integer, or no step at all.
        """
        if steps is None or (isinstance(steps, str) and steps == "all"):
            return list(range(timesteps))
        if isinstance(steps, slice):
            selected = list(range(timesteps))[steps]
            if not selected:
                raise StepOutOfRangeError(
                    f"steps={steps} selects no steps of a {timesteps}-step clock (0 .. "
                    f"{timesteps - 1}); pass e.g. slice(0, {timesteps}) or a list of steps"
                )
            return sorted(selected)
        if getattr(steps, "ndim", None) == 0 and hasattr(steps, "item"):  # 0-d tensor / array
            steps = steps.item()  # type: ignore[union-attr]
        items = [steps] if _is_int(steps) else steps
        if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
            raise StepOutOfRangeError(
                f"steps must be integers, a list of integers or a slice; got {steps!r}"
            )
        out: set[int] = set()
        for s in list(items):
            s = s.item() if isinstance(s, Tensor) and s.ndim == 0 else s
            if not _is_int(s):
                raise StepOutOfRangeError(
                    f"steps must be integers, a list of integers or a slice; got {s!r} "
                    f"({type(s).__name__})"
                )
            t = int(s) + timesteps if s < 0 else int(s)
            if not 0 <= t < timesteps:
                raise StepOutOfRangeError(
                    f"step {int(s)} is outside the clock: the model runs {timesteps} steps "
                    f"(0 .. {timesteps - 1}; negative steps count from the end). Pass "
                    "timesteps= (CLI: --timesteps) to run a longer clock."
                )
            out.add(t)
        if not out:
            raise StepOutOfRangeError("no steps requested (pass step indices, a slice or None)")
        return sorted(out)

    def _canonical_layer(self, name: object) -> str:
        if not isinstance(name, str):
            raise UnknownLayerError(
                f"layer names must be strings; got {name!r} ({type(name).__name__}). "
                f"Layers: {', '.join(self.layer_names)}."
            )
        return self.resolve_layer(name)

    def layer_shapes(self, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """Per-image output shape (``(C, H, W)``) of every layer for ``height x width`` inputs.

        One dry run of a blank image in eval mode without gradients, for just enough steps that
        every layer is active; cached per input size. [`feature_info`][blt_models.ClockedModel.feature_info] and extraction
        read their shapes from here.
        """
        key = (self.in_chans, height, width, self.layer_names)
        cache = self.__dict__.setdefault("_layer_shapes_cache", {})
        if key not in cache:
            param = next(iter(self.parameters()), None)
            device = param.device if param is not None else torch.device("cpu")
            dtype = (
                param.dtype if param is not None and param.is_floating_point() else torch.float32
            )
            # Shapes do not depend on the number of steps: run just until every layer is active.
            timesteps = self._probe_timesteps()
            x = torch.zeros(1, self.in_chans, height, width, device=device, dtype=dtype)
            self._check_input(x)  # an image size the architecture cannot take: InputError
            # Each submodule's own mode is restored (frozen BatchNorms of a training model stay
            # eval), and eval mode keeps the probe from updating batch-norm statistics.
            modes = {m: m.training for m in self.modules()}
            self.eval()
            shapes: dict[str, tuple[int, ...]] = {}
            try:
                with torch.no_grad():
                    for step in self._unroll(
                        x, timesteps, frozenset(self.layer_names), frozenset()
                    ):
                        for name, value in step.features.items():
                            shapes.setdefault(name, tuple(int(d) for d in value.shape[1:]))
            finally:
                for m, mode in modes.items():
                    m.training = mode
            cache[key] = {name: shapes[name] for name in self.layer_names}
        return dict(cache[key])

    #: Families that can recompute each step in the backward pass set this to True.
    supports_grad_checkpointing: bool = False
    grad_checkpointing: bool = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in training: keep only each step's outputs and recompute the
        step in the backward pass (timm's method name). Results are unchanged."""
        if enable and not self.supports_grad_checkpointing:
            raise NotImplementedError(
                f"{type(self).__name__} does not support gradient checkpointing"
            )
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The readout's classifier (``nn.Identity`` when ``num_classes == 0``)."""
        return self.get_submodule(self.classifier_name)

    @staticmethod
    def _make_classifier(in_features: int, num_classes: int) -> nn.Module:
        """timm's convention: ``num_classes=0`` means no classifier, the pooled features pass."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(
                f"num_classes must be an integer >= 0 (0: no classifier, pooled features); "
                f"got {num_classes!r}"
            )
        return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def num_features(self) -> int:
        """Width of the pooled features the classifier reads (timm's ``num_features``): the
        channels of [`head_layer`][blt_models.ClockedModel.head_layer] at the last step, what ``forward_head(pre_logits=True)``
        returns."""
        head = self.get_classifier()
        if isinstance(head, nn.Linear):
            return head.in_features
        if "_num_features" not in self.__dict__:  # built without a classifier (num_classes=0)
            info = {d["module"]: d for d in self.feature_info}
            self.__dict__["_num_features"] = int(info[self.head_layer]["num_chs"])
        return int(self.__dict__["_num_features"])

    #: timm's global pooling of the readout: ``"avg"`` (the readout's own spatial mean) or ``""``
    #: (none: with ``num_classes=0`` the model returns the unpooled map of [`head_layer`][blt_models.ClockedModel.head_layer]).
    global_pool: str = "avg"

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the readout's classifier by a freshly initialised one with ``num_classes``
        outputs; ``0`` removes it, so that ``forward`` returns pooled features
        ``[B, num_features]`` (timm's convention).

        ``global_pool``: None keeps the current pooling (a new classifier after ``""`` brings
        back ``"avg"``: it reads pooled features); ``"avg"`` pools the map (the readout's
        spatial mean); ``""`` removes the pooling too (only with ``num_classes=0``): ``forward``
        then returns the unpooled map ``[B, num_features, H, W]``. The new classifier takes the
        device, dtype and train / eval mode of the model.
        """
        pool = self._resolve_global_pool(global_pool, num_classes)
        in_features = self.num_features
        old = self.get_classifier()
        ref = next(iter(old.parameters()), None)
        if ref is None:
            ref = next(iter(self.parameters()))
        new = self._make_classifier(in_features, num_classes).to(ref.device, ref.dtype)
        new.train(self.training)
        self.__dict__["_num_features"] = in_features
        self.set_submodule(self.classifier_name, new)
        self.num_classes = num_classes
        self.global_pool = pool

    def _resolve_global_pool(self, global_pool: str | None, num_classes: int) -> str:
        """The pooling after ``reset_classifier(num_classes, global_pool)``, checked."""
        pool = self.global_pool if global_pool is None else global_pool
        if global_pool is None and pool == "" and num_classes > 0:
            pool = "avg"  # a classifier reads pooled features: the pooling comes back with it
        self._check_global_pool(pool, num_classes)
        return pool

    def _check_global_pool(self, pool: object, num_classes: int) -> None:
        if pool not in ("avg", ""):
            raise ConfigValueError(
                f"global_pool = {pool!r}: {type(self).__name__}'s readout pools with a spatial "
                "mean; pass 'avg' (the default) or '' (no pooling, with num_classes=0)."
            )
        if pool == "" and num_classes != 0:
            raise ConfigValueError(
                f"global_pool='' (no pooling) leaves a map [B, C, H, W] that a classifier of "
                f"{num_classes} classes cannot read; pass num_classes=0 with it."
            )

    @property
    def head_hidden_size(self) -> int:
        """timm's ``head_hidden_size``: width of the pre-logits features (``forward_head(...,
        pre_logits=True)``), which for every family is [`num_features`][blt_models.ClockedModel.num_features]."""
        return self.num_features

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's ``default_cfg``: the pretrained config as a plain dict, with timm's
        architecture keys computed from this model (``input_size``, ``fixed_input_size``,
        ``min_input_size``, ``pool_size``, ``first_conv``, ``classifier``; see
        ``timm_cfg_keys``)."""
        from ._pretrained import PretrainedCfg

        cfg = self.pretrained_cfg
        if not isinstance(cfg, PretrainedCfg):
            cfg = PretrainedCfg(architecture=type(self).__name__, num_classes=self.num_classes)
        out = cfg.to_dict()
        out.update(self.timm_cfg_keys(tuple(cfg.input_size)))
        for key in ("input_size", "min_input_size", "pool_size", "mean", "std"):
            if isinstance(out.get(key), list):
                out[key] = tuple(out[key])
        return out

    @default_cfg.setter
    def default_cfg(self, value: Mapping[str, Any]) -> None:
        """timm code assigns ``model.default_cfg``: it replaces ``pretrained_cfg``."""
        from ._pretrained import PretrainedCfg

        self.pretrained_cfg = (
            value if isinstance(value, PretrainedCfg) else PretrainedCfg.from_dict(dict(value))
        )

    def timm_cfg_keys(
        self, input_size: Sequence[int] | None = None, pool_size: bool = True
    ) -> dict[str, Any]:
        """timm's architecture keys of a pretrained config, derived from this model.

        Args:
            input_size: ``(C, H, W)`` the config names (default: ``pretrained_cfg.input_size``,
                else 224 px); a family that takes one size only uses its own.

        Returns:
            ``{"input_size": (C, H, W), "fixed_input_size": bool, "min_input_size": (C, s, s)
            or None, "pool_size": (h, w), "first_conv": str, "classifier": str}``:
            ``min_input_size`` is the smallest square image the model takes (None where it takes
            one size only), ``pool_size`` the map of [`head_layer`][blt_models.ClockedModel.head_layer] at ``input_size``, from
            the dry run of [`layer_shapes`][blt_models.ClockedModel.layer_shapes] (cached per size; ``pool_size=False`` leaves it
            None and skips the run: ``create_model`` records the other keys in
            ``pretrained_cfg``, and ``default_cfg`` adds ``pool_size`` when read).
        """
        fixed = self.fixed_input_size
        size = tuple(
            fixed
            or input_size
            or getattr(self.pretrained_cfg, "input_size", None)
            or (self.in_chans, 224, 224)
        )
        size = (self.in_chans, int(size[-2]), int(size[-1]))
        side = None if fixed else self.smallest_input_side(max(size[1:]))
        pool = self.layer_shapes(size[1], size[2])[self.head_layer][-2:] if pool_size else None
        return {
            "input_size": size,
            "fixed_input_size": fixed is not None,
            "min_input_size": None if side is None else (self.in_chans, side, side),
            "pool_size": None if pool is None else tuple(int(d) for d in pool) or (1, 1),
            "first_conv": self.first_conv_name,
            "classifier": self.classifier_name,
        }

    def smallest_input_side(self, limit: int = 4096) -> int | None:
        """Side of the smallest square image (``s x s``, ``1 <= s <= limit``) the architecture
        takes, by its own size check (``_check_spatial_size``); None if none up to ``limit``."""
        for side in range(1, limit + 1):
            try:
                self._check_spatial_size(side, side)
            except InputError:
                continue
            return side
        return None

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script(model)`` calls this first: refuse with the working alternatives."""
        raise UnsupportedError(
            f"{self._display_name()} cannot be compiled by TorchScript (torch.jit.script): its "
            "clock is a Python loop whose schedule depends on the input size, the number of "
            "steps and the requested layers. Use torch.export.export(model, (x,)) for a graph, "
            "torch.compile(model) for speed, or torch.jit.trace(model, x) for a fixed input "
            "size and clock."
        )

    @property
    def head_layer(self) -> str:
        """The layer the readout reads (at each readout step): what ``forward_features`` returns."""
        return self.layer_names[-1]

    def last_steps(self, timesteps: int | None = None) -> dict[str, int]:
        """``{layer: last clock step at which it is computed}`` in a run of ``timesteps`` steps
        (the final step for every layer, except in families whose areas finish early, such as
        CORnet-S). ``forward_intermediates`` reads each layer at this step."""
        t = self._resolve_timesteps(timesteps)
        return dict.fromkeys(self.layer_names, t - 1)

    def forward_features(self, x: Tensor) -> Tensor:
        """timm's ``forward_features``: the unpooled map ``[B, C, H, W]`` of [`head_layer`][blt_models.ClockedModel.head_layer]
        that the last readout of the run pools (the default clock, or a sequence's ``T`` steps):
        its map at the last readout step, or `readout_delay` steps before it."""
        out = self.forward_timesteps(x, layers=[self.head_layer])
        # The step the run really ended its readouts on: a sequence sets its own clock length.
        last = (
            self._readout_steps_for(x, out.timesteps)[-1] - self.readout_delay
        )  # no .item(): meta tensors too
        return out.features[self.head_layer][last]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """timm's ``forward_head``: readout of a [`forward_features`][blt_models.ClockedModel.forward_features] map.

        ``forward_head(forward_features(x))`` equals ``forward(x)``; ``pre_logits=True`` returns
        the pooled features ``[B, num_features]``.
        """
        if self.global_pool == "":  # no pooling (timm's reset_classifier(0, "")): the map
            return x
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) if x.ndim == 4 else x
        return pooled if pre_logits else self.get_classifier()(pooled)

    # ----------------------------------------------------------------------------- checks
    @property
    def min_timesteps(self) -> int:
        """Smallest number of steps that gives at least one readout."""
        t = 1
        while not self.readout_steps(t):
            t += 1
            if t > 10_000:  # pragma: no cover - a family bug, not a user error
                raise RuntimeError("no readout within 10000 steps")
        return t

    def _resolve_timesteps(self, timesteps: int | None) -> int:
        if self.feedforward:
            return self._fixed_timesteps(
                timesteps, 1, "it is feed-forward (one sweep, one readout)."
            )
        t = self.timesteps if timesteps is None else timesteps
        steps = as_int(t)  # numpy ints and 0-d integer tensors are integers too
        if steps is None or not 1 <= steps <= MAX_TIMESTEPS:
            raise TimestepsError(
                f"timesteps must be a positive integer of at most {MAX_TIMESTEPS:,}; got {t!r}"
            )
        t = steps
        if not self.readout_steps(t):
            need = self.min_timesteps
            raise TimestepsError(
                f"{self._display_name()} needs timesteps >= {need} for a readout (its readout layer "
                f"first has activity at step {need - 1}); got timesteps={t}."
            )
        return t

    def _fixed_timesteps(self, timesteps: Any, fixed: int, why: str) -> int:
        """``fixed`` for None or an integer equal to it (numpy / 0-d tensor too); else a
        [`TimestepsError`][blt_models.errors.TimestepsError] that says ``why`` the clock cannot change."""
        if timesteps is None or as_int(timesteps) == fixed:
            return fixed
        raise TimestepsError(
            f"{self._display_name()} runs on exactly {fixed} clock step{'s' * (fixed != 1)}: {why} "
            f"Got timesteps={timesteps!r}."
        )

    def _display_name(self) -> str:
        cfg = self.pretrained_cfg
        return getattr(cfg, "architecture", "") or type(self).__name__

    #: Layers whose same-named submodule the family calls exactly once per ``forward``, with the
    #: layer's output: forward hooks on them (timm's ``FeatureHookNet``) see the layer.
    hookable_layers: frozenset[str] = frozenset()

    def _refuse_unseen_hooks(self) -> None:
        """Hooks on a layer-named submodule that the clock never calls would stay silent; a hook
        on another submodule of a recurrent model sees it at every step, often with a partial
        value (one edge of a sum): a ``PartialHookWarning`` says so."""
        if not self.feedforward:
            self._warn_partial_hooks()
        for name in self.layer_names:
            module = self._modules.get(name)
            if module is None or name in self.hookable_layers:
                continue
            if module._forward_hooks or module._forward_pre_hooks:
                raise RuntimeError(
                    f"a forward hook is registered on {type(self).__name__}.{name}, but the clock "
                    f"does not call that module once with the layer's output (it runs its parts "
                    "step by step), so the hook would see nothing or a partial value. Read "
                    "layers with model.forward_timesteps(x, layers=[...]) (every step), "
                    "model.forward_intermediates(x) or timm's FeatureGetterNet "
                    "(timm.create_model-style features_only, feature_cls='getter'), not "
                    "FeatureHookNet or hooks."
                )

    def _warn_partial_hooks(self) -> None:
        import warnings

        from .errors import PartialHookWarning

        for name, module in self.named_modules():
            if not name or name in self.layer_names:  # layer-named ones: refused below
                continue
            if module._forward_hooks or module._forward_pre_hooks:
                warnings.warn(
                    f"a forward hook is registered on {type(self).__name__}.{name}, a part of a "
                    "recurrent model that its clock calls at every step, often with one term of "
                    "a layer's sum: a tool that keeps the last call (thingsvision's "
                    "get_extractor_from_model, Brain-Score's PytorchWrapper) gets one step of a "
                    "partial value. Read layers with model.forward_timesteps(x, layers=[...]), "
                    "or with blt_models.integrations.thingsvision.get_extractor(model) "
                    "(addresses 'layer3@t7' / 'layer3').",
                    PartialHookWarning,
                    stacklevel=4,
                )
                return

    def _check_input(self, x: Tensor) -> None:
        """Check a static batch ``[B, C, H, W]`` or a sequence ``[T, B, C, H, W]``."""
        if isinstance(x, torch.fx.Proxy):
            raise InputError(
                f"{self._display_name()} cannot be traced symbolically by torch.fx (torchvision's "
                "create_feature_extractor, fx-based tools): its clock is a Python loop whose "
                "schedule depends on the input size and the requested layers. Use "
                "model.forward_timesteps(x, layers=[...]) for features at every step, "
                "model.forward_intermediates(x) or timm's FeatureGetterNet for the last step, "
                "or torch.export.export(model, (x,)) for a graph."
            )
        if not isinstance(x, Tensor):
            raise InputError(
                f"expected a torch.Tensor of images [B, C, H, W] (or a sequence [T, B, C, H, W]); "
                f"got {type(x).__name__}"
            )
        if x.ndim not in (4, 5):
            fix = " Add a batch dimension with x.unsqueeze(0)." if x.ndim == 3 else ""
            raise InputError(
                f"expected a 4-D image batch [B, C, H, W] or a 5-D time-major sequence "
                f"[T, B, C, H, W]; got a {x.ndim}-D tensor of shape {tuple(x.shape)}.{fix}"
            )
        sequence = x.ndim == 5
        what = "each frame [B, C, H, W] of the sequence" if sequence else "the image batch"
        if sequence and (x.shape[0] == 0 or x.shape[1] == 0):
            raise InputError(
                f"the sequence [T, B, C, H, W] has shape {tuple(x.shape)}: it needs at least one "
                "frame and one image."
            )
        weight = next(self.parameters(), None)
        on_meta = weight is not None and weight.device.type == "meta"
        if weight is not None and (x.device.type == "meta") != on_meta:
            # A model built on the meta device takes meta inputs (shape inference); else not.
            raise InputError(
                f"the input is on the meta device (shape {tuple(x.shape)}, no values) but the "
                f"model's weights are on {weight.device}: pass the images themselves."
                if not on_meta
                else f"the model is on the meta device (no weights) and the input on "
                f"{x.device}: load weights first (model.to_empty(device='cpu') and "
                "load_state_dict, or create_model(..., pretrained=True))."
            )
        if not x.is_floating_point():
            raise InputError(
                f"expected a floating-point image tensor; got dtype {x.dtype}. Convert with "
                "x.float() / 255 and normalise with the model's mean/std "
                "(blt_models.create_transform(model) does both for PIL images)."
            )
        c = int(x.shape[-3])
        if c != self.in_chans:
            if c == 1:
                convert = f"repeat the grayscale channel: x.expand(-1, {self.in_chans}, -1, -1)"
            elif self.in_chans == 1:
                convert = "convert the images to grayscale, e.g. x.mean(-3, keepdim=True)"
            else:
                convert = "convert the images to the model's channels"
            layout = (
                " A 5-D input is read as time-major [T, B, C, H, W], never as [B, T, C, H, W]: "
                "for batch-major data pass x.transpose(0, 1)."
                if sequence
                else ""
            )
            raise InputError(
                f"{self._display_name()} expects {self.in_chans} input channel(s); {what} has {c} "
                f"(input shape {tuple(x.shape)}). Create the model with in_chans={c} (pretrained "
                f"first-layer weights are adapted), or {convert}.{layout}"
            )
        param = next((p for p in self.parameters() if p.is_floating_point()), None)
        if (
            param is not None
            and x.dtype != param.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            dtype = str(param.dtype).replace("torch.", "")
            raise InputError(
                f"input dtype {str(x.dtype).replace('torch.', '')} does not match the model's "
                f"weights ({dtype}). Convert the input (x.to({param.dtype})), the model "
                f"(model.to({x.dtype})), or run under torch.autocast."
            )
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if height < 1 or width < 1:
            raise InputError(
                f"{self._display_name()} got an image of {height}x{width} pixels (input shape "
                f"{tuple(x.shape)}); images need at least one pixel in each dimension."
            )
        self._check_spatial_size(height, width)

    def _prepare_input(self, x: Tensor, timesteps: int | None) -> tuple[Tensor, int]:
        """Checked input and number of steps: ``T`` of a sequence, else ``timesteps``/default.

        A sequence whose frames are all one tensor (stride 0 along ``T``, as from
        ``image.expand(T, ...)``) is the static image and runs on the static path.
        """
        if not (isinstance(x, Tensor) and x.ndim == 5):
            t = self._resolve_timesteps(timesteps)
            self._check_input(x)
            return x, t
        self._check_input(x)
        length = int(x.shape[0])
        if timesteps is not None:
            given = as_int(timesteps)  # numpy ints and 0-d integer tensors are integers too
            if given is None or not 1 <= given <= MAX_TIMESTEPS:
                raise TimestepsError(
                    f"timesteps must be a positive integer of at most {MAX_TIMESTEPS:,}; "
                    f"got {timesteps!r}"
                )
            if given != length:
                raise TimestepsError(
                    f"the sequence has T={length} frames (shape {tuple(x.shape)}, read as "
                    f"[T, B, C, H, W]) but timesteps={timesteps}. A sequence sets the number of "
                    "steps: pass timesteps=None, or give as many frames as steps."
                )
        if self.feedforward:
            return x, length
        if not self.supports_sequences:
            raise InputError(
                f"{self._display_name()} does not take input sequences [T, B, C, H, W]: "
                f"{self._sequence_unsupported_reason()}"
            )
        try:
            t = self._resolve_timesteps(length)
        except TimestepsError as err:
            raise TimestepsError(
                f"{err} The 5-D input of shape {tuple(x.shape)} was read as time-major "
                f"[T, B, C, H, W]: T={length} frames of B={int(x.shape[1])} images. For "
                "batch-major data [B, T, C, H, W] pass x.transpose(0, 1)."
            ) from None
        if x.shape[0] > 1 and x.stride(0) == 0:
            return x[0], t
        return x, t

    def _sequence_unsupported_reason(self) -> str:
        return "its input stage reads one static image. Pass images [B, C, H, W]."

    def _readout_steps_for(self, x: Tensor, timesteps: int) -> list[int]:
        if self.feedforward and x.ndim == 5:
            return list(range(timesteps))
        return self.readout_steps(timesteps)

    def _run_clock(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        """The family's ``_unroll``; a sequence on a feed-forward model: one sweep per frame."""
        if not (self.feedforward and x.ndim == 5):
            yield from self._unroll(x, timesteps, capture, readouts)
            return
        for t in range(timesteps):
            if t not in readouts and not capture:  # nothing asked of this frame's sweep
                yield Step(t, {})
                continue
            wanted = frozenset({0}) if t in readouts else frozenset()
            for step in self._unroll(x[t], 1, capture, wanted):
                yield Step(t, step.features, step.logits)

    # ----------------------------------------------------------------------------- timm compatibility
    @property
    def fixed_input_size(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` for families that take exactly one image size (BLT-VS), else None."""
        return None

    @property
    def feature_info(self) -> list[dict]:
        """timm-style feature description: one dict per layer of ``layer_names``, in order.

        Each dict has ``num_chs`` (channels), ``reduction`` (input side / map side at the
        pretrained input size), ``module`` (the layer name, as ``forward_timesteps`` takes it;
        not a submodule path) and ``first_step``. Derived once by a dry run of a single blank
        image at the pretrained input size (``pretrained_cfg.input_size``, else 224 px) in eval
        mode without gradients, then cached; every family gets it without declaring anything.
        """
        override = self.__dict__.get("_feature_info_override")
        if override is not None:
            return [dict(d) for d in override]
        cfg_size = tuple(
            self.fixed_input_size
            or getattr(self.pretrained_cfg, "input_size", None)
            or (self.in_chans, 224, 224)
        )
        key = (self.in_chans, *cfg_size[-2:], self.layer_names)
        cached = self.__dict__.get("_feature_info_cache")
        if cached is not None and cached[0] == key:
            return [dict(d) for d in cached[1]]
        try:
            info = self._probe_feature_info(int(cfg_size[-2]), int(cfg_size[-1]))
        except AttributeError as err:  # nn.Module.__getattr__ would hide the real cause
            raise RuntimeError(f"could not derive feature_info: {err}") from err
        self.__dict__["_feature_info_cache"] = (key, info)
        return [dict(d) for d in info]

    @feature_info.setter
    def feature_info(self, value: list[dict]) -> None:
        """A family may declare its feature_info explicitly instead of the derived one."""
        self.__dict__["_feature_info_override"] = [dict(d) for d in value]

    def _probe_timesteps(self) -> int:
        """Fewest steps at which every layer is active; the default clock if the model refuses
        other lengths (fixed-clock families: CORnet-S, BLT-VS with a 'single' readout)."""
        default = self._resolve_timesteps(None)
        need = max(self.min_timesteps, max(self.first_steps(default).values()) + 1)
        if need >= default:
            return default
        try:
            return self._resolve_timesteps(need)
        except TimestepsError:
            return default

    def _probe_feature_info(self, height: int, width: int) -> list[dict]:
        shapes = self.layer_shapes(height, width)
        first = self.first_steps(self._probe_timesteps())  # the probe's clock (layer_shapes)
        info = []
        for name in self.layer_names:
            shape = shapes[name]  # (C, H, W)
            map_h = int(shape[-2]) if len(shape) >= 3 else 1
            info.append(
                dict(
                    num_chs=int(shape[0]),
                    reduction=max(1, round(height / max(map_h, 1))),
                    module=name,
                    first_step=int(first[name]),
                )
            )
        return info

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        timesteps: int | None = None,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ``forward_intermediates`` on the final clock step.

        Feature ``i`` is ``layer_names[i]`` (as in [`feature_info`][blt_models.ClockedModel.feature_info]) at the last step at which
        it is computed ([`last_steps`][blt_models.ClockedModel.last_steps]: the final step of a run of ``timesteps`` steps, default
        ``model.timesteps``, except for areas that finish early, as in CORnet-S); the final
        features are [`head_layer`][blt_models.ClockedModel.head_layer] at the last readout step (what the readout pools, as
        [`forward_features`][blt_models.ClockedModel.forward_features]). ``indices``: None for all layers, an int n
        for the last n, or a sequence of (possibly negative) indices, as timm's
        ``feature_take_indices``. ``norm`` is accepted and ignored (no family has a final norm);
        ``stop_early`` is accepted (recurrent layers feed each other, so the whole clock runs);
        ``output_fmt`` is ``"NCHW"`` or ``"NHWC"``. Per-step features: [`forward_timesteps`][blt_models.ClockedModel.forward_timesteps].

        Returns:
            ``(final [B, C, H, W], [intermediates])``, or only the list with
            ``intermediates_only=True``.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC'; got {output_fmt!r}")
        take = self._take_indices(indices)
        names = [self.layer_names[i] for i in take]
        head = self.head_layer
        capture = list(dict.fromkeys(names if intermediates_only else [*names, head]))
        out = self.forward_timesteps(x, timesteps=timesteps, layers=capture)
        at = self.last_steps(out.timesteps)

        def fmt(t: Tensor) -> Tensor:
            return t.permute(0, 2, 3, 1) if output_fmt == "NHWC" and t.ndim == 4 else t

        intermediates = [fmt(out.features[n][at[n]]) for n in names]
        if intermediates_only:
            return intermediates
        final = out.features[head][self.readout_steps(out.timesteps)[-1] - self.readout_delay]
        return fmt(final), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """timm's ``prune_intermediate_layers``: keep the layers up to the last of ``indices``,
        remove the ones after it, and return the absolute indices kept.

        Afterwards ``forward_features`` ends at that layer (its map at the last step) and
        ``forward_intermediates(x, indices=kept)`` gives what it gave before pruning.
        ``prune_head=True`` also removes the classifier and the pooling (timm's
        ``reset_classifier(0, "")``: ``forward`` returns the unpooled map of the last kept
        layer); removing layers needs it, as the classifier reads the last layer.
        ``prune_norm`` is accepted (no family has a final norm).

        Raises:
            UnsupportedError: layers after the last index feed a kept one back (top-down or
                ConvRNN feedback: removing them would change the features asked for), or the
                family cannot remove layers; the message names the alternatives that keep every
                layer (``forward_intermediates(x, indices=...)``,
                ``create_model(..., features_only=True, out_indices=...)``).
        """
        take = self._take_indices(indices)
        last = max(take)
        if last < len(self.layer_names) - 1:
            why = self._why_layers_must_stay(last)
            if why is not None:
                raise UnsupportedError(
                    f"{self._display_name()} cannot prune the layers after "
                    f"{self.layer_names[last]}: {why}. Read the layers of the whole model "
                    f"instead: model.forward_intermediates(x, indices={take}), or "
                    f"create_model(..., features_only=True, out_indices={take})."
                )
            if not prune_head:
                raise UnsupportedError(
                    f"prune_head=False would keep the classifier of {self.head_layer}, which "
                    f"pruning to {self.layer_names[last]} removes; pass prune_head=True."
                )
        # Only removes weights: published ones stay published in feature files' provenance.
        with removing_weights(self):
            if prune_head:
                self.reset_classifier(0, "")
            if last < len(self.layer_names) - 1:
                self._remove_layers_after(last)
                self.__dict__.pop("_num_features", None)  # now the width of the last kept layer
        return take

    def _why_layers_must_stay(self, last: int) -> str | None:
        """Why the layers after ``layer_names[last]`` cannot be removed, or None if they can:
        a connection from one of them into a kept layer, or a family without
        ``_remove_layers_after``."""
        kept = set(self.layer_names[: last + 1])
        later = set(self.layer_names[last + 1 :])
        back = [c for c in self.connections() if c.src in later and c.dst in kept]
        if back:
            edges = ", ".join(f"{c.src} -> {c.dst} ({c.kind.replace('_', '-')})" for c in back)
            return f"they feed kept layers back ({edges}), so removing them changes those layers"
        if type(self)._remove_layers_after is ClockedModel._remove_layers_after:
            return f"{type(self).__name__} does not remove layers"
        return None

    def _remove_layers_after(self, last: int) -> None:
        """Remove ``layer_names[last + 1:]`` and their submodules; afterwards the model is the
        same network ending at ``layer_names[last]`` (a family that can, overrides this)."""
        raise UnsupportedError(f"{type(self).__name__} does not remove layers")

    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """Absolute layer indices for timm's ``indices`` argument (timm's own resolution)."""
        from timm.models._features import feature_take_indices

        given: Any = indices
        sequence = isinstance(given, (list, tuple, range))
        ok = given is None or _is_int(given) or (sequence and all(map(_is_int, given)))
        if not ok or (sequence and len(given) == 0) or (_is_int(given) and given < 1):
            raise InvalidArgumentError(
                f"indices must be None (every layer), an int n >= 1 (the last n layers) or a "
                f"non-empty list of layer positions (ints, negative from the end); got "
                f"{indices!r}. Layers: "
                f"{', '.join(f'{i}: {n}' for i, n in enumerate(self.layer_names))}."
            )
        if given is not None:
            given = int(given) if _is_int(given) else [int(i) for i in given]
        try:
            return list(feature_take_indices(len(self.layer_names), given)[0])
        except AssertionError as err:  # timm asserts; users get an IndexError
            raise IndexError(str(err)) from None


def _is_int(value: Any) -> bool:
    """A Python or numpy integer that is not a bool."""
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
