"""A/B: the static-image path before and after time-varying input ([T, B, C, H, W]) on the clock.

    python benchmarks/static_input_ab.py --old /tmp/old_tree [--reps 7]

``--old`` is a folder holding the previous package renamed to ``blt_models_old`` (e.g.
``git archive <commit> blt_models | tar -x -C DIR && mv DIR/blt_models DIR/blt_models_old``).
Both versions build the same models with the same weights in ONE process and are timed in
alternation (A, B, A, B, ...), so load from other processes biases both alike; it prints the
median of each and the ratio new / old. It also times a constant sequence [T, B, ...] (one input
stage per step) against the static image on the new version.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least "
                        "sensitive to other processes on a shared machine)")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, args.old)
    import blt_models_old as old

    import blt_models as new

    torch.set_num_threads(args.threads)
    cases = [
        ("blt_bl_tiny", dict(), (16, 1, 32, 32), None),
        ("blt_bl_tiny", dict(), (16, 1, 32, 32), "all"),
        ("blt_bl", dict(num_classes=10), (4, 3, 64, 64), None),
        ("blt_bl", dict(num_classes=10, unroll="standard"), (4, 3, 64, 64), "all"),
        ("cornet_rt", dict(num_classes=10), (4, 3, 64, 64), "all"),
        ("blt_b", dict(num_classes=10), (8, 3, 64, 64), None),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.reps} reps, "
          "shared machine: medians of interleaved runs")  # fmt: skip
    print(f"{'model':12s} {'setting':18s} {'old ms':>9s} {'new ms':>9s} {'new/old':>8s} "
          f"{'seq ms':>9s} {'seq/static':>10s}")  # fmt: skip
    for name, kwargs, shape, layers in cases:
        torch.manual_seed(0)
        a = old.create_model(name, **kwargs).eval()
        b = new.create_model(name, **kwargs).eval()
        b.load_state_dict(a.state_dict())
        x = torch.randn(shape)
        seq = x[None].repeat(b.timesteps, 1, 1, 1, 1) if not b.feedforward else None

        def call(model, inp, layers=layers):
            with torch.no_grad():
                if layers is None:
                    return model(inp)
                return model.forward_timesteps(inp, layers=layers).logits

        assert torch.equal(call(a, x), call(b, x))
        times: dict[str, list[float]] = {"old": [], "new": [], "seq": []}
        runs = [("old", a, x), ("new", b, x)] + ([("seq", b, seq)] if seq is not None else [])
        for _ in range(args.reps):
            for key, model, inp in runs:
                t0 = time.perf_counter()
                call(model, inp)
                times[key].append(1000 * (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in times.items() if v}
        setting = "forward" if layers is None else "timesteps, all"
        seq_cols = (
            f"{med['seq']:9.1f} {med['seq'] / med['new']:10.2f}"
            if "seq" in med
            else f"{'-':>9s} {'-':>10s}"
        )
        print(
            f"{name:12s} {setting:18s} {med['old']:9.1f} {med['new']:9.1f} "
            f"{med['new'] / med['old']:8.3f} {seq_cols}"
        )


if __name__ == "__main__":
    main()
