"""Per-step accuracy and entropy of classification readouts ``[R, B, K]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._data import to_numpy

__all__ = ["ReadoutCurves", "readout_curves"]


@dataclass
class ReadoutCurves:
    """Readout statistics at every clock step that has a readout.

    Attributes:
        steps: ``[R]`` clock steps.
        accuracy: ``[R]`` top-1 accuracy (None without labels).
        topk_accuracy: ``[R]`` top-k accuracy for the requested k (None without labels).
        entropy: ``[R]`` mean entropy of the softmax output, in nats.
        entropy_per_image: ``[R, B]``.
        confidence: ``[R]`` mean maximum softmax probability.
        predictions: ``[R, B]`` top-1 classes.
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


def readout_curves(
    logits: Any,
    labels: Any = None,
    steps: Any = None,
    k: int = 5,
) -> ReadoutCurves:
    """Accuracy and entropy over model time from per-step logits.

    Args:
        logits: ``[R, B, K]`` (numpy/torch) or a ``TimestepOutput`` (its ``.logits`` and
            ``.steps`` are used).
        labels: ``[B]`` true classes, optional.
        steps: ``[R]`` clock steps of the rows (default ``TimestepOutput.steps`` or ``0..R-1``).
        k: top-k accuracy also reported.
    """
    if hasattr(logits, "logits"):
        if steps is None:
            steps = getattr(logits, "steps", None)
        logits = logits.logits
    z = to_numpy(logits).astype(np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3:
        raise ValueError(f"expected logits [R, B, K]; got shape {z.shape}")
    r, b, num_classes = z.shape
    steps = np.arange(r) if steps is None else to_numpy(steps).astype(int).reshape(-1)
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
        kk = min(k, num_classes)
        top = np.argsort(-z, axis=2)[:, :, :kk]
        topk = (top == y[None, :, None]).any(axis=2).mean(axis=1)
    return ReadoutCurves(
        steps=steps,
        accuracy=acc,
        topk_accuracy=topk,
        entropy=ent.mean(axis=1),
        entropy_per_image=ent,
        confidence=p.max(axis=2).mean(axis=1),
        predictions=pred,
        k=min(k, num_classes),
        num_classes=num_classes,
    )
