"""Stimuli in time on the packaged BLT: backward masking, presentation duration, a flash.

    python examples/stimuli/run_experiments.py [--n 500] [--out outputs/stimuli] [--assets DIR]

Runs offline on ``blt_bl_tiny.fashion_mnist`` (4 layers, 8 clock steps, readouts at steps 3..7)
with Fashion-MNIST test images: the first ``--n`` of Debian's test set
(``/usr/share/datasets/fashion-mnist``) if it is installed, else the 100 images shipped in the
package. Three experiments, each a few lines of ``blt_models.stimuli``:

1. **Backward masking**: the target from step 0 until a mask appears at SOA 1..5 (and stays to
   the end), with a noise mask and with a different image (of another class) as the mask. Top-1
   accuracy at every readout step vs SOA; the unmasked image for reference.
2. **Presentation duration**: the image on steps ``[0, d)``, blank (mean grey) afterwards, for
   d = 1..5. Accuracy at every readout step vs d. (A frame at step s first reaches the readout
   layer at s + 3, so on an 8-step clock nothing from step 5 on can change a readout: SOA 5 and
   d = 5 equal the static image exactly.)
3. **Flash**: the image for one step (step 0), then blank. The response of every layer over time
   (mean activation, and the difference from a blank-only run per layer), which shows the
   flash reaching layer k at step ``first_step(k)`` and fading after it.

Writes ``masking.png``, ``duration.png``, ``flash.png`` and ``results.json`` to ``--out``; with
``--assets`` also the figures for the docs page.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import blt_models as bm
from blt_models.demo import load_samples, preprocess
from blt_models.stimuli import BackwardMask, Presentation

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MODEL = "blt_bl_tiny.fashion_mnist"


def load_images(model: bm.ClockedModel, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` preprocessed test images ``[n, 1, 32, 32]``, their labels, and where they came from."""
    images_file = FASHION_MNIST / "t10k-images-idx3-ubyte.gz"
    labels_file = FASHION_MNIST / "t10k-labels-idx1-ubyte.gz"
    if images_file.exists() and labels_file.exists():
        with gzip.open(images_file) as f:
            pixels = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(labels_file) as f:
            labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        from blt_models.data import create_transform

        transform = create_transform(model)
        x = torch.stack([transform(Image.fromarray(p)) for p in pixels[:n]])
        y = torch.from_numpy(labels[:n].astype(np.int64))
        return x, y, f"Fashion-MNIST test set ({FASHION_MNIST}), first {len(y)} images"
    samples = load_samples()
    x = preprocess(samples.paths[:n], model)
    return x, samples.labels[:n], f"the {len(x)} Fashion-MNIST test images shipped in blt_models"


def other_class_images(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """For every image, the next image in the set (cyclically) whose class is different."""
    n = len(y)
    out = torch.empty_like(x)
    for i in range(n):
        j = (i + 1) % n
        while y[j] == y[i] and j != i:
            j = (j + 1) % n
        out[i] = x[j]
    return out


def accuracy(model: bm.ClockedModel, seq: torch.Tensor, y: torch.Tensor, batch: int) -> list[float]:
    """Top-1 accuracy (%) at every readout step for inputs ``[T, N, ...]`` (or ``[N, ...]``)."""
    correct = None
    n = len(y)
    for i in range(0, n, batch):
        part = seq[:, i : i + batch] if seq.ndim == 5 else seq[i : i + batch]
        with torch.inference_mode():
            logits = model.forward_timesteps(part).logits  # [R, b, K]
        hits = (logits.argmax(-1) == y[i : i + batch]).sum(1)
        correct = hits if correct is None else correct + hits
    assert correct is not None
    return (100 * correct.float() / n).tolist()


def run(n: int, out: Path, assets: Path | None, batch: int = 500) -> dict:
    start = time.time()
    torch.manual_seed(0)
    model = bm.create_model(MODEL, pretrained=True).eval()
    T = model.timesteps
    steps = model.readout_steps()
    x, y, origin = load_images(model, n)
    print(f"{MODEL}: {origin}; {T} steps, readouts at steps {steps}")
    results: dict = {"model": MODEL, "images": origin, "n": len(y), "readout_steps": steps}

    # Unmasked: the image at every step (the static input).
    static = accuracy(model, x, y, batch)
    results["static"] = static

    def row(acc: list[float]) -> str:
        return "  ".join(f"t{s} {a:5.1f}" for s, a in zip(steps, acc, strict=True))

    print(f"static image:       {row(static)}")

    # 1. Backward masking: target until the mask at SOA, mask to the end.
    masks = {"noise": None, "image": other_class_images(x, y)}
    # A frame at step s reaches the readout layer at s + first_step (3 here): masks at SOA >= 5
    # cannot change any readout of an 8-step clock (shown once, as the proof of causality).
    last_visible = T - 1 - model.first_steps()[model.layer_names[-1]]
    soas = list(range(1, last_visible + 2))
    masking: dict[str, dict[int, list[float]]] = {}
    for kind, mask_images in masks.items():
        masking[kind] = {}
        for soa in soas:
            protocol = BackwardMask(timesteps=T, soa=soa, mask=kind, seed=0)
            seq = protocol.apply(x) if mask_images is None else protocol.apply(x, mask=mask_images)
            masking[kind][soa] = accuracy(model, seq, y, batch)
            print(f"{kind:5s} mask, SOA {soa}: {row(masking[kind][soa])}")
    results["masking"] = {k: {str(s): v for s, v in d.items()} for k, d in masking.items()}
    results["masking_protocols"] = {
        k: BackwardMask(timesteps=T, soa=1, mask=k).to_dict() for k in masks
    }

    # 2. Duration: image on [0, d), blank after.
    duration: dict[int, list[float]] = {}
    for d in range(1, last_visible + 2):
        duration[d] = accuracy(model, Presentation(timesteps=T, on=0, off=d).apply(x), y, batch)
        print(f"duration {d}:         {row(duration[d])}")
    results["duration"] = {str(d): v for d, v in duration.items()}

    # 3. A one-step flash: per-layer response over time, and against a blank-only run.
    flash = Presentation(timesteps=T, on=0, off=1)
    sub = x[: min(len(x), 200)]
    with torch.inference_mode():
        out_flash = model.forward_timesteps(flash.apply(sub), layers="all")
        out_blank = model.forward_timesteps(torch.zeros_like(sub), timesteps=T, layers="all")
    mean_act = {k: v.mean(dim=(1, 2, 3, 4)).tolist() for k, v in out_flash.features.items()}
    blank_act = {k: v.mean(dim=(1, 2, 3, 4)).tolist() for k, v in out_blank.features.items()}
    evoked = {
        k: (out_flash.features[k] - out_blank.features[k]).abs().mean(dim=(1, 2, 3, 4)).tolist()
        for k in model.layer_names
    }
    results["flash"] = {
        "first_step": out_flash.first_step,
        "mean_activation": mean_act,
        "blank_activation": blank_act,
        "evoked": evoked,
    }

    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "masking": plot_masking(masking, static, steps, out / "masking.png", origin),
        "duration": plot_duration(duration, static, steps, out / "duration.png", origin),
        "flash": plot_flash(results["flash"], model.layer_names, T, out / "flash.png"),
    }
    if assets is not None:
        assets.mkdir(parents=True, exist_ok=True)
        for name, path in figures.items():
            shutil.copyfile(path, assets / f"stimuli_{name}.png")
    results["seconds"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {', '.join(str(p) for p in figures.values())} and {out / 'results.json'} "
          f"in {results['seconds']} s")  # fmt: skip
    return results


# --------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_masking(masking, static, steps, path, origin) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
    titles = {"noise": "noise mask", "image": "different-image mask"}
    for ax, (kind, by_soa) in zip(axes, masking.items(), strict=True):
        soas = sorted(by_soa)
        for r, step in enumerate(steps):
            acc = [by_soa[s][r] for s in soas]
            ax.plot(soas, acc, marker="o", color=colors[r], label=f"readout step {step}")
            ax.axhline(static[r], color=colors[r], linestyle=":", linewidth=0.8)
        ax.axhline(10, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(titles[kind])
        ax.set_xlabel("SOA (steps from target onset to mask onset)")
        ax.set_xticks(soas)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Backward masking, blt_bl_tiny.fashion_mnist (dotted: unmasked; dashed: "
                 f"chance); {origin}", fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_duration(duration, static, steps, path, origin) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
    ds = sorted(duration)
    for r, step in enumerate(steps):
        ax.plot(ds, [duration[d][r] for d in ds], marker="o", color=colors[r],
                label=f"readout step {step}")  # fmt: skip
    ax.axhline(10, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("steps the image is on (then mean grey)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xticks(ds)
    ax.legend(fontsize=7)
    ax.set_title("Presentation duration", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_flash(flash, layers, T, path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    evoked = np.array([flash["evoked"][k] for k in layers])  # [L, T]
    norm = evoked / np.maximum(evoked.max(axis=1, keepdims=True), 1e-12)
    ax = axes[0]
    ax.imshow(norm, aspect="auto", cmap="magma", origin="lower")
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xticks(range(T))
    ax.set_xlabel("clock step (image on at step 0 only)")
    ax.set_title("|flash - blank| per layer (each row scaled to its max)", fontsize=9)
    for k, name in enumerate(layers):
        ax.plot(flash["first_step"][name], k, marker="s", markerfacecolor="none",
                markeredgecolor="cyan", markersize=14)  # fmt: skip
    ax = axes[1]
    for name in layers:
        t0 = flash["first_step"][name]
        ax.plot(range(t0, T), flash["mean_activation"][name][t0:], marker="o", label=name)
        ax.plot(range(t0, T), flash["blank_activation"][name][t0:], linestyle=":", color="grey")
    ax.axvspan(-0.5, 0.5, color="gold", alpha=0.3, label="image on")
    ax.set_xlabel("clock step")
    ax.set_ylabel("mean activation")
    ax.set_title("mean activation (dotted: blank only)", fontsize=9)
    ax.set_xticks(range(T))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="number of test images")
    parser.add_argument("--out", default="outputs/stimuli")
    parser.add_argument("--assets", default=None, help="also copy the figures here (docs)")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    run(args.n, Path(args.out), Path(args.assets) if args.assets else None, args.batch)


if __name__ == "__main__":
    main()
