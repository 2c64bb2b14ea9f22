"""The main job: run the shipped sample stimuli through a model and show its dynamics.

    blt-models demo [--model NAME] [--out DIR]

Prints, for every readout step, the predicted classes and (for labelled samples) the accuracy, and
writes ``activity.png``: the mean activity of every layer at every clock step, next to the
per-step accuracy.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ._clock import ClockedModel

SAMPLES = Path(__file__).parent / "samples" / "fashion_mnist"


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
    """Images -> ``[N, C, H, W]`` as the model's pretrained config says."""
    from .data import create_transform

    transform = create_transform(model)
    return torch.stack([transform(Image.open(p)) for p in paths])


def run_demo(model_name: str = "blt_bl", out_dir: str | Path = "outputs/demo", pretrained: bool = False) -> dict:
    import blt_models as bm

    torch.manual_seed(0)
    model = bm.create_model(model_name, pretrained=pretrained).eval()
    samples = load_samples()
    x = preprocess(samples.paths, model)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers=list(model.layer_names))
    trained = model.num_classes == len(samples.class_names) and pretrained
    print(f"{model_name}: {len(samples.paths)} sample images {tuple(x.shape[1:])}, "
          f"{out.timesteps} steps, readouts at steps {out.steps.tolist()}")  # fmt: skip
    if not trained:
        print("(untrained weights: readouts are arbitrary; the layer dynamics are still the model's)")
    accuracy = []
    for row, step in enumerate(out.steps.tolist()):
        probs = out.logits[row].softmax(-1)
        pred = probs.argmax(-1)
        line = f"step {step:2d}: mean max-prob {probs.max(-1).values.mean():.3f}"
        if trained:
            acc = (pred == samples.labels).float().mean().item()
            accuracy.append(acc)
            first = samples.class_names[pred[0]]
            line += f", accuracy {100 * acc:5.1f}%, image 0 -> {first} (true: {samples.class_names[samples.labels[0]]})"
        else:
            line += f", predictions of images 0-4: {pred[:5].tolist()}"
        print(line)
    activity = {
        name: feats.flatten(2).mean(-1).mean(-1) for name, feats in out.features.items()
    }  # [T] mean activity per step
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = out_dir / "activity.png"
    _plot(activity, out.first_step, out.steps.tolist(), accuracy, model_name, figure)
    print(f"wrote {figure}")
    return {"activity": activity, "accuracy": accuracy, "figure": figure}


def _plot(activity, first_step, steps, accuracy, title, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 if accuracy else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    for name, values in activity.items():
        t = list(range(len(values)))
        ax.plot(t[first_step[name] :], values[first_step[name] :].tolist(), marker="o", label=name)
    ax.set_xlabel("model time step")
    ax.set_ylabel("mean activation (ReLU output)")
    ax.set_title(f"{title}: layer activity over time")
    ax.legend(fontsize=8)
    if accuracy:
        ax = axes[0, 1]
        ax.plot(steps, [100 * a for a in accuracy], marker="o", color="k")
        ax.set_xlabel("model time step")
        ax.set_ylabel("top-1 accuracy on the samples (%)")
        ax.set_title("readout accuracy over time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
