"""Throughput of BLT models on this machine: images/s, achieved GFLOP/s, share of the sgemm peak.

    .venv/bin/python benchmarks/blt_throughput.py [--models blt_b blt_bl blt_bt blt_blt]
        [--batch 16 --size 224 --timesteps 10 --iters 3]
    # on a GPU: eager, inductor and CUDA graphs, two batch sizes, figures in TFLOP/s
    python benchmarks/blt_throughput.py --device cuda --models blt_bl blt_blt --batch 64 256 \
        --settings ref-fp32 fp32 bf16 compiled cudagraphs --json out.json

For each model it times ``forward_timesteps`` (every readout, inference mode) in these settings:
``ref-fp32``, the literal reference loop (tests/_reference_blt.py: every present layer at every
step, NCHW fp32; the reference code's work); blt-models in ``fp32`` and with ``bf16`` autocast,
both channels_last; on request ``compiled`` (the bf16 channels_last setting through
``torch.compile``, inductor) and ``cudagraphs`` (the same with ``mode="reduce-overhead"``: CUDA
graphs replay the whole step loop, which pays where kernel-launch overhead dominates, at small
batch). Two yardsticks are measured in the same run: torch.mm's sgemm and the throughput of one
large 3x3 convolution per dtype (oneDNN on CPU, cuDNN on CUDA; "% conv": the share of what this
machine's conv kernels reach; MKL's sgemm is far below that on some CPUs). On CUDA, fp32
convolutions use TF32 as PyTorch's default (``torch.backends.cudnn.allow_tf32``) does, the
yardstick too. FLOPs are counted with torch's FlopCounterMode on the eager run (the compiled
settings execute the same operations), so "GFLOP/s" is work actually executed (in no_grad mode);
blt-models executes fewer FLOPs because it skips layer-steps that reach no readout. Ratios are
against the reference loop measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _reference_blt import reference_forward  # noqa: E402

import blt_models as bm  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak(
    dtype: torch.dtype, n: int = 2048, seconds: float = 2.0, device: str | torch.device = "cpu"
) -> float:
    """GFLOP/s of torch.mm (MKL's sgemm for fp32; cuBLAS on CUDA) on n x n matrices."""
    device = torch.device(device)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def conv_peak(
    dtype: torch.dtype, seconds: float = 2.0, device: str | torch.device = "cpu"
) -> float:
    """GFLOP/s of one large 3x3 convolution (oneDNN / cuDNN, channels_last): the kernels BLT runs
    on. On CPUs where MKL's sgemm is slow (e.g. AMD), this is the realistic ceiling of a conv net.
    """
    device = torch.device(device)
    batch = 128 if device.type == "cuda" else 16  # enough work to fill a GPU
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(
        device=device, dtype=dtype, memory_format=torch.channels_last
    )
    x = torch.randn(batch, 256, 28, 28, dtype=dtype, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    flop = 2 * batch * 256 * 256 * 9 * 28 * 28
    with torch.no_grad():
        conv(x)
        sync(device)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conv(x)
            count += 1
        sync(device)
    return flop * count / (time.perf_counter() - start) / 1e9


def timed(fn, iters: int, device: torch.device, warmup: int = 1) -> float:
    for _ in range(warmup):  # oneDNN primitives, cuDNN algorithms, compilation, graph recording
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def count_gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


SETTINGS = ("ref-fp32", "fp32", "bf16", "compiled", "cudagraphs")
LABELS = {
    "ref-fp32": "reference loop fp32",
    "fp32": "blt-models fp32 CL",
    "bf16": "blt-models bf16 CL",
    "compiled": "compiled bf16 CL",
    "cudagraphs": "CUDA graphs bf16 CL",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["blt_b", "blt_bl", "blt_bt", "blt_blt"])
    parser.add_argument("--batch", type=int, nargs="+", default=[16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--timesteps", type=int, default=10)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["ref-fp32", "fp32", "bf16"],
                        choices=SETTINGS)  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    unit, scale = ("TFLOP/s", 1e3) if cuda else ("GFLOP/s", 1.0)

    torch.manual_seed(0)
    where = (
        torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device} {where}")
    sgemm = gemm_peak(torch.float32, n=8192 if cuda else 2048, device=device)
    peaks = {dt: conv_peak(dt, device=device) for dt in (torch.float32, torch.bfloat16)}
    kernels = "cuDNN" if cuda else "oneDNN"
    print(
        f"sgemm (torch.mm): {sgemm / scale:.1f} {unit}   {kernels} 3x3 conv peak: fp32 "
        f"{peaks[torch.float32] / scale:.1f}, bf16 {peaks[torch.bfloat16] / scale:.1f} {unit} "
        "(measured now)"
    )
    print(f"{args.size} px, timesteps {args.timesteps}, {args.iters} timed iterations\n")
    header = (
        f"{'model':<9} {'batch':>5} {'setting':<22} {'img/s':>8} {'GFLOP/img':>9} {unit:>8} "
        f"{'% sgemm':>8} {'% conv':>7} {'x ref':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.models:
        model = bm.create_model(name, timesteps=args.timesteps).eval().to(device)
        model_cl = bm.create_model(name, timesteps=args.timesteps).eval()
        model_cl.load_state_dict(model.state_dict())
        model_cl = model_cl.to(device, memory_format=torch.channels_last)
        for batch in args.batch:
            x = torch.randn(batch, 3, args.size, args.size, device=device)
            x_cl = x.contiguous(memory_format=torch.channels_last)

            def bf16(m=model_cl, fn=None, x_cl=x_cl):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return (fn or m.forward_timesteps)(x_cl)

            settings = {
                "ref-fp32": lambda m=model, x=x: reference_forward(m, x, args.timesteps),
                "fp32": lambda m=model_cl, x_cl=x_cl: m.forward_timesteps(x_cl),
                "bf16": bf16,
            }
            if "compiled" in args.settings:
                torch._dynamo.reset()
                compiled = torch.compile(model_cl.forward_timesteps, dynamic=False)
                settings["compiled"] = lambda fn=compiled: bf16(fn=fn)
            if "cudagraphs" in args.settings:
                graphs = torch.compile(
                    model_cl.forward_timesteps, mode="reduce-overhead", dynamic=False
                )
                settings["cudagraphs"] = lambda fn=graphs: bf16(fn=fn)
            ref_rate = None
            gflop_of = {}
            # no_grad, not inference_mode: autocast does not cache weight casts in inference mode.
            with torch.no_grad():
                for key in ["ref-fp32", *(s for s in args.settings if s != "ref-fp32")]:
                    fn = settings[key]
                    dtype = torch.float32 if "fp32" in key else torch.bfloat16
                    # The compiled settings run the bf16 setting's operations.
                    eager_key = "bf16" if key in ("compiled", "cudagraphs") else key
                    if eager_key not in gflop_of:
                        gflop_of[eager_key] = count_gflops(settings[eager_key]) / batch
                    gflop = gflop_of[eager_key]
                    seconds = timed(fn, args.iters, device, warmup=3 if key == "cudagraphs" else 1)
                    rate = batch / seconds
                    ref_rate = ref_rate or rate
                    achieved = gflop * rate
                    row = dict(model=name, batch=batch, setting=key, images_per_s=rate,
                               gflop_per_image=gflop, gflop_per_s=achieved,
                               share_of_sgemm=achieved / sgemm, share_of_conv_peak=achieved / peaks[dtype],
                               speed_vs_ref=rate / ref_rate)  # fmt: skip
                    rows.append(row)
                    print(
                        f"{name:<9} {batch:>5} {LABELS[key]:<22} {rate:8.1f} {gflop:9.2f} "
                        f"{achieved / scale:8.1f} {100 * achieved / sgemm:7.0f}% "
                        f"{100 * achieved / peaks[dtype]:6.0f}% {rate / ref_rate:6.2f}",
                        flush=True,
                    )
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"\npeak CUDA memory allocated: {peak_mb:.0f} MiB")
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak resident memory of this process: {peak_mb:.0f} MiB")
    if args.json:
        import json

        peaks_out = {"sgemm_gflop_s": sgemm, "conv_fp32_gflop_s": peaks[torch.float32],
                     "conv_bf16_gflop_s": peaks[torch.bfloat16]}  # fmt: skip
        Path(args.json).write_text(json.dumps(
            {"device": str(device), "name": where, "torch": torch.__version__, "args": vars(args),
             "peaks": peaks_out, "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
