"""RDMs per layer and clock step, RSA against neural RDMs, RDM-of-RDMs and MDS trajectories."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rsatoolbox.data import Dataset
from rsatoolbox.rdm import RDMs, calc_rdm, compare

from ._data import StateMatrix, as_feature_set, span, summary, to_numpy

__all__ = [
    "RDM_METHODS",
    "RSAResult",
    "Trajectories",
    "compute_rdms",
    "mds_trajectories",
    "rdm_matrix",
    "rdm_of_rdms",
    "rsa",
]

#: Dissimilarities of [`compute_rdms`][blt_models.analysis.compute_rdms]. ``euclidean`` follows rsatoolbox (and the reference
#: analysis): the *squared* Euclidean distance divided by the number of features.
RDM_METHODS = ("correlation", "euclidean", "cosine")


def rdm_matrix(x: Any, method: str = "correlation") -> np.ndarray:
    """Square RDM ``[N, N]`` of patterns ``x [N, ...]`` (flattened), computed directly in numpy.

    ``correlation``: 1 - Pearson r between patterns; ``cosine``: 1 - cosine similarity;
    ``euclidean``: squared Euclidean distance / number of features (rsatoolbox's convention).
    """
    x = to_numpy(x).astype(np.float64)
    x = x.reshape(x.shape[0], -1)
    if method == "euclidean":
        sq = np.sum(x * x, axis=1)
        d = (sq[:, None] + sq[None, :] - 2 * x @ x.T) / x.shape[1]
        d = np.maximum(d, 0.0)
    elif method in ("correlation", "cosine"):
        if method == "correlation":
            x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = x / norm
        d = 1.0 - u @ u.T
    else:
        raise ValueError(f"unknown RDM method {method!r}; choose from {RDM_METHODS}")
    np.fill_diagonal(d, 0.0)
    return (d + d.T) / 2


def _upper(d: np.ndarray) -> np.ndarray:
    return d[np.triu_indices(d.shape[0], k=1)]


def compute_rdms(
    features: Any,
    method: str = "correlation",
    layers: Sequence[str] | str | None = None,
    include_inactive: bool = False,
    pattern_descriptors: dict[str, Sequence[Any]] | None = None,
) -> RDMs:
    """One RDM per ``(layer, clock step)`` state, as a single rsatoolbox ``RDMs`` object.

    Args:
        features: ``{layer: [N, T, ...]}``, an extraction result or a ``TimestepOutput``.
        method: ``"correlation"``, ``"euclidean"`` (rsatoolbox: squared, per feature) or
            ``"cosine"``. The first two are computed by ``rsatoolbox.rdm.calc_rdm``.
        layers: subset of layers (default all, in the given order).
        include_inactive: keep steps before a layer's first active step (zeros; their
            correlation/cosine RDMs are undefined).
        pattern_descriptors: extra per-image descriptors (e.g. ``{"label": labels}``); the
            features' own labels (``result.labels``: each image's subfolder) are added as
            ``"label"`` unless given.

    Returns:
        ``RDMs`` with ``rdm_descriptors`` ``layer``, ``step`` (clock step) and ``state``
        (``"layer@t"``); select with ``rdms.subset("layer", "layer3")``.
    """
    if method not in RDM_METHODS:
        raise ValueError(f"unknown RDM method {method!r}; choose from {RDM_METHODS}")
    fs = as_feature_set(features, layers)
    states = fs.states(include_inactive)
    if not states:
        raise ValueError("no active (layer, step) states in these features")
    pdesc: dict[str, Any] = {"index": np.arange(fs.num_images)}
    if fs.image_ids is not None:
        pdesc["image_id"] = np.asarray(fs.image_ids)
    if fs.labels is not None:
        pdesc["label"] = np.asarray(fs.labels)
    for key, value in (pattern_descriptors or {}).items():
        pdesc[key] = np.asarray(to_numpy(value))
    vectors = []
    for layer, step in states:
        x = fs.state(layer, step).astype(np.float64)
        if method == "cosine":
            vectors.append(_upper(rdm_matrix(x, "cosine")))
        else:
            rdm = calc_rdm(Dataset(x), method=method)  # one Dataset in, one RDMs out
            assert isinstance(rdm, RDMs)
            vectors.append(rdm.dissimilarities[0])
    return RDMs(
        np.stack(vectors),
        dissimilarity_measure="squared euclidean" if method == "euclidean" else method,
        rdm_descriptors={
            "layer": np.array([layer for layer, _ in states]),
            "step": np.array([step for _, step in states]),
            "state": np.array([f"{layer}@t{step}" for layer, step in states]),
        },
        pattern_descriptors=pdesc,
    )


def _labels(rdms: RDMs) -> list[tuple[str, int]]:
    desc = rdms.rdm_descriptors
    if "layer" in desc and "step" in desc:
        return [(str(a), int(b)) for a, b in zip(desc["layer"], desc["step"], strict=True)]
    return [("rdm", i) for i in range(rdms.n_rdm)]


def _as_rdms(x: Any, time_descriptor: str) -> RDMs:
    """Neural RDMs: an rsatoolbox RDMs, a square matrix [N, N] or per-bin matrices [B, N, N]."""
    if isinstance(x, RDMs):
        return x
    arr = to_numpy(x).astype(np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(
            f"neural RDMs: expected rsatoolbox RDMs, [N, N] or [bins, N, N]; got {arr.shape}"
        )
    return RDMs(arr, rdm_descriptors={time_descriptor: np.arange(arr.shape[0])})


@dataclass
class RSAResult:
    """Model-vs-neural RDM similarity for every ``(layer, step)`` state and neural time bin.

    Attributes:
        scores: ``[S, B]`` mean similarity of each state to the neural RDMs of each bin.
        labels: ``[(layer, clock step)]`` of the S states.
        bins: values of the neural time descriptor (one bin ``[0]`` without one).
        method: rsatoolbox comparison method.
        noise_ceiling: ``[B, 2]`` (lower, upper) where a bin has several neural RDMs (subjects,
            sessions), from ``rsatoolbox.inference.boot_noise_ceiling``; NaN otherwise.
        sem: ``[S, B]`` bootstrap standard error over images (``n_bootstrap > 0``), else None.
    """

    scores: np.ndarray
    labels: list[tuple[str, int]]
    bins: list[Any]
    method: str
    noise_ceiling: np.ndarray
    sem: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(layer for layer, _ in self.labels))

    def layer(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps [T], scores [T, B])`` of one layer."""
        idx = [i for i, (name, _) in enumerate(self.labels) if name == layer]
        return np.array([self.labels[i][1] for i in idx]), self.scores[idx]

    def __repr__(self) -> str:
        rows = []
        for layer in self.layers:
            steps, scores = self.layer(layer)
            best = int(np.nanargmax(scores.max(axis=1))) if np.isfinite(scores).any() else 0
            rows.append(f"{layer}: steps {span(steps)}, best {np.nanmax(scores[best]):.3f} at "
                        f"step {int(steps[best])}")  # fmt: skip
        head = f"{self.method}, {len(self.labels)} states x {len(self.bins)} bins"
        if np.isfinite(self.noise_ceiling).any():
            head += f", noise ceiling {np.nanmin(self.noise_ceiling):.3f}..{np.nanmax(self.noise_ceiling):.3f}"
        return summary("RSAResult", head, rows)

    def best(self, bin_index: int = 0) -> tuple[tuple[str, int], float]:
        """The state with the highest score in one bin."""
        i = int(np.nanargmax(self.scores[:, bin_index]))
        return self.labels[i], float(self.scores[i, bin_index])


def rsa(
    model_rdms: RDMs | Any,
    neural_rdms: RDMs | Any,
    method: str = "corr",
    time_descriptor: str = "time",
    noise_ceiling: bool = True,
    n_bootstrap: int = 0,
    seed: int = 0,
    rdm_method: str = "correlation",
) -> RSAResult:
    """RSA of every model ``(layer, step)`` RDM against neural RDMs, per neural time bin.

    Args:
        model_rdms: the output of [`compute_rdms`][blt_models.analysis.compute_rdms] (or features, turned into RDMs with
            ``rdm_method``).
        neural_rdms: rsatoolbox ``RDMs`` (several RDMs per bin, e.g. subjects, are averaged over
            and give a noise ceiling; bins come from the ``time_descriptor`` rdm descriptor, as
            ``calc_rdm_movie`` writes it), a square matrix ``[N, N]``, or ``[bins, N, N]``.
        method: an ``rsatoolbox.rdm.compare`` method (``corr``, ``spearman``, ``cosine``,
            ``tau-a``, ``rho-a``, ``corr_cov``, ``cosine_cov``...).
        noise_ceiling: compute ``boot_noise_ceiling`` for bins with at least two neural RDMs.
        n_bootstrap: if > 0, bootstrap over images (patterns) as the reference's
            ``eval_bootstrap_pattern`` did, and report the standard error in ``sem``.
        seed: seed of the bootstrap.

    Returns:
        [`RSAResult`][blt_models.analysis.RSAResult].
    """
    if not isinstance(model_rdms, RDMs):
        model_rdms = compute_rdms(model_rdms, method=rdm_method)
    neural = _as_rdms(neural_rdms, time_descriptor)
    if neural.n_cond != model_rdms.n_cond:
        raise ValueError(
            f"model RDMs have {model_rdms.n_cond} conditions (images), neural RDMs "
            f"{neural.n_cond}; they must describe the same images in the same order"
        )
    if time_descriptor in neural.rdm_descriptors:
        values = list(neural.rdm_descriptors[time_descriptor])
        bins = list(dict.fromkeys(values))
        groups = [np.flatnonzero([v == b for v in values]) for b in bins]
    else:
        bins = [0]
        groups = [np.arange(neural.n_rdm)]
    labels = _labels(model_rdms)
    scores = np.full((model_rdms.n_rdm, len(bins)), np.nan)
    ceiling = np.full((len(bins), 2), np.nan)
    sem = np.full_like(scores, np.nan) if n_bootstrap > 0 else None
    rng = np.random.default_rng(seed)
    n = model_rdms.n_cond
    for b, idx in enumerate(groups):
        target = neural[idx] if len(idx) != neural.n_rdm else neural
        scores[:, b] = np.nanmean(compare(model_rdms, target, method=method), axis=1)
        if noise_ceiling and target.n_rdm >= 2:
            from rsatoolbox.inference import boot_noise_ceiling

            ceiling[b] = boot_noise_ceiling(target, method=method)
        if sem is not None:
            boots = np.full((n_bootstrap, model_rdms.n_rdm), np.nan)
            for i in range(n_bootstrap):
                pick = np.unique(rng.choice(n, size=n, replace=True))
                if pick.size < 3:
                    continue
                m = model_rdms.subset_pattern("index", pick)
                t = target.subset_pattern("index", pick)
                boots[i] = np.nanmean(compare(m, t, method=method), axis=1)
            sem[:, b] = np.nanstd(boots, axis=0, ddof=1)
    layers = list(dict.fromkeys(layer for layer, _ in labels))
    measure = getattr(model_rdms, "dissimilarity_measure", "")
    per_bin = f"{len(groups[0])} per bin, " if len(groups[0]) > 1 else ""
    compared = (
        f"model RDMs ({measure + ', ' if measure else ''}{len(layers)} layers x clock steps) vs "
        f"{neural.n_rdm} neural RDM{'s' if neural.n_rdm > 1 else ''} ({per_bin}{len(bins)} "
        f"bin{'s' if len(bins) > 1 else ''}), {n} images"
    )
    return RSAResult(scores, labels, bins, method, ceiling, sem, meta={"compared": compared})


# --------------------------------------------------------------------------- RDM of RDMs, MDS
def rdm_of_rdms(
    rdms: RDMs | Any,
    method: str = "cosine",
    rdm_method: str = "correlation",
) -> StateMatrix:
    """Second-order dissimilarities between all ``(layer, step)`` RDMs.

    Args:
        rdms: the output of [`compute_rdms`][blt_models.analysis.compute_rdms], or features (turned into RDMs with
            ``rdm_method``).
        method: ``"angular"`` (arccos of the cosine similarity, the distance the reference's MDS
            used) or any ``rsatoolbox.rdm.compare`` method, giving ``1 - similarity`` clipped to
            [0, 2] as in the reference (``"cosine"``, ``"spearman"``, ``"corr"``...).

    Returns:
        [`StateMatrix`][blt_models.analysis.StateMatrix] of dissimilarities with ``(layer, step)`` labels.
    """
    if not isinstance(rdms, RDMs):
        rdms = compute_rdms(rdms, method=rdm_method)
    if method == "angular":
        sim = compare(rdms, rdms, method="cosine")
        d = np.arccos(np.clip(sim, -1.0, 1.0))
        kind = "angle between RDMs (rad)"
    else:
        sim = compare(rdms, rdms, method=method)
        d = np.clip(1.0 - sim, 0.0, 2.0)
        kind = f"1 - {method} similarity of RDMs"
    d = np.nan_to_num(d, nan=0.0)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    return StateMatrix(d, _labels(rdms), kind=kind, is_distance=True, meta={"method": method})


@dataclass
class Trajectories:
    """Low-dimensional trajectories of layers through model time.

    Attributes:
        coords: ``{layer: [T_layer, d]}`` embedding of each state, in time order.
        steps: ``{layer: [T_layer]}`` clock steps.
        stress: MDS stress (one value, or one per layer for per-layer embeddings).
        joint: whether all layers share one embedding.
    """

    coords: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    stress: float | dict[str, float]
    joint: bool = True
    kind: str = ""

    @property
    def n_components(self) -> int:
        return int(next(iter(self.coords.values())).shape[1])

    def __repr__(self) -> str:
        lengths = self.path_lengths()
        rows = [f"{layer}: steps {span(self.steps[layer])}, path {lengths[layer]:.3g}"
                for layer in self.coords]  # fmt: skip
        stress = self.stress if isinstance(self.stress, dict) else {"": self.stress}
        head = (f"{self.n_components}-D {'joint' if self.joint else 'per-layer'} MDS"
                f"{' of ' + self.kind if self.kind else ''}, stress "
                f"{max(float(v) for v in stress.values()):.3g}")  # fmt: skip
        return summary("Trajectories", head, rows)

    def path_lengths(self) -> dict[str, float]:
        """Total distance travelled by each layer (sum of step-to-step lengths)."""
        return {
            k: float(np.linalg.norm(np.diff(v, axis=0), axis=1).sum())
            for k, v in self.coords.items()
        }


def _mds(d: np.ndarray, n_components: int, seed: int, n_init: int, max_iter: int):
    from sklearn.manifold import MDS

    params = inspect.signature(MDS).parameters
    kwargs: dict[str, Any] = dict(
        n_components=n_components, n_init=n_init, max_iter=max_iter, random_state=seed
    )
    if "metric_mds" in params:  # scikit-learn >= 1.8
        kwargs.update(metric="precomputed", metric_mds=True, init="random")
    else:
        kwargs.update(dissimilarity="precomputed", metric=True)
    if "normalized_stress" in params:
        kwargs["normalized_stress"] = "auto"
    mds = MDS(**kwargs)
    coords = mds.fit_transform(d)
    return coords, float(mds.stress_)


def mds_trajectories(
    dissimilarity: StateMatrix,
    n_components: int = 2,
    per_layer: bool = False,
    seed: int = 0,
    n_init: int = 4,
    max_iter: int = 300,
) -> Trajectories:
    """Metric MDS (scikit-learn, seeded) of ``(layer, step)`` states into 2-D or 3-D trajectories.

    Args:
        dissimilarity: a [`StateMatrix`][blt_models.analysis.StateMatrix] (e.g. [`rdm_of_rdms`][blt_models.analysis.rdm_of_rdms], or
            [`cka_matrix`][blt_models.analysis.cka_matrix] with ``kind="angular"``); similarities are
            turned into ``1 - s``.
        n_components: 2 or 3.
        per_layer: one embedding per layer (the reference's "separate" MDS) instead of one joint
            embedding of all states.
    """
    if n_components not in (2, 3):
        raise ValueError("n_components must be 2 or 3")
    d = np.asarray(dissimilarity.distances(), dtype=np.float64)
    d = np.maximum((d + d.T) / 2, 0.0)
    np.fill_diagonal(d, 0.0)
    labels = dissimilarity.labels
    layers = dissimilarity.layers
    coords: dict[str, np.ndarray] = {}
    steps: dict[str, np.ndarray] = {}
    if per_layer:
        stress: float | dict[str, float] = {}
        for layer in layers:
            idx = [i for i, (name, _) in enumerate(labels) if name == layer]
            steps[layer] = np.array([labels[i][1] for i in idx])
            if len(idx) <= n_components:
                coords[layer] = np.zeros((len(idx), n_components))
                stress[layer] = 0.0  # type: ignore[index]
                continue
            coords[layer], stress[layer] = _mds(  # type: ignore[index]
                d[np.ix_(idx, idx)], n_components, seed, n_init, max_iter
            )
    else:
        emb, stress = _mds(d, n_components, seed, n_init, max_iter)
        for layer in layers:
            idx = [i for i, (name, _) in enumerate(labels) if name == layer]
            coords[layer] = emb[idx]
            steps[layer] = np.array([labels[i][1] for i in idx])
    return Trajectories(coords, steps, stress, joint=not per_layer, kind=dissimilarity.kind)
