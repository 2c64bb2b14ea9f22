"""Extraction across processes against one process, through the command line users run.

    python benchmarks/extract_ranks.py                           # CPU: 2 ranks x 1 thread vs 1 x 2
    python benchmarks/extract_ranks.py --device cuda --images 512 --size 224 --nproc 2

Writes ``--images`` PNG files (seeded noise), runs ``blt-models extract`` once in one process and
once under ``torchrun --nproc_per_node NPROC`` (HDF5 shards joined by virtual datasets), and
reports the wall time of each (start-up included, as a user sees it) and whether the joined
arrays equal the one-process arrays byte for byte (else the largest difference). On CPU the one
process gets all ``--threads`` and each rank ``threads / nproc``, so both use the same cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f["features"][k][:] for k in f["features"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blt_bl")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--num-layers", type=int, default=None, help="architecture's num_layers")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="blt-ranks-") as tmp:
        root = Path(tmp)
        folder = root / "stimuli"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            img = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
            Image.fromarray(img).save(folder / f"{i:05d}.png")
        common = [
            "-m", "blt_models", "extract", args.model, str(folder), "--img-size", str(args.size),
            "--timesteps", str(args.timesteps), "--batch-size", str(args.batch_size),
            "--device", args.device, "--no-progress",
        ]  # fmt: skip
        if args.num_layers is not None:
            common += ["--model-arg", f"num_layers={args.num_layers}"]
        runs = {
            "1 process": (
                [sys.executable, *common, "--out", str(root / "one.h5")],
                str(args.threads),
            ),
            f"{args.nproc} processes (torchrun)": (
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", str(args.nproc), *common, "--out", str(root / "many.h5")],
                str(max(1, args.threads // args.nproc)),
            ),  # fmt: skip
        }
        times = {}
        for name, (cmd, threads) in runs.items():
            env = dict(os.environ, OMP_NUM_THREADS=threads)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            times[name] = time.perf_counter() - t0
        one, many = arrays(root / "one.h5"), arrays(root / "many.h5")
        same = all(one[k].tobytes() == many[k].tobytes() for k in one)
        worst = max(float(np.abs(one[k] - many[k]).max()) for k in one)

    print(f"{args.model}, {args.images} images of {args.size} px, batch {args.batch_size}, "
          f"T={args.timesteps}, every layer at every step, {args.device}, {args.threads} threads "
          "in all")  # fmt: skip
    base = times["1 process"]
    for name, t in times.items():
        print(f"  {name:<24} {t:7.1f} s  {args.images / t:7.1f} images/s  {base / t:5.2f}x")
    print(f"  joined arrays equal to one process byte for byte: {same}"
          + ("" if same else f" (largest difference {worst:.2e})"))  # fmt: skip


if __name__ == "__main__":
    main()
