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


def other_class_images(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every image, the next image in the set (cyclically) whose class is different, and its
    label."""
    n = len(y)
    index = torch.empty(n, dtype=torch.long)
    for i in range(n):
        j = (i + 1) % n
        while y[j] == y[i] and j != i:
            j = (j + 1) % n
        index[i] = j
    return x[index], y[index]


def accuracy(
    model: bm.ClockedModel, seq: torch.Tensor, y: torch.Tensor, batch: int,
    y_mask: torch.Tensor | None = None,
) -> tuple[list[float], list[float]]:  # fmt: skip
    """Top-1 accuracy (%) at every readout step for inputs ``[T, N, ...]`` (or ``[N, ...]``), and
    the share (%) of answers that are the mask's class (``y_mask``; empty without)."""
    correct = as_mask = None
    n = len(y)
    for i in range(0, n, batch):
        part = seq[:, i : i + batch] if seq.ndim == 5 else seq[i : i + batch]
        with torch.inference_mode():
            pred = model.forward_timesteps(part).logits.argmax(-1)  # [R, b]
        hits = (pred == y[i : i + batch]).sum(1)
        correct = hits if correct is None else correct + hits
        if y_mask is not None:
            m = (pred == y_mask[i : i + batch]).sum(1)
            as_mask = m if as_mask is None else as_mask + m
    assert correct is not None
    mask_share = [] if as_mask is None else (100 * as_mask.float() / n).tolist()
    return (100 * correct.float() / n).tolist(), mask_share


def run(n: int, out: Path, assets: Path | None, batch: int = 500) -> dict:
    start, cpu_start = time.time(), time.process_time()
    torch.manual_seed(0)
    model = bm.create_model(MODEL, pretrained=True).eval()
    T = model.timesteps
    steps = model.readout_steps()
    x, y, origin = load_images(model, n)
    print(f"{MODEL}: {origin}; {T} steps, readouts at steps {steps}")
    results: dict = {"model": MODEL, "images": origin, "n": len(y), "readout_steps": steps}

    # Unmasked: the image at every step (the static input).
    static = accuracy(model, x, y, batch)[0]
    results["static"] = static

    def row(acc: list[float]) -> str:
        return "  ".join(f"t{s} {a:5.1f}" for s, a in zip(steps, acc, strict=True))

    print(f"static image:       {row(static)}")

    # 1. Backward masking: target until the mask at SOA, mask to the end.
    mask_x, mask_y = other_class_images(x, y)
    masks = {"noise": None, "image": mask_x}
    # A frame at step s reaches the readout layer at s + first_step (3 here): masks at SOA >= 5
    # cannot change any readout of an 8-step clock (shown once, as the proof of causality).
    last_visible = T - 1 - model.first_steps()[model.layer_names[-1]]
    soas = list(range(1, last_visible + 2))
    masking: dict[str, dict[int, list[float]]] = {}
    reports_mask: dict[int, list[float]] = {}
    for kind, mask_images in masks.items():
        masking[kind] = {}
        for soa in soas:
            protocol = BackwardMask(timesteps=T, soa=soa, mask=kind, seed=0)
            if mask_images is None:
                masking[kind][soa] = accuracy(model, protocol.apply(x), y, batch)[0]
            else:
                seq = protocol.apply(x, mask=mask_images)
                masking[kind][soa], reports_mask[soa] = accuracy(model, seq, y, batch, mask_y)
            print(f"{kind:5s} mask, SOA {soa}: {row(masking[kind][soa])}")
    for soa, share in reports_mask.items():
        print(f"image mask, SOA {soa}, answers of the mask's class: {row(share)}")
    results["masking"] = {k: {str(s): v for s, v in d.items()} for k, d in masking.items()}
    results["image_mask_reported"] = {str(s): v for s, v in reports_mask.items()}
    results["masking_protocols"] = {
        k: BackwardMask(timesteps=T, soa=1, mask=k).to_dict() for k in masks
    }

    # 2. Duration: image on [0, d), blank after.
    duration: dict[int, list[float]] = {}
    for d in range(1, last_visible + 2):
        duration[d] = accuracy(model, Presentation(timesteps=T, on=0, off=d).apply(x), y, batch)[0]
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

    results["seconds"] = round(time.time() - start, 1)
    results["cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    figures = plot_all(results, out, assets)
    print(f"wrote {', '.join(str(p) for p in figures)} and {out / 'results.json'} "
          f"in {results['seconds']} s ({results['cpu_seconds']} s of CPU time)")  # fmt: skip
    return results


def plot_all(results: dict, out: Path, assets: Path | None) -> list[Path]:
    """The three figures from the numbers of ``run`` (also from a saved ``results.json``)."""
    steps, static, origin = results["readout_steps"], results["static"], results["images"]

    def by_int(d: dict) -> dict[int, list[float]]:
        return {int(k): v for k, v in d.items()}

    masking = {kind: by_int(d) for kind, d in results["masking"].items()}
    figures = {
        "masking": plot_masking(masking, by_int(results["image_mask_reported"]), static, steps,
                                out / "masking.png", origin),
        "duration": plot_duration(by_int(results["duration"]), static, steps,
                                  out / "duration.png", origin),
        "flash": plot_flash(results["flash"], list(results["flash"]["evoked"]),
                            len(results["flash"]["evoked"]["layer0"]), out / "flash.png"),
    }  # fmt: skip
    if assets is not None:
        assets.mkdir(parents=True, exist_ok=True)
        for name, path in figures.items():
            shutil.copyfile(path, assets / f"stimuli_{name}.png")
    return list(figures.values())


# --------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_masking(masking, reports_mask, static, steps, path, origin) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), sharey=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
    titles = {"noise": "noise mask: accuracy", "image": "different-image mask: accuracy"}
    panels = [(titles[k], v) for k, v in masking.items()]
    panels.append(("different-image mask: answers of the mask's class", reports_mask))
    for ax, (title, by_soa) in zip(axes, panels, strict=True):
        soas = sorted(by_soa)
        for r, step in enumerate(steps):
            ax.plot(soas, [by_soa[s][r] for s in soas], marker="o", color=colors[r],
                    label=f"readout step {step}")  # fmt: skip
            if by_soa is not reports_mask:
                ax.axhline(static[r], color=colors[r], linestyle=":", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("SOA (steps from target onset to mask onset)")
        ax.set_xticks(soas)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("% of images")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="0.3", linestyle=":", linewidth=0.8))
    labels.append("unmasked image (same readout step)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle("Backward masking on blt_bl_tiny.fashion_mnist: accuracy falls when the mask "
                 "comes soon after the target (chance 10%)", fontsize=12)  # fmt: skip
    fig.text(0.5, 0.905, origin, ha="center", fontsize=8, color="0.35")
    fig.tight_layout(rect=(0, 0.08, 1, 0.9))
    fig.savefig(path, dpi=100)
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
    for r, _ in enumerate(steps):
        ax.axhline(static[r], color=colors[r], linestyle=":", linewidth=0.8)
    ax.set_xlabel("steps the image is on (then mean grey)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xticks(ds)
    ax.legend(fontsize=7)
    ax.set_title("Presentation duration (dotted: image at every step; chance 10%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_flash(flash, layers, T, path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    evoked = np.array([flash["evoked"][k] for k in layers])  # [L, T]
    norm = evoked / np.maximum(evoked.max(axis=1, keepdims=True), 1e-12)
    # Steps before a layer is active carry no image: grey, not a value on the colour scale.
    inactive = np.arange(T)[None, :] < np.array([flash["first_step"][k] for k in layers])[:, None]
    ax = axes[0]
    cmap = plt.get_cmap("magma").with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_array(norm, inactive), aspect="auto", cmap=cmap, origin="lower",
                      vmin=0, vmax=1)  # fmt: skip
    fig.colorbar(image, ax=ax, label="|flash - blank| / row max", fraction=0.05, pad=0.02)
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xticks(range(T))
    ax.set_xlabel("clock step (image on at step 0 only)")
    ax.set_title("|flash - blank| per layer (each row scaled to its max)", fontsize=9)
    for k, name in enumerate(layers):
        ax.plot(flash["first_step"][name], k, marker="s", markerfacecolor="none",
                markeredgecolor="cyan", markersize=14, linestyle="none",
                label="first active step (grey: inactive)" if k == 0 else None)  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[1]
    for name in layers:
        t0 = flash["first_step"][name]
        ax.plot(range(t0, T), flash["evoked"][name][t0:], marker="o", label=name)
    ax.axvspan(-0.5, 0.5, color="gold", alpha=0.3, label="image on")
    ax.set_xlabel("clock step")
    ax.set_ylabel("mean |flash - blank| activation")
    ax.set_title("response evoked by the flash, from each layer's first step", fontsize=9)
    ax.set_xticks(range(T))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="number of test images")
    parser.add_argument("--out", default="outputs/stimuli")
    parser.add_argument("--assets", default=None, help="also copy the figures here (docs)")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--replot", action="store_true", help="redraw from --out/results.json")
    args = parser.parse_args(argv)
    if args.replot:
        out = Path(args.out)
        results = json.loads((out / "results.json").read_text())
        plot_all(results, out, Path(args.assets) if args.assets else None)
        return
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    run(args.n, Path(args.out), Path(args.assets) if args.assets else None, args.batch)


if __name__ == "__main__":
    main()
