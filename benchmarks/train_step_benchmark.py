"""Training-step benchmark: images/s and peak memory of one optimiser step, against the reference loop.

    python benchmarks/train_step_benchmark.py                 # blt_bl, 224 px, T=10, batch 16
    python benchmarks/train_step_benchmark.py --batch-size 8 --steps 2 --rounds 3
    python benchmarks/train_step_benchmark.py --device cuda --batch-size 64

One training step is what examples/train/train.py does: forward (``forward_timesteps``, every
readout), the recipe's ``ClassificationLoss`` over all readouts (equal weights: ``gamma=1``),
backward, AdamW step. Settings:

- ``ref-fp32`` / ``ref-bf16``: the literal reference loop (tests/_reference_blt.py: every present
  layer at every step, NCHW) on the same modules, trained the same way;
- ``ours-*``: blt-models' clock, NCHW or channels_last (``cl``), fp32 or bf16 autocast, with or
  without ``set_grad_checkpointing`` (``ckpt``: keep each step's outputs, recompute the step in
  backward).

Time: the settings are interleaved in one process (A, B, C, A, B, C, ...) and the median step time
of each is reported, so that other load on the machine biases every setting alike; ratios are
against ``ref-fp32`` of the same run. Memory: on CUDA ``torch.cuda.max_memory_allocated`` over one
step (after a warm-up step), in the same process; on CPU the peak resident-memory increase over
the first training step of a fresh subprocess per setting (the resident high-water mark during
the step, reset just before it, minus the resident memory before it; model and data already
built; includes AdamW's state, the same for every setting, and allocator caching).

Before timing, the loss and the gradients of every setting are compared with the reference loop
run in float64 on the same weights and batch (fp32 settings: within 10x the reference loop's own
fp32 error; bf16: loss within 1%, gradients within 10%); the script stops if one disagrees.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples" / "train"))
from _reference_blt import reference_forward  # noqa: E402
from losses import ClassificationLoss  # noqa: E402

import blt_models as bm  # noqa: E402

SETTINGS = (
    "ref-fp32",
    "ref-bf16",
    "ours-fp32",
    "ours-fp32-cl",
    "ours-fp32-cl-ckpt",
    "ours-bf16-cl",
    "ours-bf16-cl-ckpt",
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(args: argparse.Namespace, device: torch.device) -> bm.ClockedModel:
    torch.manual_seed(0)
    kwargs = {} if args.num_layers is None else {"num_layers": args.num_layers}
    model = bm.create_model(args.model, timesteps=args.timesteps, **kwargs)
    return model.to(device).train()


def make_batch(args: argparse.Namespace, model: bm.ClockedModel, device: torch.device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g)
    y = torch.randint(0, model.num_classes, (args.batch_size,), generator=g)
    return x.to(device), y.to(device)


class Trainer:
    """One setting: its model copy, its optimiser and its input layout."""

    def __init__(self, setting: str, base: bm.ClockedModel, args: argparse.Namespace,
                 x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        self.setting = setting
        self.reference = setting.startswith("ref")
        self.bf16 = "bf16" in setting
        channels_last = "-cl" in setting
        self.model = build_model(args, x.device)
        self.model.load_state_dict(base.state_dict())
        self.model.to(dtype)
        x = x.to(dtype)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.set_grad_checkpointing("ckpt" in setting)
        self.x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        self.y = y
        self.timesteps = args.timesteps
        self.loss_fn = ClassificationLoss(gamma=1.0, choice="decay")  # all readouts, equal weight
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=1e-4)

    def logits(self) -> torch.Tensor:
        with torch.autocast(self.x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.reference:
                return torch.stack(reference_forward(self.model, self.x, self.timesteps))
            return self.model.forward_timesteps(self.x, self.timesteps).logits

    def loss_and_grads(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.model.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.logits(), self.y)
        loss.backward()
        grads = {n: p.grad.detach().float().clone() for n, p in self.model.named_parameters()
                 if p.grad is not None}  # fmt: skip
        self.model.zero_grad(set_to_none=True)
        return loss.detach().float(), grads

    def step(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.logits(), self.y)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _errors(loss, grads, ref_loss, ref_grads) -> tuple[float, float, float, str]:
    """Relative errors: loss, all gradients at once, and the worst single gradient tensor."""
    if grads.keys() != ref_grads.keys():
        raise SystemExit(
            f"gradients for {sorted(grads.keys() ^ ref_grads.keys())} differ in presence"
        )
    worst, worst_name, diff2, ref2 = 0.0, "", 0.0, 0.0
    for n, g in grads.items():
        d, r = float((g - ref_grads[n]).norm()), float(ref_grads[n].norm())
        diff2, ref2 = diff2 + d * d, ref2 + r * r
        if d / max(r, 1e-30) > worst:
            worst, worst_name = d / max(r, 1e-30), n
    loss_err = abs(float(loss) - float(ref_loss)) / abs(float(ref_loss))
    return loss_err, (diff2 / max(ref2, 1e-60)) ** 0.5, worst, worst_name


def check_parity(trainers: dict[str, Trainer], exact: Trainer) -> list[str]:
    """Loss and gradients of every setting against the reference loop in float64 (same weights,
    same batch). The reference loop's own fp32 error sets the scale of fp32 rounding: an fp32
    setting may be at most 10x further from float64 than it (different kernels sum in different
    orders; through ~10 recurrent steps and GroupNorm, small gradients differ by ~1e-3)."""
    loss64, grads64 = exact.loss_and_grads()
    ref = _errors(*trainers["ref-fp32"].loss_and_grads(), loss64, grads64)
    lines = []
    for name, trainer in trainers.items():
        loss_err, overall, worst, worst_name = (
            ref if name == "ref-fp32" else _errors(*trainer.loss_and_grads(), loss64, grads64)
        )
        if "bf16" in name:  # 8-bit mantissa: the loss to 1%, the gradient as a whole to 10%
            ok, tol = loss_err < 1e-2 and overall < 0.1, "loss 1e-2, all grads 0.1"
        else:
            bound = 10 * ref[1] + 1e-6
            ok, tol = loss_err < 1e-5 and overall <= bound, f"loss 1e-5, all grads {bound:.0e}"
        lines.append(f"  {name:<18} loss {loss_err:.1e}  all grads {overall:.1e}  worst tensor "
                     f"{worst:.1e} ({worst_name})  {'ok' if ok else 'MISMATCH'} (tol {tol})")  # fmt: skip
        if not ok:
            print("\n".join(lines))
            raise SystemExit(f"{name} disagrees with the reference loop: not timing it")
    return lines


def peak_memory_cuda(trainer: Trainer) -> float:
    device = trainer.x.device
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    trainer.step()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def memory_child(args: argparse.Namespace) -> None:
    """Fresh process: peak resident memory of the first training step of ``--child-setting``,
    above the resident memory just before it (model, optimiser and batch built)."""
    device = torch.device(args.device)
    base = build_model(args, device)
    x, y = make_batch(args, base, device)
    trainer = Trainer(args.child_setting, base, args, x, y)
    del base
    try:  # Linux: reset the high-water mark, so that set-up peaks do not count
        Path("/proc/self/clear_refs").write_text("5")
        reset = _status_kib("VmHWM") is not None
    except OSError:
        reset = False
    before = _status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.step()
    after = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"setting": args.child_setting, "peak_mib": (after - before) / 1024}))  # type: ignore[operator]


def peak_memory_cpu(args: argparse.Namespace, setting: str) -> float:
    cmd = [sys.executable, __file__, "--child-setting", setting, "--model", args.model,
           "--img-size", str(args.img_size), "--batch-size", str(args.batch_size),
           "--timesteps", str(args.timesteps), "--device", "cpu"]  # fmt: skip
    if args.num_layers is not None:
        cmd += ["--num-layers", str(args.num_layers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def timed(fn: Callable[[], float], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blt_bl")
    p.add_argument("--num-layers", type=int, default=None, help="override (default: the model's)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--steps", type=int, default=2, help="timed steps per setting and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the settings")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--child-setting", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_setting is not None:
        memory_child(args)
        return
    device = torch.device(args.device)
    settings = list(dict.fromkeys(["ref-fp32", *args.settings]))  # the baseline of every ratio

    base = build_model(args, device)
    x, y = make_batch(args, base, device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, device {device} {gpu}, {torch.get_num_threads()} CPU threads, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print(f"{args.model}, {args.img_size} px, T={args.timesteps}, batch {args.batch_size}, "
          f"{len(base.readout_steps(args.timesteps))} readouts in the loss, AdamW; "
          f"{args.rounds} interleaved rounds x {args.steps} steps per setting\n")  # fmt: skip
    trainers = {s: Trainer(s, base, args, x, y) for s in settings}

    print("Parity at the start (same weights and batch; relative errors against the reference "
          "loop in float64):")  # fmt: skip
    exact = Trainer("ref-fp32", base, args, x, y, dtype=torch.float64)
    parity = check_parity(trainers, exact)
    del exact
    print("\n".join(parity) + "\n")

    for trainer in trainers.values():  # warm-up: oneDNN / cuDNN algorithm choice, AdamW state
        trainer.step()
    times: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for s, trainer in trainers.items():
            for _ in range(args.steps):
                times[s].append(timed(trainer.step, device))
    ref_time = statistics.median(times["ref-fp32"])
    print("Median step times (memory follows):")  # kept if the memory pass is cut short
    for s in settings:
        print(f"  {s:<18} {statistics.median(times[s]):7.3f} s  x ref {ref_time / statistics.median(times[s]):5.2f}",
              flush=True)  # fmt: skip
    print()

    memory: dict[str, float | None] = dict.fromkeys(settings)
    if not args.skip_memory:
        for s, trainer in trainers.items():
            memory[s] = peak_memory_cuda(trainer) if device.type == "cuda" else None
        if device.type != "cuda":
            del trainers
            for s in settings:
                memory[s] = peak_memory_cpu(args, s)

    what = (
        "max_memory_allocated above the allocation before the step"
        if device.type == "cuda"
        else "peak resident memory above that before the step, fresh process"
    )
    header = (
        f"{'setting':<18} {'s/step':>7} {'img/s':>7} {'x ref':>6} {'peak MiB':>9} {'mem x ref':>9}"
    )
    print(f"Median step time over {args.rounds * args.steps} steps; memory: {what}")
    print(header)
    print("-" * len(header))
    rows = []
    ref_mem = memory["ref-fp32"]
    for s in settings:
        med = statistics.median(times[s])
        mem = memory[s]
        row = {"setting": s, "seconds_per_step": med, "images_per_s": args.batch_size / med,
               "speed_vs_ref": ref_time / med, "peak_mib": mem,
               "memory_vs_ref": mem / ref_mem if mem is not None and ref_mem else None,
               "times": times[s]}  # fmt: skip
        rows.append(row)
        ratio = row["memory_vs_ref"]
        mem_txt = f"{mem:9.0f}" if mem is not None else f"{'-':>9}"
        mem_txt += f" {ratio:9.2f}" if ratio is not None else f" {'-':>9}"
        print(f"{s:<18} {med:7.3f} {row['images_per_s']:7.1f} {row['speed_vs_ref']:6.2f} {mem_txt}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "device": str(device), "gpu": gpu,
                                               "torch": torch.__version__, "parity": parity,
                                               "rows": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
