"""The main job: the shipped sample images through a trained recurrent model, step by step.

    blt-models demo [--model NAME] [--out DIR]

Runs offline: the default model, ``blt_bl_tiny.fashion_mnist`` (trained on Fashion-MNIST with
``examples/train``), and the 100 Fashion-MNIST test images in ``blt_models/samples`` both ship in
the package. Prints the accuracy at every readout step and the images whose answer changes over
time, and writes ``activity.png``: the mean activity of every layer at every clock step, the
accuracy over steps, and the probability of the true class over steps for every image.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ._clock import ClockedModel
from ._optional import require
from .errors import SaveTargetError

SAMPLES = Path(__file__).parent / "samples" / "fashion_mnist"
DEFAULT_MODEL = "blt_bl_tiny.fashion_mnist"


@dataclass
class Samples:
    """The shipped Fashion-MNIST test images: file paths, labels and class names."""

    paths: list[Path]
    labels: torch.Tensor
    class_names: tuple[str, ...]


def load_samples(folder: Path = SAMPLES) -> Samples:
    with open(folder / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names: dict[int, str] = {int(r["label"]): r["class_name"] for r in rows}
    return Samples(
        paths=[folder / r["file"] for r in rows],
        labels=torch.tensor([int(r["label"]) for r in rows]),
        class_names=tuple(names[i] for i in sorted(names)),
    )


def preprocess(paths: list[Path], model: ClockedModel) -> torch.Tensor:
    """Images -> ``[N, C, H, W]`` with the preprocessing of the model's pretrained config."""
    from .data import create_transform

    transform = create_transform(model)
    return torch.stack([transform(Image.open(p)) for p in paths])


def run_demo(
    model_name: str = DEFAULT_MODEL,
    out_dir: str | Path = "outputs/demo",
    pretrained: bool | None = None,
) -> dict[str, Any]:
    """Run the demo; ``pretrained`` defaults to True when the name is an ``arch.tag`` with weights."""
    import blt_models as bm

    # Fail before the model runs, not after its results are printed.
    require("matplotlib", "blt-models demo (its figure, activity.png)")
    out_dir = Path(out_dir)
    figure = out_dir / "activity.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SaveTargetError(
            f"the demo's output folder {str(out_dir)!r} is (or lies in) a file, not a folder: "
            "name a folder (--out DIR), e.g. outputs/demo"
        ) from None
    if figure.exists() and not figure.is_file():
        raise SaveTargetError(f"{str(figure)!r} exists and is not a file: remove it, or pass --out")
    if pretrained is None:
        pretrained = model_name in bm.list_pretrained()
    torch.manual_seed(0)
    model = bm.create_model(model_name, pretrained=pretrained).eval()
    samples = load_samples()
    x = preprocess(samples.paths, model)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers=list(model.layer_names))
    print(
        f"{model_name}: {len(samples.paths)} Fashion-MNIST test images {tuple(x.shape[1:])}, "
        f"{out.timesteps} clock steps, readouts at steps {out.steps.tolist()}"
    )
    labelled = pretrained and model.num_classes == len(samples.class_names)
    if not labelled:
        print("(untrained weights: the readouts are arbitrary; the layer dynamics are the model's)")
    pred = out.logits.argmax(-1)  # [R, N]
    accuracy = (pred == samples.labels).float().mean(1).tolist() if labelled else []
    for row, step in enumerate(out.steps.tolist()):
        confidence = out.logits[row].softmax(-1).max(-1).values.mean().item()
        line = f"  step {step:2d}: mean confidence {confidence:.3f}"
        if labelled:
            line += f", accuracy {100 * accuracy[row]:5.1f}%"
        print(line)
    if labelled:
        changed = (pred != pred[-1]).any(0).nonzero().flatten().tolist()
        print(f"images whose answer changes over time: {len(changed)}")
        shown = 8
        for i in changed[:shown]:
            answers = " -> ".join(samples.class_names[c] for c in pred[:, i].tolist())
            truth = samples.class_names[int(samples.labels[i])]
            print(f"  {samples.paths[i].name} ({truth}): {answers}")
        if len(changed) > shown:
            print(f"  ... and {len(changed) - shown} more")
    activity = {name: feats.flatten(2).mean(-1).mean(-1) for name, feats in out.features.items()}
    p_true = (
        out.logits.softmax(-1)[:, torch.arange(len(samples.labels)), samples.labels]
        if labelled
        else None
    )
    # Readouts that are the same for every image (before the image reaches the readout, e.g.
    # CORnet-RT's steps 0-2) are shaded in the figure, not drawn as accuracy.
    fixed = (out.logits - out.logits[:, :1]).abs().amax(dim=(1, 2)) == 0
    title = f"{model_name}: {len(samples.paths)} Fashion-MNIST test images"
    _plot(activity, out.first_step, out.steps.tolist(), accuracy, p_true, title, figure,
          fixed.tolist() if len(samples.paths) > 1 else None, len(samples.class_names))  # fmt: skip
    print(f"wrote {figure}")
    return {
        "activity": activity,
        "accuracy": accuracy,
        "steps": out.steps.tolist(),
        "figure": figure,
    }


def _plot(activity, first_step, steps, accuracy, p_true, title, path, fixed=None, classes=10):
    matplotlib = require("matplotlib", "blt-models demo (its figure, activity.png)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 3 if accuracy else 1
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 3.8), squeeze=False)
    ax = axes[0, 0]
    for name, values in activity.items():
        t0 = first_step[name]
        ax.plot(range(t0, len(values)), values[t0:].tolist(), marker="o", label=name)
    ax.set_xlabel("clock step t")
    ax.set_ylabel("mean activation")
    ax.set_title("layer activity (from each layer's first step)")
    ax.legend(fontsize=8)
    if accuracy:
        live = [i for i in range(len(steps)) if not (fixed and fixed[i])]
        shown = [steps[i] for i in live]
        for ax in axes[0, 1:]:
            for i, step in enumerate(steps):
                if fixed and fixed[i]:
                    ax.axvspan(step - 0.5, step + 0.5, color="0.9", lw=0)
        ax = axes[0, 1]
        ax.plot(shown, [100 * accuracy[i] for i in live], marker="o", color="k", label="top-1")
        ax.axhline(
            100 / classes, color="0.5", ls="--", lw=0.8, label=f"chance ({100 / classes:g}%)"
        )
        ax.set_ylim(0, 100)  # the whole scale: a few points do not look like a jump
        ax.set_xlabel("clock step t (readout steps)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title("readout accuracy")
        ax.legend(fontsize=8, loc="lower right")
        ax = axes[0, 2]
        ax.plot(shown, p_true[live].numpy(), color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(shown, p_true[live].mean(1).numpy(), color="k", linewidth=2, label="mean")
        ax.set_ylim(0, 1)
        ax.set_xlabel("clock step t (readout steps)")
        ax.set_ylabel("p(true class)")
        ax.set_title("evidence for the true class, per image")
        ax.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
