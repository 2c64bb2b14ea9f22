"""Eager vs ``torch.compile`` for the clock: BLT inference (readouts only, all layers) and one
training step.

    python benchmarks/compile_benchmark.py                               # blt_bl, 224 px, T=10
    python benchmarks/compile_benchmark.py --img-size 64 --num-layers 4 --batch-size 4
    python benchmarks/compile_benchmark.py --device cuda --batch-size 64 --mode reduce-overhead

Cases: ``readouts`` (``forward_timesteps(x).logits``, no grad), ``all-layers``
(``forward_timesteps(x, layers="all")``, no grad) and ``train-step`` (forward, the recipe's loss over
all readouts, backward, AdamW step; the model compiled, the optimiser eager). Each case runs eager
and compiled on the same weights; the compile time is the first call's wall time (tracing +
code generation), then eager and compiled calls are interleaved (E, C, E, C, ...) and the median
of each is reported with the ratio, so that other load on the machine biases both alike. The
compiled results are checked against eager before timing (max relative difference).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "train"))
from losses import ClassificationLoss  # noqa: E402

import blt_models as bm  # noqa: E402

CASES = ("readouts", "all-layers", "train-step")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args: argparse.Namespace, device: torch.device) -> bm.ClockedModel:
    torch.manual_seed(0)
    kwargs = {} if args.num_layers is None else {"num_layers": args.num_layers}
    model = bm.create_model(args.model, timesteps=args.timesteps, **kwargs).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def relative_difference(a: object, b: object) -> float:
    """Largest ``|a - b| / max|b|`` over the tensors of two (nested) results."""
    from torch.utils._pytree import tree_flatten

    def leaves(r: object) -> list[torch.Tensor]:
        if isinstance(r, bm.TimestepOutput):
            r = [r.logits, *r.features.values()]
        return [
            t for t in tree_flatten(r)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()
        ]

    worst = 0.0
    for x, y in zip(leaves(a), leaves(b), strict=True):
        scale = float(y.abs().max().float()) or 1.0
        worst = max(worst, float((x.float() - y.float()).abs().max()) / scale)
    return worst


def clone(r: object) -> object:
    """A copy that survives the next call (CUDA-graph outputs are overwritten by the next replay)."""
    if isinstance(r, bm.TimestepOutput):
        return [r.logits.clone(), *(f.clone() for f in r.features.values())]
    return r.clone() if isinstance(r, torch.Tensor) else r


def case_functions(case: str, args, device) -> tuple[Callable[[], object], Callable[[], object]]:
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    compile_kwargs = {"mode": args.mode} if args.mode else {}
    if case in ("readouts", "all-layers"):
        model = build(args, device).eval()
        layers = "all" if case == "all-layers" else None
        compiled = torch.compile(model.forward_timesteps, **compile_kwargs)

        def run(fn: Callable) -> Callable[[], object]:
            def call() -> object:
                with torch.no_grad(), autocast:
                    out = fn(x, layers=layers)
                return out if layers else out.logits

            return call

        return run(model.forward_timesteps), run(compiled)

    # train-step: two copies with the same start, each with its optimiser.
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    loss_fn = ClassificationLoss(gamma=1.0)

    def trainer(compiled: bool) -> Callable[[], object]:
        model = build(args, device).train()
        if args.grad_checkpointing:
            model.set_grad_checkpointing(True)
        forward = (
            torch.compile(model.forward_timesteps, **compile_kwargs)
            if compiled
            else model.forward_timesteps
        )
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step() -> object:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn(forward(x).logits, y)
            loss.backward()
            grads = [p.grad.detach().clone() for p in model.parameters()][:4]
            opt.step()
            return [loss.detach().clone(), *grads]

        return step

    return trainer(False), trainer(True)


def measure(case: str, args, device) -> dict:
    eager, compiled = case_functions(case, args, device)
    torch._dynamo.reset()
    t0 = time.perf_counter()
    first = clone(compiled())
    sync(device)
    compile_s = time.perf_counter() - t0
    # Also eager's warm-up. train-step: both took their first step from the same weights.
    difference = relative_difference(first, clone(eager()))
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for name, fn in (("eager", eager), ("compiled", compiled)):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"case": case, "compile_s": compile_s, "eager_s": med["eager"], "compiled_s": med["compiled"],
            "speedup": med["eager"] / med["compiled"], "max_rel_diff": difference,
            "eager_img_s": args.batch_size / med["eager"], "compiled_img_s": args.batch_size / med["compiled"],
            "times": times}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blt_bl")
    p.add_argument("--num-layers", type=int, default=None)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5, help="interleaved eager/compiled pairs")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--mode", default=None, help="torch.compile mode (e.g. reduce-overhead on CUDA)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument(
        "--grad-checkpointing", action="store_true", help="train-step with checkpointing"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    layout = "channels_last" if args.channels_last else "NCHW"
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print(f"{args.model} ({args.num_layers or 'default'} layers), {args.img_size} px, T={args.timesteps}, "
          f"batch {args.batch_size}, {args.dtype}, {layout}, mode={args.mode or 'default'}; "
          f"medians of {args.rounds} interleaved eager/compiled pairs\n")  # fmt: skip
    header = (f"{'case':<11} {'compile s':>9} {'eager s':>8} {'compiled s':>10} {'eager img/s':>11} "
              f"{'comp. img/s':>11} {'speedup':>7} {'max rel diff':>12}")  # fmt: skip
    print(header)
    print("-" * len(header))
    rows = []
    for case in args.cases:
        r = measure(case, args, device)
        rows.append(r)
        print(f"{case:<11} {r['compile_s']:9.1f} {r['eager_s']:8.3f} {r['compiled_s']:10.3f} "
              f"{r['eager_img_s']:11.1f} {r['compiled_img_s']:11.1f} {r['speedup']:7.2f} "
              f"{r['max_rel_diff']:12.1e}", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "torch": torch.__version__,
                                               "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
