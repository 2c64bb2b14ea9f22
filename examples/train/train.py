"""Train any blt-models zoo model: one process or ``torchrun`` (DDP), classification or contrastive.

    # one process
    python examples/train/train.py --model blt_bl_tiny --dataset fashion_mnist --epochs 2
    # two processes on one machine (gloo on CPU, nccl on GPU)
    torchrun --nproc_per_node 2 examples/train/train.py --model blt_bl_tiny --dataset fashion_mnist

See examples/train/README.md for every option. Plain PyTorch; the files next to this one hold the
losses (losses.py) and the datasets (data.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# OpenMP threads that spin while they wait make CPU training several times slower whenever the
# cores are shared (other jobs, other ranks, data workers): measured 5x on 2 cores. Sleeping
# waiters cost nothing measurable on idle cores. Set before torch loads OpenMP; an explicit
# OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import DataLoader, Sampler  # noqa: E402
from torch.utils.data.distributed import DistributedSampler  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import DATASETS, SeededAugment, build_datasets  # noqa: E402
from losses import ClassificationLoss, ContrastiveLoss, ProjectionHead  # noqa: E402

import blt_models as bm  # noqa: E402


# ===================================================================================== arguments
def str2bool(value: str) -> bool:
    """A real boolean flag parser (the reference's ``type=bool`` makes "False" true, bug 14)."""
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="blt_bl_tiny", help="registry name (blt_models.list_models())")
    g.add_argument("--model-kwargs", default="{}", help='JSON constructor arguments, e.g. \'{"pool": "blur"}\'')
    g.add_argument("--pretrained", action="store_true", help="start from the model's default weights")
    g.add_argument("--timesteps", type=int, default=None, help="clock steps (default: the model's)")
    g.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute each timestep in the backward pass (BLT models): less memory")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="fashion_mnist", choices=DATASETS,
                   help="folder: your own images, one subfolder per class (with --data-path)")
    g.add_argument("--data-path", default=None,
                   help="folder: DIR/<class>/ or DIR/train|val/<class>/; ImageNet root (train/, val/); "
                   "Fashion-MNIST idx folder")  # fmt: skip
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="folder without train/ and val/: share of each class held out (split by --seed)")
    g.add_argument("--vggface2-path", default=None, help="VGGFace2 root (train/<identity>/...)")
    g.add_argument("--input-size", type=int, default=None, help="image side (default: dataset's)")
    g.add_argument("--num-cats", type=int, default=0, help="first N classes / identities only")
    g.add_argument("--horizontal-flip", type=str2bool, default=False, help="ImageNet/VGGFace2 flips")
    g.add_argument("--limit-train", type=int, default=None, help="use the first N training images")
    g.add_argument("--limit-val", type=int, default=None, help="use the first N validation images")
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    g = p.add_argument_group("objective")
    g.add_argument("--objective", default="classification", choices=("classification", "contrastive"))
    g.add_argument("--loss-gamma", type=float, default=0.0, help="weight of earlier steps (0: last only)")
    g.add_argument("--loss-choice", default="decay", choices=("decay", "weighted"))
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--contrastive-loss", default="simclr", choices=("simclr", "supcon"))
    g.add_argument("--contrastive-steps", default="last", choices=("last", "all"))
    g.add_argument("--temperature", type=float, default=0.1)
    g.add_argument("--proj-dim", type=int, default=128)
    g.add_argument("--proj-hidden", type=int, default=512)
    g.add_argument("--probe-weight", type=float, default=1.0,
                   help="contrastive: online linear probe on detached features (trains the readout)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=128, help="global batch (split over processes)")
    g.add_argument("--opt", default="adamw", choices=("adamw", "sgd"))
    g.add_argument("--lr", type=float, default=5e-4, help="the reference's 0.1 diverges with AdamW")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--sched", default="cosine", choices=("cosine", "step", "constant"))
    g.add_argument("--warmup-epochs", type=float, default=0.0)
    g.add_argument("--min-lr-ratio", type=float, default=0.0, help="cosine floor, fraction of --lr")
    g.add_argument("--lr-drop", type=float, default=30, help="step schedule: epochs between drops")
    g.add_argument("--lr-drop-gamma", type=float, default=0.1, help="step schedule: factor per drop")
    g.add_argument("--clip-max-norm", type=float, default=0.0, help="gradient-norm clipping (0: off)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward and backward (evaluation stays eager)")
    g.add_argument("--compile-mode", default=None,
                   choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                   help="torch.compile mode with --compile (reduce-overhead: CUDA graphs)")
    g.add_argument("--compile-backend", default=None, help="torch.compile backend with --compile (default inductor)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default=None, help="run directory (default runs/<model>_<dataset>_<objective>)")
    g.add_argument("--resume", default=None, help="checkpoint.pt to resume, or 'auto' (<output-dir>/checkpoint.pt)")
    g.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    g.add_argument("--stop-after-steps", type=int, default=None,
                   help="checkpoint and stop after this many global steps (simulates an interruption)")
    g.add_argument("--save-all-ranks", action="store_true", help="every rank writes its final weights")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: available cores / processes on this node)")
    g.add_argument("--tensorboard", action="store_true")
    g.add_argument("--wandb-project", default=None)
    g.add_argument("--wandb-run", default=None)
    g.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    g.add_argument("--log-every", type=int, default=50, help="print the loss every N steps")
    return p


# ===================================================================================== distributed
def available_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers,
    batch jobs), which ``os.cpu_count()`` and torch's default ignore."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


def default_threads() -> int:
    """Threads per process: available cores / processes on this node (torchrun's
    ``LOCAL_WORLD_SIZE``), at least 1: more threads than cores makes CPU training many times
    slower."""
    return max(1, available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


class Dist:
    """Process-group state; a single process is world size 1 without a group."""

    def __init__(self, device_arg: str | None) -> None:
        self.enabled = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) >= 1
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = torch.cuda.is_available() if device_arg is None else device_arg.startswith("cuda")
        if use_cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if self.enabled:
            backend = "nccl" if use_cuda else "gloo"
            # nccl: bind the process group to this rank's GPU (barriers and collectives then
            # never guess the device).
            dist.init_process_group(backend, init_method="env://", device_id=self.device if use_cuda else None)
            self.world, self.rank = dist.get_world_size(), dist.get_rank()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, tensor: Tensor) -> Tensor:
        if self.enabled and self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.enabled or self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled and self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():  # no destroy without a group (reference bug 18)
            dist.destroy_process_group()


class SkipSampler(Sampler[int]):
    """The indices of ``sampler`` after the first ``skip`` (resume in the middle of an epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int = 0) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it)
        return it

    def __len__(self) -> int:
        return len(self.sampler) - self.skip  # type: ignore[arg-type]


class ShardSampler(Sampler[int]):
    """Evaluation shard ``rank::world`` without padding, so all-reduced counts are exact."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ===================================================================================== model
class StepsWrapper(nn.Module):
    """What DDP wraps: the zoo model (and the contrastive projection head) returning per-step
    outputs. ``logits [R, B, K]``; with a head also ``proj [R, B, D]`` (projections of the pooled
    readout features, the input of the classifier at every readout step) and ``probe [R, B, K]``
    (the classifier on detached features: an online linear probe)."""

    def __init__(self, model: bm.ClockedModel, timesteps: int | None = None,
                 head: nn.Module | None = None, grad_checkpoint: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.model, self.head, self.timesteps = model, head, timesteps
        if grad_checkpoint:  # recompute each clock step in backward: memory flat in timesteps
            model.set_grad_checkpointing(True)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features: list[Tensor] = []
        handle = None
        if self.head is not None:
            hook = lambda module, args: features.append(args[0])  # noqa: E731
            handle = self.model.get_classifier().register_forward_pre_hook(hook)
        try:
            logits = self.model.forward_timesteps(x, self.timesteps).logits
        finally:
            if handle is not None:
                handle.remove()
        out = {"logits": logits}
        if self.head is not None:
            feats = torch.stack(features).flatten(2)
            out["proj"] = self.head(feats)
            out["probe"] = self.model.get_classifier()(feats.detach())
        return out


# ===================================================================================== schedule
def lr_lambda(args: argparse.Namespace, steps_per_epoch: int):
    total = max(1, args.epochs * steps_per_epoch)
    warmup = int(round(args.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if args.sched == "constant":
            return 1.0
        if args.sched == "step":
            return args.lr_drop_gamma ** int((step / steps_per_epoch) // args.lr_drop)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# ===================================================================================== saving
def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a half file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ===================================================================================== metrics
class Recorder:
    """metrics.csv + metrics.jsonl (+ TensorBoard / wandb when asked), on rank 0 only."""

    def __init__(self, args: argparse.Namespace, run_dir: Path, config: dict, active: bool) -> None:
        self.active, self.run_dir = active, run_dir
        self.tb = self.wandb = None
        if not active:
            return
        if args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if args.wandb_project:
            try:
                import wandb
            except ImportError:
                print("wandb is not installed: --wandb-project ignored (pip install wandb)")
            else:
                self.wandb = wandb.init(project=args.wandb_project, name=args.wandb_run,
                                        config=config, dir=str(run_dir))  # fmt: skip

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.active:
            return
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def epoch(self, row: dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        flat = {k: v for k, v in row.items() if not isinstance(v, list)}
        for key in ("top1_per_step", "top5_per_step")[: 2 if "top5_per_step" in row else 1]:
            for step, value in zip(row["readout_steps"], row[key], strict=True):
                flat[f"{key[:4]}_step{step}"] = value
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(flat))
            if new:
                writer.writeheader()
            writer.writerow(flat)
        self.scalars({f"val/{k}": v for k, v in flat.items() if isinstance(v, float)}, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


# ===================================================================================== loops
@torch.no_grad()
def evaluate(model: bm.ClockedModel, loader: DataLoader, args: argparse.Namespace, env: Dist,
             criterion: ClassificationLoss) -> dict[str, Any]:  # fmt: skip
    """Per-step top-1 / top-5 and the weighted loss, summed over ranks (exact: no padding)."""
    model.eval()
    top1 = top5 = None
    loss_sum = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=args.bf16)
    for x, y in loader:
        x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
        with autocast:
            out = model.forward_timesteps(x, args.timesteps)
        logits = out.logits.float()
        if top1 is None:
            r = len(logits)
            top1 = torch.zeros(r, dtype=torch.float64)
            top5 = torch.zeros(r, dtype=torch.float64)
            steps = out.steps.tolist()
        k = min(5, logits.shape[-1])
        pred = logits.topk(k, dim=-1).indices  # [R, B, k]
        hit = pred == y[None, :, None]
        top1 += hit[..., 0].sum(1).double().cpu()
        top5 += hit.any(-1).sum(1).double().cpu()
        loss_sum += criterion(logits, y).double().cpu() * len(y)
        count += len(y)
    if top1 is None:  # this rank got no images: still join the all-reduce
        r = len(model.readout_steps(args.timesteps))
        top1, top5 = torch.zeros(r, dtype=torch.float64), torch.zeros(r, dtype=torch.float64)
        steps = model.readout_steps(args.timesteps)
    packed = env.all_sum(torch.cat([top1, top5, loss_sum[None], count[None]]).to(env.device)).cpu()
    r = len(top1)
    n = packed[-1].item()
    metrics = {
        "readout_steps": steps,
        # Percentages to 4 decimals (exact counts behind them); no 40.400000000000006.
        "top1_per_step": [round(v, 4) for v in (packed[:r] / n * 100).tolist()],
        "top5_per_step": [round(v, 4) for v in (packed[r : 2 * r] / n * 100).tolist()],
        "val_loss": round(packed[2 * r].item() / n, 6),
        "val_images": int(n),
    }
    if model.num_classes <= 5:  # top-5 of 5 or fewer classes is always 100%: not reported
        del metrics["top5_per_step"]
    return metrics


def compute_loss(out: dict[str, Tensor], y: Tensor, args: argparse.Namespace,
                 cls_loss: ClassificationLoss, con_loss: ContrastiveLoss | None) -> Tensor:  # fmt: skip
    if con_loss is None:
        return cls_loss(out["logits"], y)
    loss = con_loss(out["proj"], y)
    if args.probe_weight > 0:
        b = len(y)
        loss = loss + args.probe_weight * cls_loss(out["probe"][:, :b], y)
    return loss


def find_unused(wrapper: StepsWrapper, shape: tuple[int, ...], num_classes: int, args, cls_loss, con_loss,
                device) -> list[str]:  # fmt: skip
    """Names of parameters that the loss does not reach (DDP must know of them)."""
    b = 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * b if con_loss is not None else b, *shape, generator=g).to(device)
    y = torch.arange(b, device=device) % num_classes
    buffers = {n: t.clone() for n, t in wrapper.named_buffers()}  # e.g. BatchNorm running stats
    compute_loss(wrapper(x), y, args, cls_loss, con_loss).backward()
    unused = [n for n, p in wrapper.named_parameters() if p.requires_grad and p.grad is None]
    wrapper.zero_grad(set_to_none=True)
    with torch.no_grad():
        for n, t in wrapper.named_buffers():
            t.copy_(buffers[n])
    return unused


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.compile and (args.compile_mode or args.compile_backend):
        parser.error("--compile-mode and --compile-backend need --compile")
    env = Dist(args.device)
    try:
        return run(args, env)
    finally:
        env.close()


def run(args: argparse.Namespace, env: Dist) -> dict[str, Any]:
    t_start = time.time()
    if args.batch_size % env.world:
        raise ValueError(f"--batch-size {args.batch_size} is not divisible by {env.world} processes")
    batch = args.batch_size // env.world
    run_dir = Path(args.output_dir or f"runs/{args.model}_{args.dataset}_{args.objective}")
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    env.barrier()

    def log(msg: str) -> None:
        if env.main:
            print(msg, flush=True)
            with open(run_dir / "log.txt", "a") as f:
                f.write(msg + "\n")

    if env.device.type == "cpu":
        threads = args.threads or default_threads()
        torch.set_num_threads(threads)
        log(f"CPU threads per process: {threads} ({'--threads' if args.threads else 'default'}: "
            f"{available_cpus()} available cores / {os.environ.get('LOCAL_WORLD_SIZE', 1)} process(es) "
            f"on this node; --threads N to change), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")  # fmt: skip

    # ------------------------------------------------------------------ data
    contrastive = args.objective == "contrastive"
    train_ds, val_ds, info = build_datasets(
        args.dataset, data_path=args.data_path, vggface2_path=args.vggface2_path,
        input_size=args.input_size, contrastive=contrastive, horizontal_flip=args.horizontal_flip,
        num_cats=args.num_cats, limit_train=args.limit_train, limit_val=args.limit_val,
        val_fraction=args.val_fraction, seed=args.seed,
    )  # fmt: skip
    if info.class_names:
        shown = ", ".join(info.class_names[:10]) + (", ..." if len(info.class_names) > 10 else "")
        log(f"{info.num_classes} classes: {shown}")
    train_ds = SeededAugment(train_ds, args.seed)
    sampler = DistributedSampler(train_ds, num_replicas=env.world, rank=env.rank, shuffle=True,
                                 seed=args.seed, drop_last=True)  # fmt: skip
    steps_per_epoch = len(sampler) // batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_ds)} training images give no batch of {batch} per process")
    val_loader = DataLoader(val_ds, batch_size=max(batch, 256), sampler=ShardSampler(len(val_ds), env.rank, env.world),
                            num_workers=args.workers, pin_memory=env.device.type == "cuda")  # fmt: skip

    # ------------------------------------------------------------------ model
    torch.manual_seed(args.seed)
    model_args: dict[str, Any] = json.loads(args.model_kwargs)
    if model_args.get("num_classes", info.num_classes) != info.num_classes:
        raise ValueError(f"--model-kwargs num_classes={model_args['num_classes']}, but the data has "
                         f"{info.num_classes} classes: leave num_classes out (it comes from the data)")  # fmt: skip
    model_args.update(num_classes=info.num_classes, in_chans=info.in_chans)
    if args.timesteps is not None:
        model_args["timesteps"] = args.timesteps
    model = bm.create_model(args.model, pretrained=args.pretrained, **model_args)
    if model.num_classes != info.num_classes:  # never train a head of another width
        raise ValueError(f"{args.model} has a {model.num_classes}-way head but the data has {info.num_classes} classes")
    model_args["timesteps"] = model.timesteps
    arch_name, tag = args.model.partition(".")[::2]
    if tag or args.pretrained:  # constructor arguments that the tag's weights needed
        model_args = {**bm.get_pretrained_cfg(arch_name, tag).model_args, **model_args}
    model.to(env.device)
    head = None
    if contrastive:
        in_features = model.get_classifier().in_features
        head = ProjectionHead(in_features, args.proj_hidden, args.proj_dim).to(env.device)
    wrapper = StepsWrapper(model, args.timesteps, head, args.grad_checkpoint).to(env.device)
    cls_loss = ClassificationLoss(args.loss_gamma, args.loss_choice, args.label_smoothing)
    con_loss = (ContrastiveLoss(args.contrastive_loss, args.temperature, args.contrastive_steps,
                                args.loss_gamma, args.loss_choice) if contrastive else None)  # fmt: skip
    val_loss_fn = ClassificationLoss(args.loss_gamma, args.loss_choice, 0.0)
    unused = find_unused(wrapper, (info.in_chans, info.input_size, info.input_size), info.num_classes,
                         args, cls_loss, con_loss, env.device)  # fmt: skip
    ddp: nn.Module = wrapper
    if env.enabled and env.world > 1:
        ddp = nn.parallel.DistributedDataParallel(
            wrapper, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
            find_unused_parameters=bool(unused),
        )  # fmt: skip
    if args.compile:  # in place (nn.Module.compile): state-dict keys stay the model's own
        ddp.compile(backend=args.compile_backend or "inductor", mode=args.compile_mode)

    # ------------------------------------------------------------------ optimisation
    params = [p for p in wrapper.parameters() if p.requires_grad]
    if args.opt == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args, steps_per_epoch))

    # ------------------------------------------------------------------ resume
    # best: the best validation top-1 so far (None until an epoch has been evaluated); epoch_loss:
    # the summed training loss and batch count of the current epoch over all ranks, so that a
    # resumed epoch reports the mean over all its batches, not only the post-resume ones.
    start_epoch, start_batch, step = 0, 0, 0
    best: float | None = None
    epoch_loss = (0.0, 0)
    resume = str(run_dir / "checkpoint.pt") if args.resume == "auto" else args.resume
    if resume and Path(resume).is_file():
        ckpt = torch.load(resume, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        if head is not None:
            head.load_state_dict(ckpt["head"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, start_batch, step, best = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"], ckpt["best_top1"]
        best = None if best is None or best < 0 else best  # older checkpoints: -1.0 for none
        epoch_loss = tuple(ckpt.get("epoch_loss", (0.0, 0)))  # type: ignore[assignment]
        if ckpt["world_size"] == env.world:
            set_rng_state(ckpt["rng"][env.rank])
        else:
            log(f"note: checkpoint written by {ckpt['world_size']} processes, now {env.world}: RNG states not restored")
        log(f"resumed {resume}: epoch {start_epoch}, batch {start_batch}, step {step}")
    elif args.resume and args.resume != "auto":
        raise FileNotFoundError(f"--resume {args.resume}: no such file")

    architecture = args.model.partition(".")[0]  # "arch.tag" fine-tunes a tag's weights
    pretrained_cfg = bm.PretrainedCfg(
        architecture=architecture, tag=args.dataset, input_size=(info.in_chans, info.input_size, info.input_size),
        interpolation="bilinear", crop_pct=info.crop_pct, mean=info.mean, std=info.std, num_classes=info.num_classes,
        class_names=info.class_names, timesteps=model.timesteps, unroll=getattr(model, "unroll", None),
        source="blt-models examples/train/train.py", training_data=info.description,
    )  # fmt: skip
    config = {
        "args": vars(args), "world_size": env.world, "batch_per_process": batch,
        "steps_per_epoch": steps_per_epoch, "model_args": model_args, "unused_parameters": unused,
        "data": vars(info), "device": str(env.device),
        "versions": {"torch": torch.__version__, "blt_models": bm.__version__, "python": platform.python_version()},
        "command": " ".join(sys.argv),
    }  # fmt: skip
    if env.main:
        (run_dir / "run_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    recorder = Recorder(args, run_dir, config, env.main)
    log(f"{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters; {env.world} process(es) "
        f"on {env.device}; {len(train_ds)} train / {len(val_ds)} val images; {steps_per_epoch} steps/epoch")  # fmt: skip

    def save_checkpoint(epoch: int, batch_in_epoch: int, partial: tuple[float, int] = (0.0, 0)) -> None:
        rngs = env.gather_objects(rng_state())
        if env.main:
            state = {
                "model": model.state_dict(), "head": head.state_dict() if head is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step, "best_top1": best,
                "sampler_epoch": epoch, "rng": rngs, "world_size": env.world, "args": vars(args),
                "model_args": model_args, "epoch_loss": partial,
            }  # fmt: skip
            atomic_save(state, run_dir / "checkpoint.pt")
        env.barrier()

    def epoch_partial(loss_sum: Tensor, seen: int) -> tuple[float, int]:
        """This epoch's loss sum and batch count so far, over all ranks."""
        total = env.all_sum(torch.tensor([loss_sum.item(), seen], dtype=torch.float64, device=env.device)).cpu()
        return total[0].item(), int(total[1].item())

    # ------------------------------------------------------------------ train
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=args.bf16)
    progress = not args.no_progress and env.main
    result: dict[str, Any] = {"run_dir": str(run_dir)}
    stopped = False
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        skip = start_batch if epoch == start_epoch else 0
        loader = DataLoader(train_ds, batch_size=batch, sampler=SkipSampler(sampler, skip * batch),
                            drop_last=True, num_workers=args.workers,
                            pin_memory=env.device.type == "cuda")  # fmt: skip
        wrapper.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        seen = 0
        if epoch == start_epoch and env.main:  # the batches of this epoch before the resume
            loss_sum += epoch_loss[0]
            seen = int(epoch_loss[1])
        t_epoch = time.time()
        iterator = loader
        if progress:
            from tqdm import tqdm

            iterator = tqdm(loader, total=steps_per_epoch - skip, desc=f"epoch {epoch}", dynamic_ncols=True,
                            mininterval=1 if sys.stderr.isatty() else 30)  # fmt: skip
        for i, (x, y) in enumerate(iterator, start=skip):
            if contrastive:
                x = torch.cat(list(x))
            x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
            with autocast:
                out = ddp(x)
            loss = compute_loss(out, y, args, cls_loss, con_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = args.clip_max_norm if args.clip_max_norm > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            # Gradients are all-reduced, so every rank sees the same norm and stops together.
            if not torch.isfinite(grad_norm):
                raise FloatingPointError(f"non-finite gradient at step {step} (loss {loss.item()})")
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss.detach().double().cpu()
            seen += 1
            if step % args.log_every == 0:
                lr = optimizer.param_groups[0]["lr"]
                recorder.scalars({"train/loss": loss.item(), "train/lr": lr, "train/grad_norm": grad_norm.item()}, step)
                if not progress:
                    log(f"epoch {epoch} step {step} loss {loss.item():.4f} lr {lr:.2e}")
            if args.stop_after_steps is not None and step >= args.stop_after_steps:
                save_checkpoint(epoch, i + 1, epoch_partial(loss_sum, seen))
                log(f"stopped after {step} steps (checkpoint written)")
                stopped = True
                break
            if args.checkpoint_every and step % args.checkpoint_every == 0 and i + 1 < steps_per_epoch:
                save_checkpoint(epoch, i + 1, epoch_partial(loss_sum, seen))
        if stopped:
            break
        train_loss = (env.all_sum(torch.tensor([loss_sum.item(), seen], dtype=torch.float64, device=env.device)).cpu())
        metrics = evaluate(model, val_loader, args, env, val_loss_fn)
        top1 = metrics["top1_per_step"][-1]
        row = {"epoch": epoch, "step": step, "lr": float(f"{optimizer.param_groups[0]['lr']:.6g}"),
               "train_loss": round(train_loss[0].item() / max(1, train_loss[1].item()), 6),
               "val_loss": metrics["val_loss"], "top1": top1,
               **({"top5": metrics["top5_per_step"][-1]} if "top5_per_step" in metrics else {}),
               "epoch_time_s": round(time.time() - t_epoch, 1),
               "wall_time_s": round(time.time() - t_start, 1), **metrics}  # fmt: skip
        recorder.epoch(row)
        per_step = " ".join(f"t{s}:{a:.2f}" for s, a in zip(metrics["readout_steps"], metrics["top1_per_step"], strict=True))
        log(f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"top-1 {top1:.2f}" + (f" top-5 {row['top5']:.2f}" if "top5" in row else "")
            + f" ({row['epoch_time_s']:.0f}s) per step: {per_step}")  # fmt: skip
        top5 = "top5_per_step" in metrics
        per_step_table = {"step": metrics["readout_steps"], "top1 (%)": metrics["top1_per_step"],
                          **({"top5 (%)": metrics["top5_per_step"]} if top5 else {})}  # fmt: skip
        cfg = pretrained_cfg.replace(metrics={
            "epoch": epoch, "top1": top1, **({"top5": row["top5"]} if top5 else {}),
            "readout_steps": metrics["readout_steps"], "top1_per_step": metrics["top1_per_step"],
            **({"top5_per_step": metrics["top5_per_step"]} if top5 else {}),
            "val_images": metrics["val_images"],
            # the model card renders this as a per-step accuracy table
            "per_step": per_step_table})  # fmt: skip
        model.pretrained_cfg = cfg
        if env.main:
            bm.save_pretrained(model, run_dir / "last")
        if best is None or top1 > best:  # the same all-reduced number on every rank
            best = top1
            if env.main:
                bm.save_pretrained(model, run_dir / "best")
                log(f"new best top-1 {best:.2f} -> {run_dir / 'best'}")
        step_in_next = 0
        save_checkpoint(epoch + 1, step_in_next)
        result.update(row)
    result.update(best_top1=best, stopped=stopped, step=step, wall_time_s=round(time.time() - t_start, 1))
    if args.save_all_ranks:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(run_dir / f"final_rank{env.rank}.safetensors"))  # fmt: skip
    if env.main:
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    if best is None:
        log(f"stopped after {time.time() - t_start:.0f}s before the first validation; no best top-1 "
            "yet (resume with --resume auto)")
    else:
        log(f"done in {time.time() - t_start:.0f}s; best top-1 {best:.2f}")
    recorder.close()
    env.barrier()
    return result


if __name__ == "__main__":
    main()
