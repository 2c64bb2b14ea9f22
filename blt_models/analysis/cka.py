"""Centered kernel alignment (CKA), linear and angular, across layers x clock steps.

Own implementation, HSIC-based (Kornblith et al. 2019; unbiased HSIC of Song et al. 2012). With a
linear kernel on column-centred features ``X [N, P]``, ``Y [N, Q]``:

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   K = X X^T,  L = Y Y^T,

which equals ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. The angular form
``arccos(CKA)`` is a metric on representations (Williams et al. 2021); with the default biased
estimator CKA lies in [0, 1], so the angle lies in [0, pi/2]. The reference analysis used the
unbiased estimator (repsim's ``AngularCKA``), available with ``unbiased=True``; it can be
slightly negative for unrelated representations, and its angle can then exceed pi/2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._data import StateMatrix, as_feature_set, to_numpy

__all__ = ["StateMatrix", "angular_cka", "cka_matrix", "gram_linear", "hsic", "linear_cka"]


def _flat(x: Any) -> np.ndarray:
    x = to_numpy(x).astype(np.float64)
    return x.reshape(x.shape[0], -1)


def gram_linear(x: Any) -> np.ndarray:
    """Linear Gram matrix ``[N, N]`` of the column-centred features ``x [N, ...]``."""
    x = _flat(x)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def _center(k: np.ndarray, unbiased: bool) -> np.ndarray:
    """Double-centred (biased) or U-centred (unbiased) Gram matrix; HSIC is then an inner product.

    Biased: ``H K H``; ``HSIC = <HKH, HLH> / (n - 1)^2``. Unbiased (U-centring, Szekely & Rizzo
    2014): zero diagonal and ``HSIC_u = <U(K), U(L)> / (n (n - 3))``, equal to Song et al.'s
    estimator.
    """
    n = k.shape[0]
    if not unbiased:
        k = k - k.mean(axis=0, keepdims=True)
        return k - k.mean(axis=1, keepdims=True)
    if n < 4:
        raise ValueError("the unbiased HSIC estimator needs at least 4 samples")
    k = k.copy()
    np.fill_diagonal(k, 0.0)
    total = k.sum()
    rows = k.sum(axis=1, keepdims=True) / (n - 2)
    cols = k.sum(axis=0, keepdims=True) / (n - 2)
    u = k - rows - cols + total / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def _scale(n: int, unbiased: bool) -> float:
    return 1.0 / (n * (n - 3)) if unbiased else 1.0 / (n - 1) ** 2


def hsic(k: np.ndarray, l: np.ndarray, unbiased: bool = False) -> float:  # noqa: E741
    """HSIC of two Gram matrices ``[N, N]`` (biased estimator by default)."""
    k = np.asarray(k, dtype=np.float64)
    l = np.asarray(l, dtype=np.float64)  # noqa: E741
    n = k.shape[0]
    return float(np.sum(_center(k, unbiased) * _center(l, unbiased)) * _scale(n, unbiased))


def linear_cka(x: Any, y: Any, unbiased: bool = False) -> float:
    """Linear CKA between features ``x [N, ...]`` and ``y [N, ...]`` of the same N stimuli.

    Features are centred over stimuli. Returns a value in [0, 1] (biased estimator); NaN if one
    representation is constant over stimuli.
    """
    k, l = gram_linear(x), gram_linear(y)  # noqa: E741
    if k.shape != l.shape:
        raise ValueError(
            f"x and y must have the same number of stimuli; got {k.shape[0]} and {l.shape[0]}"
        )
    kxy = hsic(k, l, unbiased)
    kxx, kyy = hsic(k, k, unbiased), hsic(l, l, unbiased)
    denom = np.sqrt(kxx * kyy)
    return float(kxy / denom) if denom > 0 else float("nan")


def angular_cka(x: Any, y: Any, unbiased: bool = False) -> float:
    """``arccos(linear CKA)`` in radians; in [0, pi/2] for the biased estimator."""
    return float(np.arccos(np.clip(linear_cka(x, y, unbiased), -1.0, 1.0)))


def cka_matrix(
    features: Any,
    kind: str = "linear",
    unbiased: bool = False,
    layers: Sequence[str] | str | None = None,
    include_inactive: bool = False,
) -> StateMatrix:
    """CKA between every pair of ``(layer, clock step)`` states.

    Args:
        features: ``{layer: [N, T, ...]}``, an extraction result or a ``TimestepOutput``.
        kind: ``"linear"`` (similarity in [0, 1]) or ``"angular"`` (``arccos``, a distance).
        unbiased: use the unbiased HSIC estimator (as the reference's repsim ``AngularCKA``).
        layers: subset of layers.
        include_inactive: keep steps before a layer's first active step (zeros: CKA is NaN).

    Returns:
        [`StateMatrix`][blt_models.analysis.StateMatrix] ``[S, S]`` with ``(layer, step)`` labels.
    """
    if kind not in ("linear", "angular"):
        raise ValueError("kind must be 'linear' or 'angular'")
    fs = as_feature_set(features, layers)
    states = fs.states(include_inactive)
    n = fs.num_images
    # Each state -> its centred Gram matrix, normalised to unit Frobenius norm: CKA is then a dot
    # product, and the whole matrix one matmul.
    rows = []
    for layer, step in states:
        g = _center(gram_linear(fs.state(layer, step)), unbiased)
        norm = np.sqrt(np.sum(g * g))
        rows.append((g / norm).reshape(-1) if norm > 0 else np.full(n * n, np.nan))
    mat = np.stack(rows)
    cka = mat @ mat.T
    cka = (cka + cka.T) / 2
    valid = ~np.isnan(np.diag(cka))
    cka[np.ix_(valid, valid)] = np.clip(cka[np.ix_(valid, valid)], -1.0, 1.0)
    idx = np.flatnonzero(valid)
    cka[idx, idx] = 1.0
    estimator = "unbiased" if unbiased else "biased"
    if kind == "linear":
        return StateMatrix(cka, states, kind=f"linear CKA ({estimator})", is_distance=False)
    return StateMatrix(
        np.arccos(cka), states, kind=f"angular CKA, arccos ({estimator}), rad", is_distance=True
    )
