"""Tuning over model time: face (or any category) selectivity d' and linear decoding per step."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..extract.result import SUMMARY_CLASSES, class_summary
from ._data import as_feature_set, span, summary, to_numpy

__all__ = [
    "DecodingResult",
    "SelectivityResult",
    "TemporalTuning",
    "decode_over_time",
    "dprime",
    "face_selectivity",
    "temporal_tuning",
    "unit_responses",
]

UNITS = ("channels", "flatten")


def unit_responses(x: Any, units: str = "channels") -> np.ndarray:
    """Responses ``[N, T, U]`` of units from features ``[N, T, C, ...]``.

    ``units="channels"``: one unit per feature channel, averaged over space (position-invariant
    "neurons", as the reference's spatially averaged top layers); ``"flatten"``: every channel at
    every position is a unit.
    """
    x = to_numpy(x)
    if x.ndim < 3:
        raise ValueError(f"expected features [N, T, ...]; got shape {x.shape}")
    if units == "channels":
        if x.ndim > 3:
            x = x.reshape(x.shape[0], x.shape[1], x.shape[2], -1).mean(axis=-1)
        return x
    if units == "flatten":
        return x.reshape(x.shape[0], x.shape[1], -1)
    raise ValueError(f"units must be one of {UNITS}; got {units!r}")


def _layer_responses(
    fs: Any, layer: str, include_inactive: bool, units: str
) -> tuple[list[int], np.ndarray]:
    """The clock steps analysed for ``layer`` and its unit responses ``[N, len(steps), U]``."""
    steps = fs.active_steps(layer, include_inactive)
    slots = [int(np.flatnonzero(fs.steps[layer] == s)[0]) for s in steps]
    return steps, unit_responses(fs.features[layer][:, slots], units)


def dprime(responses: Any, is_target: Any) -> np.ndarray:
    """Per-unit d' between target (e.g. face) and non-target stimuli, along axis 0.

    ``d' = (mean_target - mean_other) / sqrt((var_target + var_other) / 2)`` (the reference's
    definition; population variances). Units with zero variance in both groups get d' = 0.

    Args:
        responses: ``[N, ...]`` responses of N stimuli.
        is_target: ``[N]`` booleans (or 0/1).

    Returns:
        d' with the shape ``responses.shape[1:]``.
    """
    r = to_numpy(responses).astype(np.float64)
    t = to_numpy(is_target).astype(bool).reshape(-1)
    if t.shape[0] != r.shape[0]:
        raise ValueError(f"{t.shape[0]} labels for {r.shape[0]} stimuli")
    if t.all() or not t.any():
        raise ValueError("is_target needs both target and non-target stimuli")
    a, b = r[t], r[~t]
    diff = a.mean(axis=0) - b.mean(axis=0)
    sd = np.sqrt((a.var(axis=0) + b.var(axis=0)) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(sd > 0, diff / np.where(sd > 0, sd, 1.0), 0.0)
    return d


@dataclass
class SelectivityResult:
    """Selectivity of units per layer and clock step.

    Attributes:
        dprime: ``{layer: [T_layer, U]}`` d' of every unit at every active step.
        steps: ``{layer: [T_layer]}`` clock steps.
        fraction: ``{layer: [T_layer]}`` fraction of units with d' > threshold.
        threshold: the selectivity threshold.
        units: how units were formed (``channels`` / ``flatten``).
    """

    dprime: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    fraction: dict[str, np.ndarray]
    threshold: float
    units: str = "channels"

    def selective_units(self, layer: str, step: int) -> np.ndarray:
        """Indices of units with d' > threshold at ``step``."""
        i = int(np.flatnonzero(self.steps[layer] == step)[0])
        return np.flatnonzero(self.dprime[layer][i] > self.threshold)

    def mean_dprime(self, layer: str) -> np.ndarray:
        return self.dprime[layer].mean(axis=1)

    def __repr__(self) -> str:
        rows = []
        for layer, fraction in self.fraction.items():
            steps = self.steps[layer]
            best = int(np.argmax(fraction)) if len(fraction) else 0
            rows.append(f"{layer}: steps {span(steps)}, {self.dprime[layer].shape[1]} units, "
                        + (f"max fraction {fraction[best]:.3f} at step {int(steps[best])}"
                           if len(fraction) else "no active step"))  # fmt: skip
        return summary("SelectivityResult", f"d' > {self.threshold:g}, {self.units}", rows)


def face_selectivity(
    features: Any,
    is_face: Any,
    threshold: float = 0.2,
    units: str = "channels",
    layers: Sequence[str] | str | None = None,
    include_inactive: bool = False,
) -> SelectivityResult:
    """Face selectivity over model time: d' of every unit at every step, fraction above threshold.

    Works for any binary category (``is_face`` is just the target mask). d' is computed per
    clock step (the reference's ``calc_dprime_from_dataset`` averaged responses over steps and
    discarded its z-scoring; per-unit z-scoring would not change d' anyway).

    Args:
        features: ``{layer: [N, T, ...]}``, an extraction result or a ``TimestepOutput``.
        is_face: ``[N]`` booleans, True for face (target) stimuli; or the name of the target
            class among the features' labels (``"faces"``: the images of the subfolder
            ``faces/``).
        threshold: d' above which a unit counts as selective (reference default 0.2).
        units: ``"channels"`` (spatial mean per channel) or ``"flatten"``.
    """
    fs = as_feature_set(features, layers)
    if isinstance(is_face, str):
        classes = fs.labels_or(None, f"face_selectivity(is_face={is_face!r})")
        if is_face not in set(classes.tolist()):
            raise InputError(
                f"is_face={is_face!r} is not one of the classes {sorted(set(classes.tolist()))}"
            )
        is_face = classes == is_face
    out_d: dict[str, np.ndarray] = {}
    out_s: dict[str, np.ndarray] = {}
    out_f: dict[str, np.ndarray] = {}
    for layer in fs.layers:
        steps, resp = _layer_responses(fs, layer, include_inactive, units)  # resp [N, T, U]
        d = dprime(resp, is_face)  # [T, U]
        out_d[layer] = d
        out_s[layer] = np.array(steps)
        out_f[layer] = (d > threshold).mean(axis=1)
    return SelectivityResult(out_d, out_s, out_f, float(threshold), units)


@dataclass
class DecodingResult:
    """Cross-validated linear decoding accuracy per layer and clock step.

    Attributes:
        accuracy: ``{layer: [T_layer]}`` mean accuracy over folds.
        std: ``{layer: [T_layer]}`` standard deviation over folds.
        steps: ``{layer: [T_layer]}`` clock steps.
        chance: accuracy of always predicting the most frequent class.
        folds: number of cross-validation folds.
        classes: ``{class: number of images}`` of the labels decoded (given, or the features'
            subfolders); the repr names them.
    """

    accuracy: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]
    chance: float
    folds: int
    classes: dict[Any, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        rows = []
        for layer, acc in self.accuracy.items():
            steps = self.steps[layer]
            best = int(np.argmax(acc))
            rows.append(
                f"{layer}: steps {int(steps[0])}..{int(steps[-1])}, best {acc[best]:.3f} at "
                f"step {int(steps[best])}"
            )
        classes = f", {class_summary(Counter(self.classes).elements())}" if self.classes else ""
        return (
            f"DecodingResult({self.folds}-fold CV{classes}, chance {self.chance:.3f}; "
            + "; ".join(rows)
            + ")"
        )


def decode_over_time(
    features: Any,
    labels: Any = None,
    cv: int = 5,
    seed: int = 0,
    units: str = "flatten",
    classifier: Any = None,
    layers: Sequence[str] | str | None = None,
    include_inactive: bool = False,
    max_features: int | None = 4096,
) -> DecodingResult:
    """Linear decoding of ``labels`` from each ``(layer, step)`` state, stratified k-fold CV.

    Args:
        features: ``{layer: [N, T, ...]}``, an extraction result or a ``TimestepOutput``.
        labels: ``[N]`` class labels (binary face / non-face, or identities, categories...);
            default: the features' own (``result.labels``: each image's subfolder).
        cv: number of stratified folds (shuffled with ``seed``).
        units: ``"flatten"`` (all units) or ``"channels"`` (spatial mean per channel).
        classifier: a scikit-learn estimator; default standardisation + ridge classifier with its
            penalty chosen by efficient leave-one-out inside each training fold
            (``RidgeClassifierCV``; fast when units outnumber stimuli).
        max_features: if the state has more units, a fixed random subset (seeded) is used to keep
            the fit fast; None uses all.
    """
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fs = as_feature_set(features, layers)
    y = fs.labels_or(labels, "decode_over_time")
    names, counts = np.unique(y, return_counts=True)
    if counts.size < 2:
        raise InputError(f"decoding needs at least two classes; the labels have {class_summary(y)}")
    folds = int(min(cv, counts.min()))
    if folds < 2:
        raise ValueError("every class needs at least 2 stimuli for cross-validation")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if classifier is None:
        classifier = make_pipeline(
            StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-1, 5, 7))
        )
    rng = np.random.default_rng(seed)
    acc: dict[str, np.ndarray] = {}
    std: dict[str, np.ndarray] = {}
    steps_out: dict[str, np.ndarray] = {}
    for layer in fs.layers:
        steps, resp = _layer_responses(fs, layer, include_inactive, units)
        if max_features is not None and resp.shape[2] > max_features:
            keep = np.sort(rng.choice(resp.shape[2], size=max_features, replace=False))
            resp = resp[:, :, keep]
        a, s = [], []
        for i in range(resp.shape[1]):
            scores = cross_val_score(classifier, resp[:, i].astype(np.float64), y, cv=splitter)
            a.append(scores.mean())
            s.append(scores.std())
        acc[layer], std[layer], steps_out[layer] = np.array(a), np.array(s), np.array(steps)
    classes = {name.item(): int(count) for name, count in zip(names, counts, strict=True)}
    return DecodingResult(acc, std, steps_out, float(counts.max() / counts.sum()), folds, classes)


# ------------------------------------------------------------------------- temporal tuning
@dataclass
class TemporalTuning:
    """Category tuning of units over model time, per layer.

    Each unit's preferred category is chosen on one half of the images of every category (the
    *selection* half: its largest mean response over the active steps); time courses and d' are
    measured on the other half (the *test* half), so that noise that picked the preferred
    category does not inflate its selectivity.

    Attributes:
        steps: ``{layer: [T_layer]}`` clock steps (the layer's active steps).
        preferred: ``{layer: [U]}`` preferred category of every unit (a value of ``categories``).
        preferred_response: ``{layer: [T_layer, U]}`` mean test response to the preferred
            category.
        nonpreferred_response: ``{layer: [T_layer, U]}`` mean test response to the other ones.
        dprime: ``{layer: [T_layer, U]}`` d' of preferred vs non-preferred test images.
        dprime_mean: ``{layer: [T_layer]}`` d' averaged over units.
        dprime_ci: ``{layer: [T_layer, 2]}`` bootstrap confidence band of ``dprime_mean``
            (resampling test images within each category).
        onset: ``{layer: step or None}``: onset latency, the first clock step at which the
            lower confidence bound of ``dprime_mean`` exceeds ``threshold``.
        threshold, confidence, categories, units: the settings.
    """

    steps: dict[str, np.ndarray]
    preferred: dict[str, np.ndarray]
    preferred_response: dict[str, np.ndarray]
    nonpreferred_response: dict[str, np.ndarray]
    dprime: dict[str, np.ndarray]
    dprime_mean: dict[str, np.ndarray]
    dprime_ci: dict[str, np.ndarray]
    onset: dict[str, int | None]
    threshold: float
    confidence: float
    categories: tuple[Any, ...]
    units: str = "channels"

    def __repr__(self) -> str:
        rows = [
            f"{layer}: onset {'none' if self.onset[layer] is None else self.onset[layer]}, "
            f"peak d' {self.dprime_mean[layer].max():.2f}"
            for layer in self.steps
        ]
        names = [str(c) for c in self.categories[:SUMMARY_CLASSES]]
        more = len(self.categories) - len(names)
        categories = ", ".join(names + ([f"... ({more} more)"] if more else []))
        return (
            f"TemporalTuning({len(self.categories)} categories ({categories}), threshold "
            f"{self.threshold:g}; " + "; ".join(rows) + ")"
        )


def _split_halves(labels: np.ndarray, categories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alternate images of every category (in their order) into selection and test halves."""
    select = np.zeros(len(labels), dtype=bool)
    for c in categories:
        idx = np.flatnonzero(labels == c)
        if len(idx) < 4:
            raise ValueError(
                f"category {c!r} has {len(idx)} images; temporal_tuning needs >= 4 per category "
                "(two to choose preferred categories, two to measure them)"
            )
        select[idx[::2]] = True
    return select, ~select


def _preferred_dprime(resp: np.ndarray, labels: np.ndarray, pref: np.ndarray,
                      categories: np.ndarray) -> np.ndarray:  # fmt: skip
    """d' ``[T, U]`` of each unit's preferred category vs the rest; ``resp`` is ``[N, T, U]``."""
    out = np.zeros(resp.shape[1:])
    for ci, c in enumerate(categories):
        cols = pref == ci
        if cols.any():
            out[:, cols] = dprime(resp[:, :, cols], labels == c)
    return out


def temporal_tuning(
    features: Any,
    labels: Any = None,
    threshold: float = 0.5,
    units: str = "channels",
    layers: Sequence[str] | str | None = None,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> TemporalTuning:
    """Per-unit response time courses (preferred vs non-preferred category), d' over model time
    with confidence bands, and the onset latency of selectivity in every layer.

    Args:
        features: ``{layer: [N, T, ...]}``, an extraction result or a ``TimestepOutput``.
        labels: ``[N]`` category of every image (at least 4 images per category); default: the
            features' own (``result.labels``: each image's subfolder).
        threshold: d' that the lower confidence bound must exceed for the onset.
        units: ``"channels"`` (spatial mean per channel) or ``"flatten"``.
        n_bootstrap: resamples of the test images for the confidence band.
        confidence: width of the band (0.95: the 2.5 and 97.5 percentiles).

    Returns:
        [`TemporalTuning`][blt_models.analysis.TemporalTuning].
    """
    fs = as_feature_set(features, layers)
    y = fs.labels_or(labels, "temporal_tuning")
    categories = np.unique(y)
    if len(categories) < 2:
        raise ValueError("temporal_tuning needs at least two categories")
    select, test = _split_halves(y, categories)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y[test] == c) for c in categories]
    boot = [np.concatenate([rng.choice(g, len(g)) for g in groups]) for _ in range(n_bootstrap)]
    lo_q, hi_q = 50 * (1 - confidence), 50 * (1 + confidence)
    out: dict[str, dict[str, Any]] = {k: {} for k in
                                      ("steps", "pref", "pr", "npr", "d", "dm", "ci", "onset")}  # fmt: skip
    for layer in fs.layers:
        steps, resp = _layer_responses(fs, layer, False, units)  # [N, T, U]
        means = np.stack([resp[select & (y == c)].mean(axis=(0, 1)) for c in categories])
        pref = means.argmax(axis=0)  # [U], index into categories
        r_test, y_test = resp[test], y[test]
        is_pref = y_test[:, None] == categories[pref][None, :]  # [N_test, U]
        weight = is_pref[:, None, :]
        pr = (r_test * weight).sum(0) / np.maximum(weight.sum(0), 1)
        npr = (r_test * ~weight).sum(0) / np.maximum((~weight).sum(0), 1)
        d = _preferred_dprime(r_test, y_test, pref, categories)
        dm = d.mean(axis=1)
        samples = np.stack([
            _preferred_dprime(r_test[b], y_test[b], pref, categories).mean(axis=1) for b in boot
        ]) if boot else dm[None]  # fmt: skip
        ci = np.stack([np.percentile(samples, lo_q, axis=0), np.percentile(samples, hi_q, axis=0)],
                      axis=1)  # fmt: skip
        above = np.flatnonzero(ci[:, 0] > threshold)
        for key, value in (("steps", np.array(steps)), ("pref", categories[pref]), ("pr", pr),
                           ("npr", npr), ("d", d), ("dm", dm), ("ci", ci),
                           ("onset", int(steps[above[0]]) if len(above) else None)):  # fmt: skip
            out[key][layer] = value
    return TemporalTuning(
        steps=out["steps"], preferred=out["pref"], preferred_response=out["pr"],
        nonpreferred_response=out["npr"], dprime=out["d"], dprime_mean=out["dm"],
        dprime_ci=out["ci"], onset=out["onset"], threshold=float(threshold),
        confidence=float(confidence), categories=tuple(categories.tolist()), units=units,
    )  # fmt: skip
