"""Input normalisation: every analysis reads features through [`as_feature_set`][blt_models.analysis.as_feature_set].

Model time is the clock of ``blt_models._clock``: step ``t`` is the same step for every layer.
The BLT reference's analysis labelled hook-call indices as "steps" (layer k's hook is first
called at model time k), so one label meant different model times in different layers; here a
state is ``(layer, clock step)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["FeatureSet", "StateMatrix", "as_feature_set", "to_numpy"]

#: Layers a result's repr names before "... (N more)".
REPR_LAYERS = 6


def span(steps: Iterable[Any]) -> str:
    """``"3..9"`` (or ``"3"``, or ``"none"``) for a sequence of clock steps."""
    values = [int(s) for s in steps]
    if not values:
        return "none"
    return str(values[0]) if len(values) == 1 else f"{values[0]}..{values[-1]}"


def summary(name: str, head: str, rows: Sequence[str]) -> str:
    """``name(head; row; row; ... (k more))``: the short repr of a result object."""
    shown = list(rows[:REPR_LAYERS])
    if len(rows) > REPR_LAYERS:
        shown.append(f"... ({len(rows) - REPR_LAYERS} more)")
    return f"{name}(" + "; ".join([head, *shown]) + ")"


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device) or a nested sequence."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach()
        if hasattr(x, "float") and str(getattr(x, "dtype", "")) in (
            "torch.bfloat16",
            "torch.float16",
        ):
            x = x.float()
        x = x.cpu().numpy()
    return np.asarray(x)


@dataclass
class FeatureSet:
    """Features of several layers over model time.

    Attributes:
        features: ``{layer: ndarray [N, T_layer, ...]}``; N images, then steps.
        steps: ``{layer: ndarray [T_layer]}``, the clock step of each step slot.
        first_step: ``{layer: int}``, first clock step with image information; earlier steps are
            *inactive* (zeros in BLT's biological unrolling) and skipped by default.
        image_ids: optional identifiers of the N images.
        labels: optional class of each of the N images (an extraction result's ``.labels``:
            the subfolder of each image); used by the analyses when no labels are passed.
    """

    features: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    first_step: dict[str, int]
    image_ids: list[Any] | None = None
    labels: list[Any] | None = None

    @property
    def layers(self) -> list[str]:
        return list(self.features)

    @property
    def num_images(self) -> int:
        return int(next(iter(self.features.values())).shape[0])

    def active_steps(self, layer: str, include_inactive: bool = False) -> list[int]:
        """Clock steps of ``layer`` (only those at or after ``first_step`` unless asked)."""
        steps = [int(s) for s in self.steps[layer]]
        if include_inactive:
            return steps
        return [s for s in steps if s >= self.first_step.get(layer, 0)]

    def states(self, include_inactive: bool = False) -> list[tuple[str, int]]:
        """All ``(layer, step)`` states, layer-major, steps in time order."""
        return [
            (layer, s) for layer in self.layers for s in self.active_steps(layer, include_inactive)
        ]

    def state(self, layer: str, step: int, flatten: bool = True) -> np.ndarray:
        """Features of ``layer`` at clock step ``step``: ``[N, F]`` (or ``[N, ...]``)."""
        where = np.flatnonzero(self.steps[layer] == step)
        if where.size == 0:
            raise KeyError(
                f"layer {layer!r} has no clock step {step} (steps: {list(self.steps[layer])})"
            )
        x = self.features[layer][:, int(where[0])]
        return x.reshape(x.shape[0], -1) if flatten else x

    def subset(self, layers: Sequence[str] | str | None) -> FeatureSet:
        if layers is None:
            return self
        if isinstance(layers, str):
            layers = [layers]
        missing = [name for name in layers if name not in self.features]
        if missing:
            raise KeyError(f"no features for layer(s) {missing}; available: {self.layers}")
        return FeatureSet(
            {k: self.features[k] for k in layers},
            {k: self.steps[k] for k in layers},
            {k: self.first_step[k] for k in layers},
            self.image_ids,
            self.labels,
        )

    def __repr__(self) -> str:
        rows = [f"{layer}: steps {span(self.active_steps(layer))} {tuple(x.shape[2:])}"
                for layer, x in self.features.items()]  # fmt: skip
        head = f"{self.num_images} images"
        if self.labels is not None:
            head += f", {len(set(self.labels))} classes"
        return summary("FeatureSet", head, rows)

    def labels_or(self, labels: Any, what: str) -> np.ndarray:
        """``labels`` as ``[N]`` if given, else the features' own (their subfolders); an error
        naming both ways to give them if there are none, or if the count is not N."""
        if labels is None:
            labels = self.labels
        if labels is None:
            raise InputError(
                f"{what} needs the class of every image: pass labels=[...] (one per image), or "
                "extract from a folder with one subfolder per class (result.labels)"
            )
        y = to_numpy(labels).reshape(-1)
        if y.shape[0] != self.num_images:
            raise InputError(f"{y.shape[0]} labels for {self.num_images} images")
        return y


def _per_layer(value: Any, layers: Iterable[str]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {k: value[k] for k in layers if k in value}
    return dict.fromkeys(layers, value)


def as_feature_set(source: Any, layers: Sequence[str] | str | None = None) -> FeatureSet:
    """Normalise extracted features to a [`FeatureSet`][blt_models.analysis.FeatureSet].

    Accepts a [`FeatureSet`][blt_models.analysis.FeatureSet]; a [`TimestepOutput`][blt_models.TimestepOutput] (its ``[T, B, ...]``
    features are transposed to ``[B, T, ...]``); any object with a ``.features`` mapping
    ``{layer: [N, T, ...]}`` and optional ``.steps`` (clock step of each slot, shared or per
    layer), ``.first_step`` and ``.image_ids``; or a plain mapping ``{layer: [N, T, ...]}``.

    Without ``first_step``, a layer's first step is the first one with any non-zero value (absent
    layers hold zeros on the clock).
    """
    if isinstance(source, FeatureSet):
        return source.subset(layers)
    steps_attr = first_attr = ids = labels = None
    transpose = False
    if isinstance(source, Mapping):
        raw = source
    elif hasattr(source, "features"):
        raw = source.features
        steps_attr = getattr(source, "steps", None)
        first_attr = getattr(source, "first_step", None)
        ids = getattr(source, "image_ids", None)
        labels = getattr(source, "labels", None)
        # TimestepOutput keeps the clock first ([T, B, ...]) and its .steps are readout steps.
        if type(source).__name__ == "TimestepOutput" and hasattr(source, "timesteps"):
            transpose = True
            steps_attr = None
    else:
        raise TypeError(
            "expected {layer: array [N, T, ...]}, a TimestepOutput or an object with .features; "
            f"got {type(source).__name__}"
        )
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError("no features: expected a non-empty mapping {layer: array [N, T, ...]}")
    features: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        arr = to_numpy(value)
        if transpose:
            arr = np.swapaxes(arr, 0, 1)
        if arr.ndim < 3:
            raise ValueError(
                f"features of {name!r} have shape {arr.shape}; expected [N, T, ...] with at least "
                "one feature axis (add a step axis with x[:, None] for a single step)"
            )
        features[str(name)] = arr
    n = {a.shape[0] for a in features.values()}
    if len(n) != 1:
        raise ValueError(f"layers disagree on the number of images: {sorted(n)}")

    steps_map = _per_layer(steps_attr, features) if steps_attr is not None else {}
    steps: dict[str, np.ndarray] = {}
    for name, arr in features.items():
        s = steps_map.get(name)
        s = np.arange(arr.shape[1]) if s is None else to_numpy(s).astype(int).reshape(-1)
        if s.shape[0] != arr.shape[1]:
            raise ValueError(
                f"layer {name!r}: {arr.shape[1]} step slots but {s.shape[0]} step labels"
            )
        steps[name] = s

    first_map = _per_layer(first_attr, features) if first_attr is not None else {}
    first: dict[str, int] = {}
    for name, arr in features.items():
        if name in first_map and first_map[name] is not None:
            first[name] = int(first_map[name])
        else:
            nonzero = [i for i in range(arr.shape[1]) if np.any(arr[:, i])]
            first[name] = int(steps[name][nonzero[0]]) if nonzero else int(steps[name][0])
    if ids is not None:
        ids = list(to_numpy(ids).tolist()) if not isinstance(ids, list) else ids
    return FeatureSet(features, steps, first, ids, labels).subset(layers)


@dataclass
class StateMatrix:
    """A square matrix over ``(layer, step)`` states (CKA, RDM-of-RDMs).

    Attributes:
        values: ``[S, S]``.
        labels: ``[(layer, clock step)]`` of the S states, layer-major.
        kind: what the values are (``"linear CKA"``, ``"1 - cosine"`` ...).
        is_distance: whether larger values mean more different.
    """

    values: np.ndarray
    labels: list[tuple[str, int]]
    kind: str = ""
    is_distance: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        seen: list[str] = []
        for layer, _ in self.labels:
            if layer not in seen:
                seen.append(layer)
        return seen

    def index(self, layer: str, step: int) -> int:
        return self.labels.index((layer, int(step)))

    def steps(self, layer: str) -> list[int]:
        return [s for name, s in self.labels if name == layer]

    def block(self, layer_a: str, layer_b: str) -> np.ndarray:
        """Sub-matrix ``[steps of layer_a, steps of layer_b]``."""
        ia = [i for i, (name, _) in enumerate(self.labels) if name == layer_a]
        ib = [i for i, (name, _) in enumerate(self.labels) if name == layer_b]
        return self.values[np.ix_(ia, ib)]

    def __repr__(self) -> str:
        rows = [f"{layer}: steps {span(self.steps(layer))}" for layer in self.layers]
        finite = self.values[np.isfinite(self.values)]
        values = f", values {finite.min():.3g}..{finite.max():.3g}" if finite.size else ""
        head = f"{self.kind or 'values'}, {len(self.labels)} x {len(self.labels)} states{values}"
        return summary("StateMatrix", head, rows)

    def distances(self) -> np.ndarray:
        """The values as a dissimilarity matrix (``1 - similarity`` when they are similarities)."""
        return self.values if self.is_distance else 1.0 - self.values
