"""Extraction speed against the literal reference loop and this machine's conv peaks, in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/extract_speed.py [--model blt_bl --batch 16
        --size 224 --timesteps 10 --repeats 5]

Every layer at every step is asked for, so no work can be skipped: the bound is the conv peak.
Settings (same weights, same images; timed A, B, C, ... interleaved ``--repeats`` times in one
process so that load from other processes biases all alike; medians reported):

* reference loop fp32: ``tests/_reference_blt.py`` (every present layer at every step, NCHW
  fp32), each layer's output collected by a forward hook on its GroupNorm (ReLU applied to the
  collected maps afterwards, outside the timing);
* ``forward_timesteps(x, layers="all")`` on the default (NCHW) model, inference mode;
* ``extract_features(model, x, layers="all")`` with the defaults a user gets (fp32);
* the same with ``memory_format="contiguous"`` (NCHW; the default on CPU is channels_last);
* the same with ``dtype=torch.bfloat16`` (autocast; stored as bf16 in memory);
* readouts only: ``model(x)`` and ``forward_timesteps(x)``, against the reference loop.

FLOPs are counted with torch's FlopCounterMode on each setting itself; "GFLOP/s" is that work
over the median time, "% peak" its share of one large oneDNN 3x3 convolution's throughput in the
same dtype, measured in every round between the cases (the best round is the peak). Results are checked: fp32 features against the reference
loop's (relative Frobenius error per layer < 1e-5), bf16 last readout (the model's readout of
the extracted last layer at the last step) against the fp32 reference's (<= 1e-2).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _reference_blt import reference_forward  # noqa: E402
from blt_throughput import conv_peak  # noqa: E402

import blt_models as bm  # noqa: E402


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blt_bl")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = bm.create_model(args.model, timesteps=args.timesteps).eval()
    T, B = args.timesteps, args.batch
    x = torch.randn(B, 3, args.size, args.size)
    L = model.num_layers
    print(f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')} "
          "(transparent huge pages for torch's CPU tensors; the CLI sets 1)")  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; {args.model} ({L} layers), batch {B}, "
          f"{args.size} px, T={T}, every layer at every step; medians of {args.repeats} "
          "interleaved runs")  # fmt: skip
    # The peak is measured in every round, between the cases, and the best round counts: one
    # measurement at the start moved by +-15% between runs (the machine's clock and neighbours),
    # and the convolutions inside a case then ran "above the peak".
    peak_rounds: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def measure_peaks() -> None:
        peak_rounds["fp32"].append(conv_peak(torch.float32, seconds=1.0))
        peak_rounds["bf16"].append(conv_peak(torch.bfloat16, seconds=1.0))

    collected: dict[int, list[torch.Tensor]] = {k: [] for k in range(L)}

    def hook(k):
        def fn(_module, _inp, output):
            collected[k].append(output)

        return fn

    def reference():
        for v in collected.values():
            v.clear()
        handles = [getattr(model, f"norm_{k}").register_forward_hook(hook(k)) for k in range(L)]
        try:
            with torch.inference_mode():
                return reference_forward(model, x, T)
        finally:
            for h in handles:
                h.remove()

    def fwd_all():
        with torch.inference_mode():
            return model.forward_timesteps(x, layers="all")

    def extract_fp32():
        return bm.extract_features(model, x, layers="all", batch_size=B, progress=False)

    def extract_nchw():
        return bm.extract_features(model, x, layers="all", batch_size=B, progress=False,
                                   memory_format="contiguous")  # fmt: skip

    def extract_bf16():
        return bm.extract_features(model, x, layers="all", batch_size=B, progress=False,
                                   dtype=torch.bfloat16)  # fmt: skip

    def readout_model():
        with torch.inference_mode():
            return model(x)

    def readout_ft():
        with torch.inference_mode():
            return model.forward_timesteps(x)

    def reference_readouts():
        with torch.inference_mode():
            return reference_forward(model, x, T)

    cases = {
        "reference loop fp32 (hooks)": ("fp32", reference),
        "forward_timesteps all, NCHW": ("fp32", fwd_all),
        "extract_features fp32": ("fp32", extract_fp32),
        "extract_features fp32, NCHW": ("fp32", extract_nchw),
        "extract_features bf16": ("bf16", extract_bf16),
        "reference loop, readouts": ("fp32", reference_readouts),
        "model(x)": ("fp32", readout_model),
        "forward_timesteps(x)": ("fp32", readout_ft),
    }
    flops = {}
    for name, (_, fn) in cases.items():
        fn()  # warm-up (oneDNN primitives)
        with FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = counter.get_total_flops() / 1e9
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        measure_peaks()
        for name, (_, fn) in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    measure_peaks()
    peaks = {dt: max(v) for dt, v in peak_rounds.items()}
    rounds = {dt: ", ".join(f"{v:.0f}" for v in vals) for dt, vals in peak_rounds.items()}
    print(f"oneDNN 3x3 conv peak, best of {len(peak_rounds['fp32'])} rounds between the cases: "
          f"fp32 {peaks['fp32']:.0f} GFLOP/s ({rounds['fp32']}), "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s ({rounds['bf16']})")  # fmt: skip

    # Results checked equal (after timing, on fresh runs).
    ref_logits = reference()
    ref_feats = {k: F.relu(torch.stack(v)) for k, v in collected.items()}  # [T_k, B, ...]
    fp32 = extract_fp32()
    bf16 = extract_bf16()
    first = model.first_steps(T)
    err32 = 0.0
    for k, name in enumerate(model.layer_names):
        ours = fp32[name][:, first[name] :].transpose(0, 1)  # active steps, [T_k, B, ...]
        n = min(len(ours), len(ref_feats[k]))
        err32 = max(err32, rel_err(ours[-n:], ref_feats[k][-n:]))
    last = model.layer_names[-1]
    with torch.inference_mode():
        logits_bf16 = model.read_out(bf16[last][:, -1].float())
    err16 = rel_err(logits_bf16, ref_logits[-1])

    ref_name = "reference loop fp32 (hooks)"
    med = {name: statistics.median(v) for name, v in times.items()}
    header = (f"{'setting':<30} {'img/s':>7} {'GFLOP/img':>9} {'GFLOP/s':>8} {'% peak':>7} "
              f"{'x ref':>6}")  # fmt: skip
    print("\n" + header + "\n" + "-" * len(header))
    for name, (dt, _) in cases.items():
        ref = (
            "reference loop, readouts" if name in ("model(x)", "forward_timesteps(x)") else ref_name
        )
        rate = B / med[name]
        gflops = flops[name] / med[name]
        print(f"{name:<30} {rate:7.2f} {flops[name] / B:9.2f} {gflops:8.0f} "
              f"{100 * gflops / peaks[dt]:6.0f}% {med[ref] / med[name]:6.2f}")  # fmt: skip
    # Where the time goes: the convolutions' own rate at BLT's shapes is the bound of a run that
    # keeps every layer at every step (everything else is one pass over memory per op).
    print("\nprofile (one run each): share of time per op; the convolutions' own GFLOP/s")
    for name in ("reference loop fp32 (hooks)", "extract_features fp32", "extract_features bf16"):
        dt, fn = cases[name]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        rows = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        total = sum(rows.values())
        conv = sum(v for k, v in rows.items() if "convolution" in k and k.startswith("aten::mkldnn"))
        conv_gflops = flops[name] / (conv / 1e6) if conv else float("nan")
        top = sorted(rows.items(), key=lambda kv: -kv[1])[:6]
        shares = ", ".join(f"{k.replace('aten::', '')} {100 * v / total:.0f}%" for k, v in top)
        print(f"  {name:<28} {shares}")
        print(f"  {'':<28} convolutions alone: {conv_gflops:.0f} GFLOP/s = "
              f"{100 * conv_gflops / peaks[dt]:.0f}% of the {dt} peak (the bound of this run)")  # fmt: skip
    print(
        f"\nchecks: fp32 features vs reference, max relative error over layers {err32:.2e} "
        f"(target < 1e-5); bf16 last readout vs fp32 reference {err16:.2e} (target <= 1e-2)"
    )


if __name__ == "__main__":
    main()
