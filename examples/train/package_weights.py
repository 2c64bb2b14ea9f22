"""Copy a run's best weights into the package and write their model card.

    python examples/train/package_weights.py runs/blt_bl_tiny_fashion_mnist [--name blt_bl_tiny.fashion_mnist]

Writes ``blt_models/weights/<name>.safetensors`` and ``<name>.md`` and prints the ``sha256`` and
``metrics`` to paste into the model's ``PretrainedCfg`` (``blt_models/models/blt.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "blt_models" / "weights"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--name", default="blt_bl_tiny.fashion_mnist")
    p.add_argument("--command", default=None, help="training command for the card (default: run_config.json)")
    p.add_argument("--wall-time", default=None, help="wall time for the card, e.g. '27 min'")
    args = p.parse_args()

    from blt_models._hub import sha256_file

    config = json.loads((args.run_dir / "run_config.json").read_text())
    best = json.loads((args.run_dir / "best" / "config.json").read_text())
    rows = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = best["pretrained_cfg"]["metrics"]
    WEIGHTS.mkdir(exist_ok=True)
    target = WEIGHTS / f"{args.name}.safetensors"
    shutil.copyfile(args.run_dir / "best" / "model.safetensors", target)
    load_file(str(target))  # readable
    digest = sha256_file(target)
    wall = args.wall_time or f"{rows[-1]['wall_time_s'] / 60:.1f} min"
    cmd = args.command or config["command"]
    steps = metrics["readout_steps"]
    table = "\n".join(
        f"| {s} | {a:.2f} | {b:.2f} |" for s, a, b in zip(steps, metrics["top1_per_step"], metrics["top5_per_step"], strict=True)
    )
    history = "\n".join(
        f"| {r['epoch']} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | "
        + " / ".join(f"{a:.2f}" for a in r["top1_per_step"]) + " |"
        for r in rows
    )
    pcfg = best["pretrained_cfg"]
    card = f"""# {args.name}

`blt_bl_tiny`: BLT with bottom-up and lateral connections (`bl`), 4 layers of 32-32-64-64
channels at 16-16-8-4 px for a {pcfg['input_size'][1]} px grayscale input, {pcfg['num_classes']}
classes, {pcfg['timesteps']} clock steps ({pcfg['unroll']} unrolling: layer k first active at step k, readouts
at steps {steps[0]}..{steps[-1]}). {sum(v.numel() for v in load_file(str(target)).values()):,} parameters,
safetensors SHA-256 `{digest}`.

```python
import blt_models as bm
model = bm.create_model("{args.name}", pretrained=True)   # offline: the file is in the package
out = model.forward_timesteps(x)                           # x: [B, 1, 32, 32], preprocessed as below
out.logits                                                 # [{len(steps)}, B, 10], one row per readout step
```

## Preprocessing

Fashion-MNIST images (28x28 grayscale) -> resize to {pcfg['input_size'][1]}x{pcfg['input_size'][2]}
(bilinear) -> scale to [0, 1] -> normalise with mean {pcfg['mean']} and std {pcfg['std']}.
Class names (label order): {", ".join(pcfg['class_names'])}.

## Test accuracy per readout step (10,000 Fashion-MNIST test images, epoch {metrics['epoch']})

| clock step | top-1 (%) | top-5 (%) |
|---|---|---|
{table}

## Training

* Data: the 60,000 Fashion-MNIST training images from Debian's `dataset-fashion-mnist`
  package; augmentation: pad 2 + random 32 px crop + horizontal flip. Test set used for
  validation each epoch (the selected epoch is the one with the best last-step top-1).
* Recipe: `examples/train/train.py` (blt-models), {config['world_size']} processes (DDP, gloo, CPU),
  global batch {config['args']['batch_size']}.
* Wall time: {wall} on a 2-core CPU machine shared with other jobs.
* Command:

```bash
{cmd}
```

| epoch | train loss | test loss | test top-1 per readout step ({", ".join(map(str, steps))}) |
|---|---|---|---|
{history}

## License

Weights: Apache-2.0, like blt-models. Fashion-MNIST: MIT (Zalando Research).
"""
    (WEIGHTS / f"{args.name}.md").write_text(card)
    print(f"wrote {target} ({target.stat().st_size:,} bytes) and {args.name}.md")
    print(f'sha256="{digest}",')
    print("metrics=" + json.dumps({k: metrics[k] for k in ("readout_steps", "top1_per_step", "top5_per_step")}))


if __name__ == "__main__":
    main()
