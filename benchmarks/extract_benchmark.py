"""Feature-extraction benchmark: speed against a plain forward pass, and memory against N.

1. Throughput (images/s) of ``extract_features`` keeping *all layers at all steps* (unpooled,
   ``pool="avg"``, and unpooled written to HDF5) against plain ``model.forward_timesteps(x,
   layers="all")`` on the same batches. Runs are interleaved and the best of ``--repeats`` is
   kept, so that other load on the machine affects both sides alike; wall-clock and process
   CPU time are both reported (CPU time is the steadier figure on a shared machine, best with
   ``--threads 1``).
2. Peak resident memory (``ru_maxrss`` of a fresh subprocess) extracting N images from a folder
   of PNG files to HDF5 and zarr, for N = 1/8, 1/2 and all of ``--memory-images`` (default
   2,000): flat in N means memory is bounded by one batch. 'Growth' is the peak above the
   process before the call (torch, the model, one warm-up forward of one image), against one
   batch's features plus the model (the target: at most 1.5x). ``--big-images K`` adds a point
   where one batch's features dominate: full-size ``blt_bl``, RGB, 224 px, batch 16, K images.
3. ``--attribute``: where the growth goes. Fresh processes with one cause after another taken
   away (cumulative, medians of ``--attribute-repeats``): the format-2 weights hash (a
   safetensors serialisation of the whole state dict) and write paths (8 MiB HDF5 chunk cache
   per dataset, zarr encoding up to 10 chunks at once), then this tree, then h5py / zarr / PIL
   imported before the call, the model already channels_last, one forward at the batch size
   before the call, and glibc's per-thread malloc arenas (``MALLOC_ARENA_MAX=1``).

Usage::

    python benchmarks/extract_benchmark.py                       # small CPU defaults
    python benchmarks/extract_benchmark.py --num-layers 6 --img-size 224 --device cuda
    python benchmarks/extract_benchmark.py --skip-throughput --threads 1 --big-images 48 --attribute
"""

from __future__ import annotations

import argparse
import json
import math
import os
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


#: Causes of memory growth, in the order --attribute takes them away (cumulative).
KNOCKOUTS = [
    ("format-2 hash and write paths", "oldhash,oldcache,oldzarr"),
    ("this tree", ""),
    ("+ h5py / zarr / PIL imported before", "preimport"),
    ("+ model already channels_last", "preimport,cl"),
    ("+ a forward at the batch size before", "preimport,cl,warm"),
    ("+ MALLOC_ARENA_MAX=1 (glibc arenas)", "preimport,cl,warm,arena1"),
]


def format2_weights_sha256(model: torch.nn.Module) -> str:
    """The weights hash of feature-file format 2: a serialisation of the whole state dict."""
    import hashlib

    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


def apply_knockouts(knock: set[str], model: bm.ClockedModel, args: argparse.Namespace) -> None:
    """Put back the format-2 code paths, or do before the call what it would do first."""
    from blt_models.extract import plan, stores

    if "oldhash" in knock:
        plan.weights_sha256 = format2_weights_sha256
    if "oldcache" in knock:
        opened = stores.FileStore.open

        def open_with_cache(self: stores.FileStore) -> None:
            if self.backend != "h5":
                return opened(self)
            import h5py

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.root = h5py.File(self.path, "a", rdcc_nbytes=8 << 20, rdcc_w0=1.0)
            self.arrays = {}

        stores.FileStore.open = open_with_cache  # type: ignore[method-assign]
    if "oldzarr" in knock:
        stores.ZARR_BYTES_IN_FLIGHT = 1 << 62
    if "preimport" in knock:
        import h5py  # noqa: F401
        import PIL.Image  # noqa: F401
        import zarr  # noqa: F401
    if "cl" in knock:
        model.to(memory_format=torch.channels_last)
    if "warm" in knock:
        size, chans = args.mem_img_size, model.in_chans
        x = torch.zeros(args.batch_size, chans, size, size)
        with torch.inference_mode():
            model.forward_timesteps(x.contiguous(memory_format=torch.channels_last), layers="all")


def memory_child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: extract --child-n images of --child-folder to --child-out."""
    args.img_size = args.mem_img_size  # the model's preprocessing resizes to this
    model = make_model(args, in_chans=args.mem_in_chans)
    folder = Path(args.child_folder)
    paths = sorted(folder.glob("*.png"))[: args.child_n]
    size = args.mem_img_size
    with torch.inference_mode():  # warm up torch / oneDNN so that the baseline includes them
        model.forward_timesteps(torch.zeros(1, args.mem_in_chans, size, size))
    apply_knockouts(set(filter(None, args.child_knock.split(","))), model, args)
    shapes = model.layer_shapes(size, size)
    batch_bytes = sum(math.prod(s) for s in shapes.values()) * args.timesteps * 4 * args.batch_size
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = extract_features(model, [str(p) for p in paths], layers="all", out=args.child_out,
                           batch_size=args.batch_size, progress=False, overwrite=True)  # fmt: skip
    elapsed = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = Path(args.child_out)
    size_b = sum(f.stat().st_size for f in out.rglob("*")) if out.is_dir() else out.stat().st_size
    print(json.dumps({"n": res.num_images, "peak_rss_mib_before": rss0 / 1024, "peak_rss_mib": rss / 1024,
                      "batch_mib": batch_bytes / 2**20, "model_mib": model_bytes / 2**20,
                      "file_mib": size_b / 2**20, "seconds": elapsed}))  # fmt: skip


def make_folder(tmp: Path, n: int) -> Path:
    samples = Path(bm.__file__).parent / "samples" / "fashion_mnist"
    folder = tmp / "stimuli"
    folder.mkdir(exist_ok=True)
    sources = sorted(samples.glob("*.png"))
    for i in range(n):
        shutil.copy(sources[i % len(sources)], folder / f"img{i:06d}.png")
    return folder


def run_child(args: argparse.Namespace, folder: Path, out: Path, n: int, point: dict,
              knock: str = "") -> dict:  # fmt: skip
    threads = ["--threads", str(args.threads)] if args.threads else []
    cmd = [sys.executable, __file__, *threads, "--child-n", str(n), "--child-folder", str(folder),
           "--child-out", str(out), "--model", args.model, "--num-layers", str(point["layers"]),
           "--mem-img-size", str(point["size"]), "--mem-in-chans", str(point["chans"]),
           "--timesteps", str(args.timesteps), "--batch-size", str(point["batch"]),
           "--device", args.device, "--child-knock", knock]  # fmt: skip
    env = dict(os.environ)
    if "arena1" in knock:
        env["MALLOC_ARENA_MAX"] = "1"
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_points(args: argparse.Namespace) -> list[dict]:
    small = {"name": f"{args.mem_img_size} px", "layers": args.num_layers,
             "size": args.mem_img_size, "chans": 1, "batch": args.batch_size,
             "sizes": sorted({args.memory_images // 8, args.memory_images // 2, args.memory_images})}  # fmt: skip
    points = [small]
    if args.big_images:
        points.append({"name": "224 px", "layers": 6, "size": 224, "chans": 3, "batch": 16,
                       "sizes": [args.big_images]})  # fmt: skip
    return points


def memory(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="blt-bench-mem-"))
    points = memory_points(args)
    folder = make_folder(tmp, max(max(p["sizes"]) for p in points))
    results = []
    for point in points:
        for backend, n in [(b, n) for b in args.backends for n in point["sizes"]]:
            runs = [
                run_child(args, folder, tmp / f"mem.{backend}", n, point)
                for _ in range(args.memory_repeats)
            ]
            runs.sort(key=lambda r: r["peak_rss_mib"] - r["peak_rss_mib_before"])
            growths = [round(r["peak_rss_mib"] - r["peak_rss_mib_before"], 1) for r in runs]
            run = runs[len(runs) // 2]  # the median growth
            results.append(
                {"point": point["name"], "backend": backend, "batch": point["batch"],
                 "growths": growths, **run}
            )  # fmt: skip
    attribution = []
    if args.attribute:
        for point in points:
            n = min(point["sizes"][-1], args.attribute_images)
            for backend in args.backends:
                for label, knock in KNOCKOUTS:
                    growths = []
                    for _ in range(args.attribute_repeats):
                        run = run_child(args, folder, tmp / f"mem.{backend}", n, point, knock)
                        growths.append(run["peak_rss_mib"] - run["peak_rss_mib_before"])
                    growths.sort()
                    attribution.append({"point": point["name"], "backend": backend, "n": n,
                                        "label": label, "growth": growths[len(growths) // 2],
                                        "bound": run["batch_mib"] + run["model_mib"]})  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": results, "attribution": attribution}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blt_bl")
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--img-size", type=int, default=64, help="input side for the throughput part")
    p.add_argument("--mem-img-size", type=int, default=32, help="input side for the memory part")
    p.add_argument("--mem-in-chans", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument(
        "--big-images",
        type=int,
        default=0,
        help="also measure full-size blt_bl at 224 px, batch 16, on this many images",
    )
    p.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per point")
    p.add_argument("--attribute", action="store_true", help="where the memory growth goes")
    p.add_argument("--attribute-images", type=int, default=500)
    p.add_argument("--attribute-repeats", type=int, default=3)
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
    p.add_argument("--child-knock", default="", help=argparse.SUPPRESS)
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
        print("\nPeak resident memory extracting a PNG folder (all layers, all steps, unpooled; "
              "median of --memory-repeats fresh processes); 'growth' is peak RSS minus the peak RSS of the process "
              "before the call (torch, the model and one warm-up forward of one image loaded), "
              "against one batch's features plus the model (target: <= 1.5x):")  # fmt: skip
        for run in mem["runs"]:
            growth = run["peak_rss_mib"] - run["peak_rss_mib_before"]
            bound = run["batch_mib"] + run["model_mib"]
            print(f"  {run['point']:<6} batch {run['batch']:>2} {run['backend']:<4} N={run['n']:>5}"
                  f"  peak {run['peak_rss_mib']:7.1f} MiB  growth {growth:6.1f} MiB = "
                  f"{growth / bound:4.2f} x (batch {run['batch_mib']:.1f} + model "
                  f"{run['model_mib']:.1f} MiB)  file {run['file_mib']:7.1f} MiB  "
                  f"{run['n'] / run['seconds']:6.1f} images/s  growths {run['growths']}")  # fmt: skip
        if mem["attribution"]:
            print(f"\nWhere the growth goes (causes taken away one after another; median of "
                  f"{args.attribute_repeats} fresh processes; 'step' is the change from the row "
                  "above):")  # fmt: skip
            prev = None
            for row in mem["attribution"]:
                if prev is None or (prev["point"], prev["backend"]) != (
                    row["point"],
                    row["backend"],
                ):
                    print(f"  {row['point']}, {row['backend']}, N={row['n']}, bound (batch + "
                          f"model) {row['bound']:.1f} MiB")  # fmt: skip
                    prev = None
                step = "" if prev is None else f"  step {row['growth'] - prev['growth']:+7.1f}"
                print(f"    {row['label']:<40} growth {row['growth']:6.1f} MiB = "
                      f"{row['growth'] / row['bound']:4.2f} x{step}")  # fmt: skip
                prev = row


if __name__ == "__main__":
    main()
