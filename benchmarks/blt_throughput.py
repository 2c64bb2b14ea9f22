"""Throughput of BLT models on this machine: images/s, achieved GFLOP/s, share of the sgemm peak.

    .venv/bin/python benchmarks/blt_throughput.py [--models blt_b blt_bl blt_bt blt_blt]
        [--batch 16 --size 224 --timesteps 10 --iters 3]

For each model it times ``forward_timesteps`` (every readout, inference mode) in three settings:
the literal reference loop (tests/_reference_blt.py: every present layer at every step, NCHW
fp32; the reference code's work), blt-models in fp32 and blt-models with bf16 autocast, both
channels_last. Two yardsticks are measured in the same run: torch.mm's sgemm and the throughput
of one large oneDNN 3x3 convolution per dtype ("% conv": the share of what this machine's conv
kernels reach; MKL's sgemm is far below that on some CPUs). FLOPs are counted with torch's FlopCounterMode on the run itself, so "GFLOP/s" is
work actually executed (in no_grad mode); blt-models executes fewer FLOPs because it skips layer-steps that reach no
readout. Ratios are against the reference loop measured in the same run.
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


def gemm_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of torch.mm (MKL's sgemm for fp32) on n x n matrices: the issue's yardstick."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def conv_peak(dtype: torch.dtype, seconds: float = 2.0) -> float:
    """GFLOP/s of one large 3x3 convolution (oneDNN, channels_last): the kernels BLT runs on.

    On CPUs where MKL's sgemm is slow (e.g. AMD), this is the realistic ceiling of a conv net.
    """
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(
        dtype=dtype, memory_format=torch.channels_last
    )
    x = torch.randn(16, 256, 28, 28, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flop = 2 * 16 * 256 * 256 * 9 * 28 * 28
    with torch.no_grad():
        conv(x)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conv(x)
            count += 1
    return flop * count / (time.perf_counter() - start) / 1e9


def timed(fn, iters: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def count_gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["blt_b", "blt_bl", "blt_bt", "blt_blt"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--timesteps", type=int, default=10)
    parser.add_argument("--iters", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    sgemm = gemm_peak(torch.float32)
    peaks = {torch.float32: conv_peak(torch.float32), torch.bfloat16: conv_peak(torch.bfloat16)}
    print(
        f"sgemm (torch.mm 2048^3): {sgemm:.0f} GFLOP/s   oneDNN 3x3 conv peak: fp32 "
        f"{peaks[torch.float32]:.0f}, bf16 {peaks[torch.bfloat16]:.0f} GFLOP/s (measured now)"
    )
    print(
        f"batch {args.batch}, {args.size} px, timesteps {args.timesteps}, {args.iters} timed iterations\n"
    )
    header = (
        f"{'model':<9} {'setting':<22} {'img/s':>7} {'GFLOP/img':>9} {'GFLOP/s':>8} "
        f"{'% sgemm':>8} {'% conv':>7} {'x ref':>6}"
    )
    print(header)
    print("-" * len(header))
    x = torch.randn(args.batch, 3, args.size, args.size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for name in args.models:
        model = bm.create_model(name, timesteps=args.timesteps).eval()
        settings = {
            "reference loop fp32": lambda m=model: reference_forward(m, x, args.timesteps),
        }
        model_cl = bm.create_model(name, timesteps=args.timesteps).eval()
        model_cl.load_state_dict(model.state_dict())
        model_cl = model_cl.to(memory_format=torch.channels_last)
        settings["blt-models fp32 CL"] = lambda m=model_cl: m.forward_timesteps(x_cl)

        def bf16(m=model_cl):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return m.forward_timesteps(x_cl)

        settings["blt-models bf16 CL"] = bf16
        ref_rate = None
        # no_grad, not inference_mode: autocast does not cache weight casts in inference mode.
        with torch.no_grad():
            for label, fn in settings.items():
                dtype = torch.bfloat16 if "bf16" in label else torch.float32
                gflop = count_gflops(fn) / args.batch
                seconds = timed(fn, args.iters)
                rate = args.batch / seconds
                ref_rate = ref_rate or rate
                achieved = gflop * rate
                print(
                    f"{name:<9} {label:<22} {rate:7.1f} {gflop:9.2f} {achieved:8.0f} "
                    f"{100 * achieved / sgemm:7.0f}% {100 * achieved / peaks[dtype]:6.0f}% "
                    f"{rate / ref_rate:6.2f}"
                )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of this process: {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
