"""ConvRNN per-step inference speed: the TensorFlow reference against the PyTorch port, in one run.

    # both sides, one after the other, in one invocation (the ratio is taken within the run):
    PYTHONPATH=. .venv/bin/python benchmarks/convrnn_speed.py --reference /path/to/convrnns \\
        [--models rgc_intermediate,ugrnn_intermediate --batch 4 --repeats 3 --out results.json]
    # one side only:
    .venvs/tf-convrnn/bin/python benchmarks/convrnn_speed.py --tf --reference /path/to/convrnns ...
    PYTHONPATH=. .venv/bin/python benchmarks/convrnn_speed.py --torch [--checkpoint-root DIR] ...

TensorFlow side (``--tf``, run in the scratch venv ``.venvs/tf-convrnn`` that
``scripts/make_convrnn_fixtures.sh --install-only`` builds): the reference code of
github.com/neuroailab/convrnns (not part of this project; ``--reference`` or
``CONVRNNS_REFERENCE``), imported through the same import-time shims as the fixtures
(``tests/fixtures/convrnn/make_fixtures.py``), built at 224 px with the published widths, its own
random initialisers, graph mode (``tensorflow.compat.v1``), the training presentation
(``image_pres="default"``: 17 steps for the intermediate models). Timed: one ``session.run`` that
returns **every layer's output at every step** (``include_all_times=True``: what
``forward_timesteps(x, layers="all")`` returns), and one that returns only the decoded logits.
With ``--checkpoint-root DIR`` the random weights are saved as ``DIR/<model>/model.ckpt`` so that
the PyTorch side can load the same weights.

PyTorch side (``--torch``, the project's environment): ``blt_models.create_model("convrnn_<model>")``
(with ``--checkpoint-root``: the saved TensorFlow weights, converted by ``convert_checkpoint``), eval
mode, ``torch.inference_mode``; timed ``forward_timesteps(x, layers="all")`` and ``model(x)``;
``forward_timesteps(x, layers="all")`` with the prelude (the layer-steps before the image reaches
each layer, kept between inference calls) recomputed at every call, as after a change of the
weights; and ``forward_timesteps(x, layers="all")`` once more in channels_last (model and input),
the layout ``extract_features`` runs on CPU by default and the one TensorFlow computes in (NHWC).

Each case: one warm-up, then ``--repeats`` timed runs; the median and the best are reported, as
milliseconds per image per step. The peak resident memory of each side's process (``ru_maxrss``)
is reported too. Threads: ``--threads`` for both (TF intra- and inter-op pools; torch
``set_num_threads``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TF_PYTHON = ROOT / ".venvs" / "tf-convrnn" / "bin" / "python"
DEFAULT_MODELS = "rgc_intermediate,ugrnn_intermediate"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up (graph optimisation, oneDNN primitive creation, allocations)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "best_s": min(times), "runs_s": times}


def _per_step(result: dict, batch: int, steps: int) -> dict:
    scale = 1000 / (batch * steps)
    result["median_ms_per_image_step"] = result["median_s"] * scale
    result["best_ms_per_image_step"] = result["best_s"] * scale
    return result


# -------------------------------------------------------------------------------- TensorFlow
def run_tf(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "convrnn"))
    import make_fixtures  # the import-time shims of the fixtures (no reduction installed here)
    import numpy as np

    tf = make_fixtures._install_shims()
    reference = os.path.abspath(args.reference)
    sys.path.insert(0, reference)
    os.chdir(reference)  # the reference opens its JSON configs by relative path
    from convrnns.models.model_func import model_func
    from convrnns.utils.loader import MODEL_TO_KWARGS

    out: dict = {
        "side": "tensorflow reference",
        "tensorflow": sys.modules["tensorflow"].__version__,
        "models": {},
    }
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(args.batch, 224, 224, 3)).astype(np.float32)
    for name in args.models.split(","):
        graph = tf.Graph()
        with graph.as_default():
            num_nodes = 11 if "intermediate" in name else 6
            layers = [f"conv{i}" for i in range(1, num_nodes)] + ["imnetds"]
            inputs = tf.placeholder(tf.float32, shape=list(x.shape))
            outputs = model_func(
                inputs=inputs,
                out_layers=layers,
                image_pres="default",
                include_all_times=True,
                include_logits=True,
                **MODEL_TO_KWARGS[name],
            )
            steps = len(outputs["imnetds"])
            every = [outputs[layer][t] for layer in layers for t in sorted(outputs[layer])]
            config = tf.ConfigProto(
                intra_op_parallelism_threads=args.threads,
                inter_op_parallelism_threads=args.threads,
            )
            sess = tf.Session(graph=graph, config=config)
            sess.run(tf.global_variables_initializer())
            n_params = int(sum(np.prod(v.shape.as_list()) for v in tf.global_variables()))
            if args.checkpoint_root:
                prefix = Path(args.checkpoint_root) / name / "model.ckpt"
                prefix.parent.mkdir(parents=True, exist_ok=True)
                tf.train.Saver(tf.global_variables()).save(
                    sess, str(prefix), write_meta_graph=False
                )
            feed = {inputs: x}
            all_layers = _time(functools.partial(sess.run, every, feed), args.repeats)
            logits = _time(functools.partial(sess.run, outputs["logits"], feed), args.repeats)
            sess.close()
        out["models"][name] = {
            "steps": steps,
            "batch": args.batch,
            "image_size": 224,
            "parameters": n_params,
            "all_layers_all_steps": _per_step(all_layers, args.batch, steps),
            "logits_only": _per_step(logits, args.batch, steps),
        }
        print(name, json.dumps(out["models"][name]), flush=True)
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


# ----------------------------------------------------------------------------------- PyTorch
def _recomputing_prelude(model, x) -> None:  # type: ignore[no-untyped-def]
    """``forward_timesteps`` as after a change of the weights: no kept prelude."""
    model.__dict__.pop("_prelude_cache", None)
    model.forward_timesteps(x, layers="all")


def run_torch(args: argparse.Namespace) -> dict:
    import torch

    import blt_models as bm

    torch.set_num_threads(args.threads)
    out: dict = {"side": "blt-models (PyTorch)", "torch": torch.__version__, "models": {}}
    x = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 4 - 2
    for name in args.models.split(","):
        arch = f"convrnn_{name}"
        weights = "random (blt-models initialisation)"
        try:
            prefix = Path(args.checkpoint_root or "") / name
            if args.checkpoint_root and prefix.is_dir():
                from blt_models._convert import convert_checkpoint

                model, how = convert_checkpoint(prefix)
                weights = f"the TensorFlow side's random weights, converted ({how})"
            else:
                model = bm.create_model(arch)
        except Exception as err:  # the port may not exist yet in this tree: say so in the JSON
            out["models"][name] = {"error": f"{type(err).__name__}: {err}"}
            print(name, out["models"][name], flush=True)
            continue
        model.eval()
        steps = int(model.timesteps)
        with torch.inference_mode():
            all_layers = _time(
                functools.partial(model.forward_timesteps, x, layers="all"), args.repeats
            )
            logits = _time(functools.partial(model, x), args.repeats)

            fresh_prelude = _time(functools.partial(_recomputing_prelude, model, x), args.repeats)
            # The layout extract_features uses on CPU by default (NHWC, as TensorFlow runs).
            model_cl = model.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            all_layers_cl = _time(
                functools.partial(model_cl.forward_timesteps, x_cl, layers="all"), args.repeats
            )
        out["models"][name] = {
            "arch": arch,
            "weights": weights,
            "steps": steps,
            "batch": args.batch,
            "image_size": 224,
            "parameters": sum(p.numel() for p in model.parameters()),
            "all_layers_all_steps": _per_step(all_layers, args.batch, steps),
            "logits_only": _per_step(logits, args.batch, steps),
            "all_layers_all_steps_channels_last": _per_step(all_layers_cl, args.batch, steps),
            "all_layers_all_steps_prelude_recomputed": _per_step(fresh_prelude, args.batch, steps),
        }
        print(name, json.dumps(out["models"][name]), flush=True)
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


# ------------------------------------------------------------------------------------ driver
def _side(flag: str, python: str, args: argparse.Namespace, ckpt_root: str, env: dict) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    cmd = [python, __file__, flag, "--models", args.models, "--batch", str(args.batch)]
    cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    cmd += ["--checkpoint-root", ckpt_root, "--out", result_path]
    if flag == "--tf":
        cmd += ["--reference", args.reference]
    subprocess.run(cmd, check=True, env=env)
    with open(result_path) as f:
        return json.load(f)


def run_both(args: argparse.Namespace) -> dict:
    if not Path(args.tf_python).exists():
        sys.exit(
            f"{args.tf_python} missing: run scripts/make_convrnn_fixtures.sh --install-only "
            "or pass --tf-python"
        )
    env = dict(
        os.environ, TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2"
    )
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as ckpt_root:
        tf_result = _side("--tf", args.tf_python, args, ckpt_root, env)
        torch_result = _side("--torch", sys.executable, args, ckpt_root, env)
    ratios = {}
    for name, ref in tf_result["models"].items():
        port = torch_result["models"].get(name, {})
        if "all_layers_all_steps" not in port:
            continue
        ratios[name] = {
            case: ref[case]["median_s"] / port[case]["median_s"]
            for case in ("all_layers_all_steps", "logits_only")
        }
        if "all_layers_all_steps_prelude_recomputed" in port:
            ratios[name]["all_layers_all_steps_prelude_recomputed"] = (
                ref["all_layers_all_steps"]["median_s"]
                / port["all_layers_all_steps_prelude_recomputed"]["median_s"]
            )
        if "all_layers_all_steps_channels_last" in port:
            ratios[name]["all_layers_all_steps_channels_last"] = (
                ref["all_layers_all_steps"]["median_s"]
                / port["all_layers_all_steps_channels_last"]["median_s"]
            )
    return {"tensorflow": tf_result, "torch": torch_result, "speedup_torch_over_tf": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--tf", action="store_true", help="time the TensorFlow reference only")
    side.add_argument("--torch", action="store_true", help="time the PyTorch port only")
    parser.add_argument("--reference", default=os.environ.get("CONVRNNS_REFERENCE"))
    parser.add_argument(
        "--tf-python",
        default=str(TF_PYTHON),
        help="the TensorFlow scratch venv's python (default: .venvs/tf-convrnn of this tree)",
    )
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--checkpoint-root", default=None)
    parser.add_argument("--out", default="convrnn_speed.json")
    args = parser.parse_args()
    if not args.torch and not args.reference:
        parser.error("the TensorFlow side needs --reference PATH (a neuroailab/convrnns checkout)")
    args.out = os.path.abspath(args.out)
    if args.checkpoint_root:
        args.checkpoint_root = os.path.abspath(args.checkpoint_root)
    if args.tf:
        result = run_tf(args)
    elif args.torch:
        result = run_torch(args)
    else:
        result = run_both(args)
    result["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
