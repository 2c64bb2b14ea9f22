"""Feature-extraction benchmark: speed against a plain forward pass, and memory against N.

1. Throughput (images/s) of ``extract_features`` keeping *all layers at all steps* (unpooled,
   ``pool="avg"``, and unpooled written to HDF5) against plain ``model.forward_timesteps(x,
   layers="all")`` on the same batches. Runs are interleaved and the best of ``--repeats`` is
   kept, so that other load on the machine affects both sides alike; wall-clock and process
   CPU time are both reported (CPU time is the steadier figure on a shared machine, best with
   ``--threads 1``).
2. Peak resident memory (``ru_maxrss`` of a fresh subprocess) extracting N images from a folder
   of PNG files to HDF5, for several N up to ``--memory-images`` (default 2,000): flat in N
   means memory is bounded by one batch.

Usage::

    python benchmarks/extract_benchmark.py                       # small CPU defaults
    python benchmarks/extract_benchmark.py --num-layers 6 --img-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import blt_models as bm
from blt_models.extract import extract_features


def make_model(args: argparse.Namespace, in_chans: int = 3) -> bm.ClockedModel:
    torch.manual_seed(0)
    model = bm.create_model(
        args.model, num_layers=args.num_layers, in_chans=in_chans, timesteps=args.timesteps
    ).eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(
        input_size=(in_chans, args.img_size, args.img_size)
    )
    return model.to(args.device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(args: argparse.Namespace) -> dict:
    model = make_model(args)
    n = args.batch_size * args.batches
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    images = x.repeat(args.batches, 1, 1, 1)
    tmp = Path(tempfile.mkdtemp(prefix="blt-bench-"))

    def plain() -> None:
        with torch.inference_mode():
            for _ in range(args.batches):
                out = model.forward_timesteps(x.to(args.device), layers="all")
                for f in out.features.values():  # as extraction does: results land on the host
                    f.to("cpu")
        sync(args.device)

    def extract(pool=None, out=None):
        def run() -> None:
            extract_features(model, images, layers="all", batch_size=args.batch_size, pool=pool,
                             out=out, overwrite=True, progress=False, device=args.device)  # fmt: skip
            sync(args.device)

        return run

    cases = {
        "forward_timesteps (plain)": plain,
        "extract, unpooled, in memory": extract(),
        "extract, pool=avg, in memory": extract("avg"),
        "extract, unpooled, to HDF5": extract(None, tmp / "bench.h5"),
    }
    plain()  # warm-up
    best = dict.fromkeys(cases, float("inf"))
    best_cpu = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            best_cpu[name] = min(best_cpu[name], time.process_time() - c0)
    shutil.rmtree(tmp, ignore_errors=True)
    plain_name = "forward_timesteps (plain)"
    rows = {
        name: {
            "images_per_s": n / t,
            "relative_to_plain": best[plain_name] / t,
            "images_per_cpu_s": n / best_cpu[name],
            "cpu_relative_to_plain": best_cpu[plain_name] / best_cpu[name],
        }
        for name, t in best.items()
    }
    return {"images": n, "batch_size": args.batch_size, "rows": rows}


def memory_child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: extract --child-n images of --child-folder to HDF5."""
    model = make_model(args, in_chans=1)
    folder = Path(args.child_folder)
    paths = sorted(folder.glob("*.png"))[: args.child_n]
    with torch.inference_mode():  # warm up torch / oneDNN so that the baseline includes them
        model.forward_timesteps(torch.zeros(1, 1, args.mem_img_size, args.mem_img_size))
    shapes = model.layer_shapes(args.mem_img_size, args.mem_img_size)
    batch_bytes = sum(math.prod(s) for s in shapes.values()) * args.timesteps * 4 * args.batch_size
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = extract_features(model, [str(p) for p in paths], layers="all", out=args.child_out,
                           batch_size=args.batch_size, progress=False, overwrite=True)  # fmt: skip
    elapsed = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = Path(args.child_out)
    size = sum(f.stat().st_size for f in out.rglob("*")) if out.is_dir() else out.stat().st_size
    print(json.dumps({"n": res.num_images, "peak_rss_mib_before": rss0 / 1024, "peak_rss_mib": rss / 1024,
                      "batch_mib": batch_bytes / 2**20, "model_mib": model_bytes / 2**20,
                      "file_mib": size / 2**20, "seconds": elapsed}))  # fmt: skip


def memory(args: argparse.Namespace) -> dict:
    from PIL import Image

    samples = Path(bm.__file__).parent / "samples" / "fashion_mnist"
    tmp = Path(tempfile.mkdtemp(prefix="blt-bench-mem-"))
    folder = tmp / "stimuli"
    folder.mkdir()
    sources = sorted(samples.glob("*.png"))
    for i in range(args.memory_images):
        shutil.copy(sources[i % len(sources)], folder / f"img{i:06d}.png")
    Image.open(sources[0]).close()
    results = []
    sizes = sorted({args.memory_images // 8, args.memory_images // 2, args.memory_images})
    for backend, n in [(b, n) for b in args.backends for n in sizes]:
        threads = ["--threads", str(args.threads)] if args.threads else []
        cmd = [sys.executable, __file__, *threads, "--child-n", str(n), "--child-folder", str(folder),
               "--child-out", str(tmp / f"mem.{backend}"), "--model", args.model,
               "--num-layers", str(args.num_layers), "--img-size", str(args.mem_img_size),
               "--timesteps", str(args.timesteps), "--batch-size", str(args.batch_size),
               "--device", args.device]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append({"backend": backend, **json.loads(out.stdout.strip().splitlines()[-1])})
    shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blt_bl")
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--img-size", type=int, default=64, help="input side for the throughput part")
    p.add_argument("--mem-img-size", type=int, default=32, help="input side for the memory part")
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-images", type=int, default=2000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--backends", nargs="+", default=["h5", "zarr"], choices=["h5", "zarr"])
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-folder", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_n is not None:
        memory_child(args)
        return

    print(f"model {args.model} ({args.num_layers} layers), {args.timesteps} steps, device "
          f"{args.device}, torch threads {torch.get_num_threads()}")  # fmt: skip
    if not args.skip_throughput:
        tp = throughput(args)
        print(f"\nThroughput, all layers at all steps, {tp['images']} images of {args.img_size} px "
              f"in batches of {tp['batch_size']} (best of {args.repeats}):")  # fmt: skip
        for name, row in tp["rows"].items():
            print(f"  {name:<30} {row['images_per_s']:7.1f} images/s "
                  f"({100 * row['relative_to_plain']:5.1f}% of plain)  "
                  f"{row['images_per_cpu_s']:7.1f} images/CPU-s "
                  f"({100 * row['cpu_relative_to_plain']:5.1f}% of plain)")  # fmt: skip
    if not args.skip_memory:
        mem = memory(args)
        print(f"\nPeak resident memory extracting a PNG folder (all layers, all steps, unpooled, "
              f"{args.mem_img_size} px, batch {args.batch_size}); 'growth' is peak RSS minus the "
              "RSS of the process before the call (torch, the model and one warm-up forward "
              "loaded), against one batch's features plus the model:")  # fmt: skip
        for run in mem["runs"]:
            growth = run["peak_rss_mib"] - run["peak_rss_mib_before"]
            bound = run["batch_mib"] + run["model_mib"]
            print(f"  {run['backend']:<4} N={run['n']:>5}  peak RSS {run['peak_rss_mib']:7.1f} MiB"
                  f"  (before {run['peak_rss_mib_before']:6.1f}, growth {growth:6.1f} MiB = "
                  f"{growth / bound:4.2f} x (batch {run['batch_mib']:.1f} + model "
                  f"{run['model_mib']:.1f} MiB))  file {run['file_mib']:7.1f} MiB  "
                  f"{run['n'] / run['seconds']:6.1f} images/s")  # fmt: skip


if __name__ == "__main__":
    main()
