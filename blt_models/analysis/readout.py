"""Per-step accuracy and entropy of classification readouts ``[R, B, K]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ._data import to_numpy

__all__ = ["ReadoutCurves", "readout_curves"]


@dataclass
class ReadoutCurves:
    """Readout statistics at every clock step that has a readout.

    Attributes:
        steps: ``[R]`` clock steps.
        accuracy: ``[R]`` top-1 accuracy (None without labels).
        topk_accuracy: ``[R]`` top-k accuracy (None without labels, or when top-k is not
            reported: by default only with more than 10 classes).
        entropy: ``[R]`` mean entropy of the softmax output, in nats.
        entropy_per_image: ``[R, B]``.
        confidence: ``[R]`` mean maximum softmax probability.
        predictions: ``[R, B]`` top-1 classes.
        image_independent: ``[R]`` True where the readout is the same for every image (a step
            before the image reaches the readout, e.g. CORnet-RT's steps 0-2): figures shade
            these steps and leave them out of the curves. All False with a single image.
    """

    steps: np.ndarray
    accuracy: np.ndarray | None
    topk_accuracy: np.ndarray | None
    entropy: np.ndarray
    entropy_per_image: np.ndarray
    confidence: np.ndarray
    predictions: np.ndarray
    k: int = 5
    num_classes: int = 0
    image_independent: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image_independent is None:
            self.image_independent = np.zeros(len(self.steps), dtype=bool)

    def __repr__(self) -> str:
        def row(values: np.ndarray | None, fmt: str = "{:.3f}") -> str:
            return (
                "None" if values is None else "[" + ", ".join(fmt.format(v) for v in values) + "]"
            )

        parts = [
            f"steps={row(self.steps, '{:d}')}",
            f"images={self.predictions.shape[1]}",
            f"num_classes={self.num_classes}",
            f"accuracy={row(self.accuracy)}",
        ]
        if self.topk_accuracy is not None:
            parts.append(f"top{self.k}={row(self.topk_accuracy)}")
        parts.append(f"entropy={row(self.entropy)}")
        return f"ReadoutCurves({', '.join(parts)})"


def readout_curves(
    logits: Any,
    labels: Any = None,
    steps: Any = None,
    k: int | None = None,
) -> ReadoutCurves:
    """Accuracy and entropy over model time from per-step logits.

    Args:
        logits: a ``TimestepOutput`` (its ``.logits`` and ``.steps`` are used), or raw logits
            ``[R, B, K]`` (numpy/torch) together with ``steps``.
        labels: ``[B]`` true classes, optional.
        steps: ``[R]`` clock steps of the rows; required for raw logits (a model's readouts
            need not start at step 0: ``blt_bl``'s are at steps 5..9), taken from the
            ``TimestepOutput`` otherwise.
        k: also report top-k accuracy; default 5 when there are more than 10 classes, none
            otherwise (with 10 classes or fewer, top-5 says little).
    """
    if hasattr(logits, "logits"):
        if getattr(logits, "logits_are_features", False):
            raise InputError(
                "readout_curves: the model has no classifier (num_classes=0, e.g. after "
                "prune_intermediate_layers or from features_only=True), so out.logits holds its "
                "pooled features, not class scores. Run a model with its classifier (or "
                "model.reset_classifier(num_classes) and train it)."
            )
        if steps is None:
            steps = getattr(logits, "steps", None)
        logits = logits.logits
    if steps is None:
        raise InputError(
            "readout_curves: raw logits carry no clock steps; pass steps= (e.g. out.steps, the "
            "step of each row), or pass the TimestepOutput of forward_timesteps itself"
        )
    z = to_numpy(logits).astype(np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3:
        raise ValueError(f"expected logits [R, B, K]; got shape {z.shape}")
    r, b, num_classes = z.shape
    steps = to_numpy(steps).astype(int).reshape(-1)
    if steps.shape[0] != r:
        raise ValueError(f"{steps.shape[0]} step labels for {r} readouts")
    z = z - z.max(axis=2, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
    p = np.exp(logp)
    ent = -(p * logp).sum(axis=2)
    pred = z.argmax(axis=2)
    acc = topk = None
    if labels is not None:
        y = to_numpy(labels).astype(int).reshape(-1)
        if y.shape[0] != b:
            raise ValueError(f"{y.shape[0]} labels for a batch of {b}")
        acc = (pred == y[None]).mean(axis=1)
        if k is None:
            k = 5 if num_classes > 10 else 0
        if 1 < k < num_classes:
            top = np.argsort(-z, axis=2)[:, :, :k]
            topk = (top == y[None, :, None]).any(axis=2).mean(axis=1)
    return ReadoutCurves(
        steps=steps,
        accuracy=acc,
        topk_accuracy=topk,
        entropy=ent.mean(axis=1),
        entropy_per_image=ent,
        confidence=p.max(axis=2).mean(axis=1),
        predictions=pred,
        k=k or 0,
        num_classes=num_classes,
        # The same logits for every image (exactly: the image has not reached the readout yet).
        image_independent=(np.ptp(z, axis=1).max(axis=1) == 0) if b > 1 else np.zeros(r, bool),
    )
