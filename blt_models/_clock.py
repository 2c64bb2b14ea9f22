"""One clock for every model: the unroller behind ``forward`` and ``forward_timesteps``.

A family implements a small protocol (:class:`ClockedModel`): its layer names, when each layer
first has activity, which steps carry a readout, and a generator ``_unroll`` that yields one
:class:`Step` per step of the clock. Everything users see about time (stacking readouts, capturing
features on the global clock, validating inputs and timesteps) lives here, once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputError, StepOutOfRangeError, TimestepsError, UnknownLayerError

__all__ = ["ClockedModel", "TimestepOutput", "Step", "InputError", "TimestepsError"]


@dataclass
class TimestepOutput:
    """Result of :meth:`ClockedModel.forward_timesteps`.

    Attributes:
        logits: ``[R, B, num_classes]``, one row per step that has a readout, in time order.
        steps: ``LongTensor [R]``, the clock step of each row of ``logits``.
        features: ``{layer: Tensor [S, B, C, H, W]}`` for the requested layers, indexed by the
            kept steps ``feature_steps`` (by default every clock step ``0 .. T-1``; a view of
            batch-major storage, ``.contiguous()`` makes it time-major). Steps at which a layer is absent (nothing has reached it yet, as
            in BLT's biological unrolling) hold zeros, which is what no activity means after a
            ReLU. A family whose layers compute something image-independent before the image
            arrives (CORnet-RT's bias response) reports those values as computed.
        first_step: ``{layer: int}``, the first step at which each layer carries information
            about the image.
        timesteps: ``T``, the number of steps the clock ran.
        feature_steps: ``LongTensor [S]``, the clock step of each index of dimension 0 of
            ``features`` (all ``0 .. T-1`` unless ``forward_timesteps(steps=...)`` kept fewer).
    """

    logits: Tensor
    steps: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    first_step: dict[str, int] = field(default_factory=dict)
    timesteps: int = 0
    feature_steps: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


@dataclass
class Step:
    """What a family's ``_unroll`` yields for clock step ``t``.

    ``features`` holds the captured layers that are active at ``t`` (canonical names);
    ``logits`` is the readout if one was requested at ``t``, else None.
    """

    t: int
    features: dict[str, Tensor]
    logits: Tensor | None = None


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

    def __init__(self) -> None:
        super().__init__()
        # Foreign key layouts load with plain ``load_state_dict`` too (``module.`` prefixes, the
        # family's ``convert_state_dict``: e.g. published BLT-VS or reference ResNet keys).
        self._register_load_state_dict_pre_hook(self._accept_foreign_layouts)

    def _accept_foreign_layouts(
        self, state_dict: dict[str, Tensor], prefix: str, *args: object
    ) -> None:
        from ._builder import to_model_layout

        keys = [k for k in state_dict if k.startswith(prefix)]
        local = to_model_layout(self, {k[len(prefix) :]: state_dict[k] for k in keys})
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
        raise NotImplementedError

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        """Clock steps that carry a readout in a run of ``timesteps`` steps."""
        raise NotImplementedError

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        raise NotImplementedError

    def _check_spatial_size(self, height: int, width: int) -> None:
        """Raise :class:`InputError` if the architecture cannot take this image size."""

    # ----------------------------------------------------------------------------- public
    def resolve_layer(self, name: str) -> str:
        """Canonical layer name for ``name`` (a layer name or a reference alias).

        Raises :class:`UnknownLayerError` (also a ``KeyError``) naming close matches."""
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
        """Logits ``[B, num_classes]`` of the readout at the last step of the default clock."""
        timesteps = self._resolve_timesteps(None)
        self._check_input(x)
        last = self.readout_steps(timesteps)[-1]
        logits = None
        for step in self._unroll(x, timesteps, frozenset(), frozenset({last})):
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
            x: images ``[B, C, H, W]``, floating point, normalised as ``pretrained_cfg`` says.
            timesteps: number of clock steps ``T``; None uses ``model.timesteps``.
            layers: names from ``model.layer_names`` (reference aliases accepted), ``"all"``, or
                None for no features.
            steps: clock steps whose features are kept (see :meth:`resolve_steps`); None keeps
                all ``0 .. T-1``. Every step still runs (later steps need the earlier ones); only
                the kept ones are stored.
            buffers: optional ``{canonical layer: Tensor [B, S, C, H, W]}`` to write the kept
                steps into (any dtype / device; values are converted while copied), e.g. the
                rows of a preallocated result. Layers without a buffer get a fresh one.

        Returns:
            :class:`TimestepOutput` with ``logits [R, B, K]``, ``steps [R]``, ``features
            {layer: [S, B, C, H, W]}`` (keys as requested; a view of batch-major ``[B, S, ...]``
            storage), ``feature_steps [S]`` and ``first_step``.

        Raises:
            UnknownLayerError: a layer the model does not have (also a ``KeyError``).
            StepOutOfRangeError: a step outside the clock.
        """
        timesteps = self._resolve_timesteps(timesteps)
        self._check_input(x)
        if layers is None:
            requested: list[str] = []
        elif isinstance(layers, str):
            requested = list(self.layer_names) if layers == "all" else [layers]
        else:
            requested = list(layers)
        canonical = {name: self._canonical_layer(name) for name in requested}
        capture = frozenset(canonical.values())
        readouts = self.readout_steps(timesteps)
        kept = self.resolve_steps(steps, timesteps)
        slot_of = {t: i for i, t in enumerate(kept)}
        n_kept = len(kept)

        # Stored batch-major ([B, S, ...]) and returned as an [S, B, ...] view: per-image
        # consumers (extraction to [N, S, ...] stores) then read contiguous memory.
        out_buffers: dict[str, Tensor] = dict(buffers or {})
        written: dict[str, set[int]] = {name: set() for name in capture}
        logits: list[Tensor] = []
        for step in self._unroll(x, timesteps, capture, frozenset(readouts)):
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
            steps=torch.tensor(readouts, dtype=torch.long),
            features=features,
            first_step=first_step,
            timesteps=timesteps,
            feature_steps=torch.tensor(kept, dtype=torch.long),
        )

    # ----------------------------------------------------------------------------- resolution
    def resolve_timesteps(self, timesteps: int | None = None) -> int:
        """The clock length of a run asked for with ``timesteps`` (None: ``model.timesteps``).

        Feed-forward models give 1. Raises :class:`TimestepsError` for a value that is not a
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
        every layer is active; cached per input size. :attr:`feature_info` and extraction
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
            first = self.first_steps(self._resolve_timesteps(None))
            timesteps = self._resolve_timesteps(max(self.min_timesteps, max(first.values()) + 1))
            x = torch.zeros(1, self.in_chans, height, width, device=device, dtype=dtype)
            self._check_input(x)  # an image size the architecture cannot take: InputError
            was_training = self.training
            self.eval()  # no batch-norm statistics updates from the probe
            shapes: dict[str, tuple[int, ...]] = {}
            try:
                with torch.no_grad():
                    for step in self._unroll(
                        x, timesteps, frozenset(self.layer_names), frozenset()
                    ):
                        for name, value in step.features.items():
                            shapes.setdefault(name, tuple(int(d) for d in value.shape[1:]))
            finally:
                self.train(was_training)
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

    def get_classifier(self) -> nn.Linear:
        return self.get_submodule(self.classifier_name)  # type: ignore[return-value]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the readout's Linear by a freshly initialised one with ``num_classes`` outputs."""
        old = self.get_classifier()
        new = nn.Linear(
            old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype
        )
        self.set_submodule(self.classifier_name, new)
        self.num_classes = num_classes

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
        t = self.timesteps if timesteps is None else timesteps
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise TimestepsError(f"timesteps must be a positive integer; got {t!r}")
        if not self.readout_steps(t):
            need = self.min_timesteps
            raise TimestepsError(
                f"{self._display_name()} needs timesteps >= {need} for a readout (its readout layer "
                f"first has activity at step {need - 1}); got timesteps={t}."
            )
        return t

    def _display_name(self) -> str:
        cfg = self.pretrained_cfg
        return getattr(cfg, "architecture", "") or type(self).__name__

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise InputError(
                f"expected a torch.Tensor of images [B, C, H, W]; got {type(x).__name__}"
            )
        if x.ndim != 4:
            fix = " Add a batch dimension with x.unsqueeze(0)." if x.ndim == 3 else ""
            raise InputError(
                f"expected a 4-D image batch [B, C, H, W]; got a {x.ndim}-D tensor of shape "
                f"{tuple(x.shape)}.{fix}"
            )
        if not x.is_floating_point():
            raise InputError(
                f"expected a floating-point image tensor; got dtype {x.dtype}. Convert with "
                "x.float() / 255 and normalise with the model's mean/std "
                "(blt_models.create_transform(model) does both for PIL images)."
            )
        if x.shape[1] != self.in_chans:
            raise InputError(
                f"{self._display_name()} expects {self.in_chans} input channel(s); got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}). Create the model with in_chans={x.shape[1]}, or "
                "convert the images (e.g. grayscale -> RGB with x.expand(-1, 3, -1, -1))."
            )
        self._check_spatial_size(int(x.shape[2]), int(x.shape[3]))

    # ----------------------------------------------------------------------------- timm compatibility
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
            getattr(self.pretrained_cfg, "input_size", None) or (self.in_chans, 224, 224)
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

    def _probe_feature_info(self, height: int, width: int) -> list[dict]:
        shapes = self.layer_shapes(height, width)
        # The probe's clock: just long enough that every layer is active (as layer_shapes runs).
        first = self.first_steps(self._resolve_timesteps(None))
        first = self.first_steps(
            self._resolve_timesteps(max(self.min_timesteps, max(first.values()) + 1))
        )
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

        Feature ``i`` is ``layer_names[i]`` (as in :attr:`feature_info`) at the last step of a
        run of ``timesteps`` steps (default ``model.timesteps``); the final features are the last
        layer at that step (what the readout pools). ``indices``: None for all layers, an int n
        for the last n, or a sequence of (possibly negative) indices, as timm's
        ``feature_take_indices``. ``norm`` is accepted and ignored (no family has a final norm);
        ``stop_early`` is accepted (recurrent layers feed each other, so the whole clock runs);
        ``output_fmt`` is ``"NCHW"`` or ``"NHWC"``. Per-step features: :meth:`forward_timesteps`.

        Returns:
            ``(final [B, C, H, W], [intermediates])``, or only the list with
            ``intermediates_only=True``.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC'; got {output_fmt!r}")
        take = self._take_indices(indices)
        names = [self.layer_names[i] for i in take]
        last = self.layer_names[-1]
        capture = list(dict.fromkeys(names if intermediates_only else [*names, last]))
        out = self.forward_timesteps(x, timesteps=timesteps, layers=capture)

        def fmt(t: Tensor) -> Tensor:
            return t.permute(0, 2, 3, 1) if output_fmt == "NHWC" and t.ndim == 4 else t

        intermediates = [fmt(out.features[n][-1]) for n in names]
        if intermediates_only:
            return intermediates
        return fmt(out.features[last][-1]), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | Sequence[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """timm's ``prune_intermediate_layers``: returns the absolute indices kept.

        Nothing is removed: in a recurrent model later layers and the readout feed earlier
        layers through feedback, so no layer is dead weight for the ones before it.
        """
        return self._take_indices(indices)

    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        """Absolute layer indices for timm's ``indices`` argument (timm's own resolution)."""
        from timm.models._features import feature_take_indices

        try:
            return list(
                feature_take_indices(
                    len(self.layer_names),
                    indices if indices is None or isinstance(indices, int) else list(indices),
                )[0]
            )
        except AssertionError as err:  # timm asserts; users get an IndexError
            raise IndexError(str(err)) from None


def _is_int(value: Any) -> bool:
    """A Python or numpy integer that is not a bool."""
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
