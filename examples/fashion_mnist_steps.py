"""The main job: a recurrent model's predictions at every clock step, on shipped test images.

    python examples/fashion_mnist_steps.py [--figure docs/figures/fashion_mnist_steps.png]

Runs offline: the model (``blt_bl_tiny.fashion_mnist``) and the 100 Fashion-MNIST test images
(``blt_models/samples/fashion_mnist``) are both in the package.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

import blt_models as bm


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--figure", default=None, help="save a figure here (needs matplotlib)")
    args = p.parse_args()

    model = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True).eval()
    cfg = model.pretrained_cfg
    # The preprocessing the weights were trained with, from the pretrained config.
    transform = T.Compose([
        T.Resize(cfg.input_size[1:], interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(),                       # scale to [0, 1]
        T.Normalize(cfg.mean, cfg.std),
    ])  # fmt: skip
    folder = Path(bm.__file__).parent / "samples" / "fashion_mnist"
    with open(folder / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    images = torch.stack([transform(Image.open(folder / r["file"]).convert("L")) for r in rows])
    labels = torch.tensor([int(r["label"]) for r in rows])

    with torch.no_grad():
        out = model.forward_timesteps(images)  # logits [R, 100, 10], one row per readout step
    pred = out.logits.argmax(-1)
    accuracy = (pred == labels).float().mean(1) * 100
    print(f"{len(rows)} shipped test images, accuracy per clock step:")
    for step, acc in zip(out.steps.tolist(), accuracy.tolist(), strict=True):
        print(f"  step {step}: {acc:5.1f} %")
    changed = (pred != pred[-1]).any(0).nonzero().flatten().tolist()
    print(f"images whose prediction changes over time: {len(changed)}")
    for i in changed[:10]:
        names = " -> ".join(cfg.class_names[c] for c in pred[:, i].tolist())
        print(f"  {rows[i]['file']} ({rows[i]['class_name']}): {names}")

    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        prob = out.logits.softmax(-1)[:, torch.arange(len(labels)), labels]  # [R, N] p(true class)
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
        a.plot(out.steps, accuracy, "o-")
        a.set(xlabel="clock step", ylabel="top-1 accuracy (%)", title=f"{cfg.name}: {len(rows)} test images")
        order = torch.argsort(labels * 10 + prob[0])  # by class
        im = b.imshow(prob[:, order], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                      extent=(0, len(rows), out.steps[-1] + 0.5, out.steps[0] - 0.5))  # fmt: skip
        b.set(xlabel="image (grouped by class)", ylabel="clock step", title="p(true class) per step")
        b.set_xticks([10 * k + 5 for k in range(10)], [n.split("/")[0] for n in cfg.class_names],
                     rotation=45, fontsize=7)  # fmt: skip
        fig.colorbar(im, ax=b)
        fig.tight_layout()
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
