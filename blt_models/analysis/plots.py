"""PNG figures of the analyses, with matplotlib's Agg canvas (no display, no pyplot state).

Every function takes a result object and a path, writes the figure and returns the path. Time axes
are labelled in model time: "clock step t", the same step for every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._data import StateMatrix

__all__ = [
    "plot_decoding",
    "plot_rdm_frames",
    "plot_readout",
    "plot_rsa",
    "plot_selectivity",
    "plot_state_matrix",
    "plot_temporal_tuning",
    "plot_trajectories",
]

TIME_LABEL = "model time (clock step t)"

#: What an RDM's entries are, by rsatoolbox's ``dissimilarity_measure``: the colourbar label.
DISSIMILARITY_LABELS = {
    "correlation": "1 - Pearson r",
    "cosine": "1 - cosine similarity",
    "squared euclidean": "squared Euclidean distance / features",
    "euclidean": "Euclidean distance",
}


def dissimilarity_label(measure: str) -> str:
    """``"1 - Pearson r"`` for ``"correlation"``...; an unknown measure as it is."""
    return DISSIMILARITY_LABELS.get(str(measure), str(measure))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panels(n: int, panel_height: float) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` panels, three per row (unused grid cells hidden)."""
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig = _figure(3.6 * cols, panel_height * rows)
    grid = fig.subplots(rows, cols, squeeze=False).ravel()
    for extra in grid[n:]:
        extra.set_visible(False)
    return fig, list(grid[:n])


def _integer_steps(*axes: Any) -> None:
    """Clock steps are integers: no 2.5 on a time axis."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _suptitle(fig: Figure, text: str) -> None:
    """The figure's title, wrapped to the figure's width (a long title is never clipped)."""
    import textwrap

    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 13)), fontsize=10)


def _save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


# ------------------------------------------------------------------------------------------ RDMs
def _class_blocks(labels: np.ndarray) -> tuple[list[int], list[float], list[Any]]:
    """Boundaries (index where a class starts), block centres and the class of each block, for
    labels already in display order."""
    starts = [i for i in range(len(labels)) if i == 0 or labels[i] != labels[i - 1]]
    ends = starts[1:] + [len(labels)]
    centres = [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)]
    return starts, centres, [labels[i] for i in starts]


def plot_rdm_frames(
    rdms: Any,
    path: str | Path,
    layers: Sequence[str] | None = None,
    order: Sequence[int] | None = None,
    labels: Sequence[Any] | None = None,
    class_names: Sequence[str] | dict[Any, str] | None = None,
    scale: str = "shared",
    cmap: str = "magma",
    title: str | None = None,
) -> Path:
    """An "RDM movie" as a frame grid: one row per layer, one column per clock step.

    Args:
        rdms: rsatoolbox ``RDMs`` from [`compute_rdms`][blt_models.analysis.compute_rdms].
        order: order of the images for the rows/columns; default: sorted by ``labels`` (stable)
            when labels are given, else as computed.
        labels: class of every image (in the RDMs' order); draws class boundaries and labels
            the class blocks on the first column and the bottom row. Default: the RDMs'
            ``"label"`` pattern descriptor ([`compute_rdms`][blt_models.analysis.compute_rdms]
            adds each image's subfolder there for features extracted from a folder).
        class_names: names for the label values (a sequence indexed by label, or a mapping).
        scale: ``"shared"`` (default): one colour scale for every frame, so changes in the
            magnitude of dissimilarities over time stay visible; ``"layer"``: one scale per row;
            ``"frame"``: every RDM divided by its own maximum (only the pattern is compared).
    """
    if scale not in ("shared", "layer", "frame"):
        raise ValueError(f"scale must be 'shared', 'layer' or 'frame'; got {scale!r}")
    desc = rdms.rdm_descriptors
    all_layers = list(dict.fromkeys(str(x) for x in desc["layer"]))
    layers = list(layers) if layers is not None else all_layers
    steps = sorted(
        {int(s) for s, name in zip(desc["step"], desc["layer"], strict=True) if str(name) in layers}
    )
    mats = rdms.get_matrices()
    n_images = mats.shape[-1]
    lab = None
    if labels is None:
        labels = getattr(rdms, "pattern_descriptors", {}).get("label")
    if labels is not None:
        lab = np.asarray(to_numpy_labels(labels))
        if lab.shape[0] != n_images:
            raise ValueError(f"{lab.shape[0]} labels for RDMs of {n_images} images")
    if order is not None:
        idx = np.asarray(order)
    elif lab is not None:
        idx = np.argsort(lab, kind="stable")
    else:
        idx = np.arange(n_images)
    frames: dict[tuple[str, int], np.ndarray] = {}
    for k in range(rdms.n_rdm):
        key = (str(desc["layer"][k]), int(desc["step"][k]))
        if key[0] in layers:
            m = mats[k][np.ix_(idx, idx)]
            if scale == "frame":
                top = np.nanmax(m)
                m = m / top if top > 0 else m
            frames[key] = m
    limits: dict[str, tuple[float, float]] = {}
    for layer in layers:
        vals = [m for (name, _), m in frames.items() if scale != "layer" or name == layer]
        hi = max((float(np.nanmax(m)) for m in vals), default=1.0)
        limits[layer] = (0.0, 1.0 if scale == "frame" else hi)
    blocks = _class_blocks(lab[idx]) if lab is not None else None

    def name_of(value: Any) -> str:
        if class_names is None:
            return str(value)
        if isinstance(class_names, dict):
            return str(class_names.get(value, value))
        return str(class_names[int(value)])

    fig = _figure(1.3 * len(steps) + 1.6, 1.3 * len(layers) + 1.0)
    axes = fig.subplots(len(layers), len(steps), squeeze=False)
    images: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        for j, step in enumerate(steps):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            m = frames.get((layer, step))
            if m is not None:
                vmin, vmax = limits[layer]
                images[layer] = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
                if blocks is not None:
                    for b in blocks[0][1:]:
                        ax.axhline(b - 0.5, color="white", lw=0.5)
                        ax.axvline(b - 0.5, color="white", lw=0.5)
            else:
                ax.text(0.5, 0.5, "inactive", ha="center", va="center", fontsize=7,
                        color="0.5", transform=ax.transAxes)  # fmt: skip
                for spine in ax.spines.values():
                    spine.set_color("0.85")
                # The image frames' coordinates, so that class labels line up on every frame.
                ax.set_xlim(-0.5, n_images - 0.5)
                ax.set_ylim(n_images - 0.5, -0.5)
            if i == 0:
                ax.set_title(f"t = {step}", fontsize=9)
            if j == 0:
                ax.set_ylabel(layer, fontsize=9)
            if blocks is not None and j == 0:
                ax.set_yticks(blocks[1], [name_of(v) for v in blocks[2]], fontsize=5)
            if blocks is not None and i == len(layers) - 1:
                ax.set_xticks(blocks[1], [name_of(v) for v in blocks[2]], fontsize=5,
                              rotation=90)  # fmt: skip
    measure = dissimilarity_label(rdms.dissimilarity_measure)
    label = f"{measure} (/ frame max)" if scale == "frame" else measure
    if scale == "layer":
        for i, layer in enumerate(layers):
            if layer in images:
                fig.colorbar(images[layer], ax=list(axes[i]), shrink=0.8, label=label)
    elif images:
        fig.colorbar(next(iter(images.values())), ax=axes, shrink=0.6, label=label)
    default = f"RDMs ({measure}) over {TIME_LABEL}"
    default += {"shared": ", one colour scale", "layer": ", one colour scale per layer",
                "frame": ", each frame scaled to its maximum"}[scale]  # fmt: skip
    _suptitle(fig, title or default)
    return _save(fig, path)


def to_numpy_labels(labels: Sequence[Any]) -> np.ndarray:
    from ._data import to_numpy

    return to_numpy(labels) if hasattr(labels, "shape") else np.asarray(list(labels))


def _layer_ticks(ax: Any, matrix: StateMatrix) -> None:
    """Layer blocks on both axes, with separators; inside each block a tick per state, labelled
    with its clock step at the block's first and last state (all of them in short blocks)."""
    labels = matrix.labels
    starts, names = [], []
    for i, (layer, _) in enumerate(labels):
        if i == 0 or labels[i - 1][0] != layer:
            starts.append(i)
            names.append(layer)
    ends = starts[1:] + [len(labels)]
    centers = [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)]
    shown = {i for a, b in zip(starts, ends, strict=True)
             for i in (range(a, b) if b - a <= 4 else (a, b - 1))}  # fmt: skip
    steps = [f"{s}" if i in shown else "" for i, (_, s) in enumerate(labels)]
    ax.set_xticks(range(len(labels)), steps, fontsize=6)
    ax.set_yticks(range(len(labels)), steps, fontsize=6)
    ax.tick_params(length=2, pad=1)
    # Layer names on a second axis outside the step numbers.
    for axis, secondary in ((ax.xaxis, ax.secondary_xaxis("bottom")),
                            (ax.yaxis, ax.secondary_yaxis("left"))):  # fmt: skip
        secondary.set_ticks(centers, names, fontsize=8)
        secondary.tick_params(length=0, pad=12)
        if axis is ax.xaxis:
            secondary.set_xlabel("layer, clock step t (time increases within each block)")
            for text in secondary.get_xticklabels():
                text.set_rotation(30)
                text.set_ha("right")
        else:
            secondary.set_ylabel("layer, clock step t")
    for s in starts[1:]:
        ax.axhline(s - 0.5, color="white", lw=0.8)
        ax.axvline(s - 0.5, color="white", lw=0.8)


def plot_state_matrix(
    matrix: StateMatrix,
    path: str | Path,
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """A layers x steps matrix (RDM-of-RDMs, CKA): states ordered layer-major, time inside."""
    fig = _figure(6.5, 5.6)
    ax = fig.add_subplot()
    im = ax.imshow(matrix.values, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    _layer_ticks(ax, matrix)
    fig.colorbar(im, ax=ax, label=matrix.kind)
    ax.set_title(title or matrix.kind, fontsize=10)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ trajectories
def plot_trajectories(
    traj: Any,
    path: str | Path,
    title: str | None = None,
    annotate: bool = True,
    elev: float = 20,
    azim: float = -60,
) -> Path:
    """2-D or 3-D MDS trajectories: one colour per layer, opacity increasing with model time."""
    d = traj.n_components
    layers = list(traj.coords)
    colours = _colours(len(layers))
    if traj.joint or d == 3:
        fig = _figure(6.5, 5.5)
        if d == 3:
            from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the projection)

            ax_list = [fig.add_subplot(projection="3d")] * len(layers)
        else:
            ax_list = [fig.add_subplot()] * len(layers)
    else:
        fig, ax_list = _panels(len(layers), 3.3)
    for ax, layer, colour in zip(ax_list, layers, colours, strict=True):
        xy = traj.coords[layer]
        steps = traj.steps[layer]
        n = len(steps)
        alphas = np.linspace(0.25, 1.0, n) if n > 1 else np.ones(1)
        ax.plot(*xy.T, "-", color=colour, lw=1.2, alpha=0.6, label=layer)
        for k in range(n):
            ax.scatter(*xy[k], color=colour, alpha=float(alphas[k]), s=28, edgecolors="none")
        if annotate and n:
            for k in (0, n - 1):
                ax.text(*xy[k], f"t={steps[k]}", fontsize=7, color=colour)
        if not traj.joint and d == 2:
            ax.set_title(layer, fontsize=9)
    for ax in dict.fromkeys(ax_list):
        ax.set_xlabel("MDS 1")
        ax.set_ylabel("MDS 2")
        if d == 3:
            ax.set_zlabel("MDS 3")
            ax.view_init(elev=elev, azim=azim)
    if traj.joint or d == 3:
        ax_list[0].legend(
            fontsize=8,
            loc="best",
            title="layer (dots: clock step, darker = later)",
            title_fontsize=7,
        )
    _suptitle(fig, title or f"Trajectories through model time ({traj.kind})")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- curves
def plot_rsa(result: Any, path: str | Path, title: str | None = None) -> Path:
    """RSA over model time: one line per layer (one bin) or a states x bins heat map per layer."""
    layers = result.layers
    colours = _colours(len(layers))
    nb = len(result.bins)
    if nb == 1:
        fig = _figure(6.5, 4.2)
        ax = fig.add_subplot()
        for layer, colour in zip(layers, colours, strict=True):
            steps, scores = result.layer(layer)
            ax.plot(steps, scores[:, 0], "-o", color=colour, ms=3, label=layer)
            if result.sem is not None:
                idx = [i for i, (name, _) in enumerate(result.labels) if name == layer]
                sem = result.sem[idx, 0]
                ax.fill_between(
                    steps, scores[:, 0] - sem, scores[:, 0] + sem, color=colour, alpha=0.2
                )
        lo, hi = result.noise_ceiling[0]
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axhspan(lo, hi, color="0.8", alpha=0.5, label="noise ceiling")
        ax.set_xlabel(TIME_LABEL)
        ax.set_ylabel(f"RDM similarity ({result.method})")
        ax.legend(fontsize=8)
    else:
        fig, axes = _panels(len(layers), 3.0)
        vmin, vmax = np.nanmin(result.scores), np.nanmax(result.scores)
        im = None
        for ax, layer in zip(axes, layers, strict=True):
            steps, scores = result.layer(layer)
            im = ax.imshow(
                scores,
                aspect="auto",
                origin="lower",
                vmin=vmin,
                vmax=vmax,
                cmap="viridis",
                extent=(-0.5, nb - 0.5, steps[0] - 0.5, steps[-1] + 0.5),
            )
            ax.set_title(layer, fontsize=9)
            ax.set_xlabel("neural time bin")
            ax.set_ylabel(TIME_LABEL)
            ticks = np.arange(nb)
            ax.set_xticks(ticks[:: max(1, nb // 6)])
            ax.set_xticklabels([str(result.bins[i]) for i in ticks[:: max(1, nb // 6)]], fontsize=7)
        if im is not None:
            fig.colorbar(im, ax=axes, label=f"RDM similarity ({result.method})")
    compared = result.meta.get("compared") or "model RDMs vs neural RDMs"
    if nb == 1:
        _integer_steps(ax)
        default = f"RSA ({result.method}): {compared}"
    else:
        default = f"RSA ({result.method}): {compared}; rows: clock steps, columns: neural bins"
    _suptitle(fig, title or default)
    return _save(fig, path)


def plot_selectivity(
    result: Any, path: str | Path, decoding: Any = None, title: str | None = None
) -> Path:
    """Fraction of selective units and mean d' over model time (plus decoding, if given)."""
    layers = list(result.dprime)
    colours = _colours(len(layers))
    panels = 3 if decoding is not None else 2
    fig = _figure(4.0 * panels, 3.8)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for layer, colour in zip(layers, colours, strict=True):
        steps = result.steps[layer]
        axes[0].plot(steps, result.fraction[layer], "-o", ms=3, color=colour, label=layer)
        axes[1].plot(
            steps, result.dprime[layer].mean(axis=1), "-o", ms=3, color=colour, label=layer
        )
    axes[0].set_ylabel(f"fraction of units with d' > {result.threshold:g}")
    axes[0].set_ylim(0, 1.02)  # a proportion: the whole range, not a zoom on the differences
    axes[1].set_ylabel("mean d' over units")
    axes[1].axhline(0, color="0.6", lw=0.8)
    if decoding is not None:
        _decoding_axes(axes[2], decoding, layers, colours)
    for ax in axes:
        ax.set_xlabel(TIME_LABEL)
    _integer_steps(*axes)
    axes[0].legend(fontsize=8)
    _suptitle(fig, title or f"Selectivity over model time (units: {result.units})")
    return _save(fig, path)


def _decoding_axes(ax: Any, decoding: Any, layers: Sequence[str] | None, colours: Any) -> None:
    layers = list(layers) if layers is not None else list(decoding.accuracy)
    if colours is None:
        colours = _colours(len(layers))
    for layer, colour in zip(layers, colours, strict=True):
        if layer not in decoding.accuracy:
            continue
        steps = decoding.steps[layer]
        acc, sd = decoding.accuracy[layer], decoding.std[layer]
        ax.plot(steps, acc, "-o", ms=3, color=colour, label=layer)
        ax.fill_between(steps, acc - sd, acc + sd, color=colour, alpha=0.25, lw=0)
    ax.axhline(decoding.chance, color="0.5", ls="--", lw=0.8, label="chance")
    ax.fill_between([], [], [], color="0.6", alpha=0.4, lw=0, label="± 1 SD over folds")
    ax.set_ylabel(f"decoding accuracy ({decoding.folds}-fold CV)")
    ax.set_ylim(0, 1.02)


def plot_decoding(decoding: Any, path: str | Path, title: str | None = None) -> Path:
    """Cross-validated decoding accuracy per layer over model time."""
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    _decoding_axes(ax, decoding, None, None)
    ax.set_xlabel(TIME_LABEL)
    _integer_steps(ax)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title or "Linear decoding over model time", fontsize=10)
    return _save(fig, path)


def plot_readout(curves: Any, path: str | Path, title: str | None = None) -> Path:
    """Readout accuracy (if labels were given) and entropy over model time."""
    fig = _figure(9.0 if curves.accuracy is not None else 5.0, 3.8)
    axes = fig.subplots(1, 2 if curves.accuracy is not None else 1, squeeze=False)[0]
    ax_e = axes[-1]
    fixed = np.asarray(curves.image_independent, dtype=bool)
    live = ~fixed
    for ax in axes:  # readouts that do not depend on the image: shaded, not drawn
        for step in np.asarray(curves.steps)[fixed]:
            ax.axvspan(step - 0.5, step + 0.5, color="0.9", lw=0)
    if fixed.any():
        axes[0].fill_between([], [], [], color="0.9", label="readout independent of the image")
    steps = np.asarray(curves.steps)[live]
    if curves.accuracy is not None:
        ax = axes[0]
        ax.plot(steps, np.asarray(curves.accuracy)[live], "-o", ms=3, label="top-1")
        if curves.topk_accuracy is not None:
            ax.plot(steps, np.asarray(curves.topk_accuracy)[live], "-s", ms=3,
                    label=f"top-{curves.k}")  # fmt: skip
        if curves.num_classes:
            ax.axhline(1 / curves.num_classes, color="0.5", ls="--", lw=0.8, label="chance")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_xlabel(TIME_LABEL)
        ax.legend(fontsize=8)
    ax_e.plot(steps, np.asarray(curves.entropy)[live], "-o", ms=3, color="C3", label="mean entropy")
    if curves.num_classes:
        ax_e.axhline(np.log(curves.num_classes), color="0.5", ls="--", lw=0.8, label="uniform")
    ax_e.set_ylabel("softmax entropy (nats)")
    ax_e.set_xlabel(TIME_LABEL)
    ax_e.legend(fontsize=8)
    _integer_steps(*axes)
    _suptitle(fig, title or "Readout over model time")
    return _save(fig, path)


def plot_temporal_tuning(result: Any, path: str | Path, title: str | None = None) -> Path:
    """Temporal tuning: preferred vs non-preferred time courses, d' with its confidence band,
    and the onset latency of every layer (from [`temporal_tuning`][blt_models.analysis.temporal_tuning])."""
    layers = list(result.steps)
    colours = _colours(len(layers))
    fig = _figure(13.0, 3.9)
    ax_r, ax_d, ax_o = fig.subplots(1, 3)
    for layer, colour in zip(layers, colours, strict=True):
        steps = result.steps[layer]
        ax_r.plot(steps, result.preferred_response[layer].mean(1), "-o", ms=3, color=colour,
                  label=layer)  # fmt: skip
        ax_r.plot(steps, result.nonpreferred_response[layer].mean(1), "--", color=colour)
        ax_d.plot(steps, result.dprime_mean[layer], "-o", ms=3, color=colour, label=layer)
        lo, hi = result.dprime_ci[layer].T
        ax_d.fill_between(steps, lo, hi, color=colour, alpha=0.2)
    ax_r.set_ylabel("mean response (solid: preferred, dashed: others)")
    ax_d.axhline(
        result.threshold, color="0.5", ls="--", lw=0.8, label=f"threshold {result.threshold:g}"
    )
    ax_d.set_ylabel(f"d' preferred vs others ({100 * result.confidence:g}% band)")
    onsets = [result.onset[layer] for layer in layers]
    ax_o.bar(range(len(layers)), [o if o is not None else 0 for o in onsets], color=colours)
    for i, o in enumerate(onsets):
        ax_o.text(i, (o or 0) + 0.1, "none" if o is None else str(o), ha="center", fontsize=8)
    ax_o.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax_o.set_ylabel("onset latency (clock step)")
    from matplotlib.ticker import MaxNLocator

    ax_o.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_r, ax_d):
        ax.set_xlabel(TIME_LABEL)
    _integer_steps(ax_r, ax_d)
    ax_d.legend(fontsize=7)
    _suptitle(
        fig,
        title or "Category tuning over model time (preferred category chosen on held-out images)",
    )
    return _save(fig, path)
