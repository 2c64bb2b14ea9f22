"""The whole representational-dynamics workflow on the shipped Fashion-MNIST sample images.

Runs offline on a CPU in well under a minute:

    python examples/analysis/run_analysis.py --out outputs/analysis

Steps: load the 100 sample images -> run the model's clock and capture every layer at every step
-> readout accuracy / entropy over steps -> RDMs per (layer, step) and frame grids -> RSA against
hypothesis RDMs (standing in for neural RDMs, one per "time bin") -> angular CKA across layers x
steps -> RDM-of-RDMs and 2-D / 3-D MDS trajectories -> category selectivity (d') and decoding over
steps -> temporal tuning (preferred vs other classes per unit, d' with bands, onset latency per
layer) -> connectivity diagram (PNG + TikZ). Figures and a ``summary.json`` go to ``--out``.

The model is ``blt_bl_tiny.fashion_mnist`` with its packaged weights when that name is registered;
otherwise an untrained small BLT is used (the figures then show the dynamics of random weights).
Fashion-MNIST has no faces: the face-selectivity analysis is run with "footwear" (sandal, sneaker,
ankle boot) as the target category; with face stimuli, pass the face mask instead.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import blt_models as bm
from blt_models import analysis as ba

SAMPLES = Path(bm.__file__).parent / "samples" / "fashion_mnist"
PRETRAINED = "blt_bl_tiny.fashion_mnist"
FOOTWEAR = {5, 7, 9}  # sandal, sneaker, ankle boot
# Fashion-MNIST training-set statistics, used when the model has no pretrained config.
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


def load_samples() -> tuple[list[Image.Image], np.ndarray, list[str]]:
    with open(SAMPLES / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = [Image.open(SAMPLES / r["file"]).convert("L") for r in rows]
    return images, np.array([int(r["label"]) for r in rows]), [r["class_name"] for r in rows]


def load_model(timesteps: int | None) -> tuple[torch.nn.Module, bool]:
    if bm.is_model(PRETRAINED.split(".")[0]):
        try:
            kwargs = {"timesteps": timesteps} if timesteps else {}
            return bm.create_model(PRETRAINED, pretrained=True, **kwargs).eval(), True
        except Exception as err:  # weights missing in this install: say so and fall back
            print(f"note: could not load {PRETRAINED} ({type(err).__name__}: {err}).")
    print(
        f"note: {PRETRAINED} is not available in this install; using an UNTRAINED small BLT "
        "(blt_bl, 4 layers, 28 px). The workflow is the same; the numbers describe random weights."
    )
    torch.manual_seed(0)
    model = bm.create_model(
        "blt_bl",
        channels=(32, 32, 64, 64),
        sizes=(14, 14, 7, 7),
        nominal_size=28,
        in_chans=1,
        num_classes=10,
        timesteps=timesteps or 8,
    )
    return model.eval(), False


def to_tensor(images: list[Image.Image], model: torch.nn.Module, trained: bool) -> torch.Tensor:
    """Images -> normalised tensor, with the pretrained config's size and statistics if trained."""
    cfg = getattr(model, "pretrained_cfg", None) if trained else None
    if cfg is not None:
        _, height, width = cfg.input_size
        mean, std = cfg.mean, cfg.std
    else:
        height, width, mean, std = 28, 28, FMNIST_MEAN, FMNIST_STD
    arr = np.stack(
        [np.asarray(im.resize((width, height), Image.BILINEAR), np.float32) / 255 for im in images]
    )
    x = torch.from_numpy(arr)[:, None].expand(-1, model.in_chans, -1, -1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean_t) / std_t).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/analysis"))
    parser.add_argument(
        "--timesteps", type=int, default=None, help="clock steps (default: the model's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    images, labels, class_names = load_samples()
    model, trained = load_model(args.timesteps)
    x = to_tensor(images, model, trained)
    with torch.no_grad():
        run = model.forward_timesteps(x, layers="all")
    # [T, B, ...] -> [N, T, ...]; the extraction API (blt_models.extract) returns this layout too.
    features = {k: v.permute(1, 0, *range(2, v.ndim)) for k, v in run.features.items()}
    print(
        f"model: {'trained ' + PRETRAINED if trained else 'untrained blt_bl'}; {len(images)} images; "
        f"T = {run.timesteps}; first steps {run.first_step}"
    )

    # 1. Readout over model time.
    curves = ba.readout_curves(run, labels)
    ba.plot_readout(curves, out / "readout_over_steps.png")

    # 2. RDMs per (layer, step), shown as frame grids with images sorted by class.
    rdms = ba.compute_rdms(features, method="correlation", pattern_descriptors={"label": labels})
    names = {int(y): name for y, name in zip(labels, class_names, strict=True)}  # label -> name
    ba.plot_rdm_frames(rdms, out / "rdm_frames.png", labels=labels, class_names=names)

    # 3. RSA against hypothesis RDMs standing in for neural data: a coarse (clothing / footwear /
    #    bag) RDM as time bin 0 and a fine (10 classes) RDM as time bin 1.
    coarse = np.array([1 if y in FOOTWEAR else 2 if y == 8 else 0 for y in labels])
    hypotheses = np.stack(
        [
            (coarse[:, None] != coarse[None]).astype(float),
            (labels[:, None] != labels[None]).astype(float),
        ]
    )
    rsa = ba.rsa(rdms, hypotheses, method="spearman")
    ba.plot_rsa(
        rsa, out / "rsa_time_bins.png", title="RSA vs hypothesis RDMs (bin 0 coarse, bin 1 fine)"
    )
    rsa_fine = ba.rsa(rdms, hypotheses[1], method="spearman", n_bootstrap=20, seed=args.seed)
    ba.plot_rsa(
        rsa_fine, out / "rsa_class_rdm.png", title="RSA vs the class RDM (bootstrap SE over images)"
    )

    # 4. Angular CKA across layers x steps.
    cka = ba.cka_matrix(features, kind="angular")
    ba.plot_state_matrix(
        cka, out / "angular_cka.png", title="Angular CKA between (layer, step) states"
    )

    # 5. RDM-of-RDMs and MDS trajectories through model time.
    rdm2 = ba.rdm_of_rdms(rdms, method="angular")
    ba.plot_state_matrix(rdm2, out / "rdm_of_rdms.png")
    traj2 = ba.mds_trajectories(rdm2, n_components=2, seed=args.seed)
    traj3 = ba.mds_trajectories(rdm2, n_components=3, seed=args.seed)
    ba.plot_trajectories(traj2, out / "trajectories_2d.png")
    ba.plot_trajectories(traj3, out / "trajectories_3d.png")

    # 6. Category ("face") selectivity and decoding over model time.
    is_target = np.isin(labels, list(FOOTWEAR))
    sel = ba.face_selectivity(features, is_target, threshold=0.2)
    dec = ba.decode_over_time(features, labels, cv=5, seed=args.seed)
    ba.plot_selectivity(
        sel,
        out / "selectivity_over_steps.png",
        decoding=dec,
        title="Footwear selectivity (d') and 10-class decoding over model time",
    )

    # 7. Temporal tuning over the 10 classes: each unit's preferred class (chosen on half of the
    #    images), its response to it vs the others over steps, d' with a 95% band, onset latency.
    tuning = ba.temporal_tuning(features, labels, threshold=0.5, seed=args.seed)
    ba.plot_temporal_tuning(tuning, out / "temporal_tuning.png")

    # 8. Connectivity diagram.
    png, tex = ba.save_diagram(model, out / "connectivity")

    last = {layer: int(sel.steps[layer][-1]) for layer in sel.steps}
    summary = {
        "model": PRETRAINED if trained else "blt_bl (untrained, 28 px)",
        "trained": trained,
        "timesteps": run.timesteps,
        "first_step": run.first_step,
        "readout": {
            "steps": curves.steps.tolist(),
            "accuracy": curves.accuracy.tolist(),
            "entropy": curves.entropy.tolist(),
        },
        "rsa_best_state_per_bin": [list(rsa.best(b)) for b in range(len(rsa.bins))],
        "selective_fraction_last_step": {k: float(sel.fraction[k][-1]) for k in sel.fraction},
        "decoding_accuracy_last_step": {k: float(dec.accuracy[k][-1]) for k in dec.accuracy},
        "decoding_chance": dec.chance,
        "tuning_onset_step": tuning.onset,
        "tuning_peak_dprime": {k: float(v.max()) for k, v in tuning.dprime_mean.items()},
        "mds_path_length_2d": traj2.path_lengths(),
        "last_step": last,
        "files": sorted(p.name for p in out.iterdir()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"readout accuracy per step: {np.round(curves.accuracy, 3).tolist()}")
    print(f"best RSA state per bin: {summary['rsa_best_state_per_bin']}")
    print(f"decoding accuracy at the last step: { {k: round(v, 3) for k, v in summary['decoding_accuracy_last_step'].items()} }")
    print(f"onset of class tuning (first step with d' band > 0.5): {tuning.onset}")
    print(
        f"wrote {len(summary['files'])} files to {out} (diagram: {png.name}, {tex.name}) "
        f"in {time.time() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
