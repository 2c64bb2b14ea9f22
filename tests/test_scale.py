"""Scale paths that CPU tests can check: device handling inside forward, torch.compile of the clock,
the recipe's --compile flag and the benchmark scripts at tiny sizes (the GPU-only checks are in
tests/test_gpu.py, marked ``gpu``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import randomize_
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import blt_models as bm

ROOT = Path(__file__).resolve().parents[1]
SMALL_BLT = dict(num_layers=4, channels=(32, 32, 32, 32), sizes=(8, 8, 4, 2), nominal_size=32)

# (name, constructor arguments, input side): one of every family, small where the family allows.
FAMILIES = [
    ("blt_blt", SMALL_BLT, 32),
    ("blt_bl", dict(pool="blur"), 64),
    ("cornet_z", {}, 64),
    ("cornet_r", {}, 64),
    ("cornet_rt", {}, 64),
    ("cornet_s", {}, 64),
    ("resnet50", {}, 64),
    ("blt_vs", {}, 224),
]


class OffDeviceOps(TorchDispatchMode):
    """Records every aten op whose output tensor is not on the ``meta`` device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.ops.append(str(func))
        return out


# ------------------------------------------------------------------------------- device handling
@pytest.mark.parametrize("name,kwargs,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_forward_creates_no_tensor_off_the_input_device(name, kwargs, size):
    """A model and an input on the ``meta`` device: any tensor that forward creates on the CPU
    (``torch.tensor(...)`` / ``torch.zeros(...)`` without ``device=``) shows up as a non-meta op
    output. On CUDA such tensors are device mismatches or hidden host-device copies."""
    model = bm.create_model(name, num_classes=5, **kwargs).to("meta")
    x = torch.randn(2, 3, size, size, device="meta")
    for training in (False, True):
        model.train(training)
        if training and model.supports_grad_checkpointing:
            model.set_grad_checkpointing(True)
        recorder = OffDeviceOps()
        with recorder:
            out = model.forward_timesteps(x, layers="all")
            logits = model(x)
        assert recorder.ops == [], (
            f"{name} (training={training}) created CPU tensors: {recorder.ops}"
        )
        assert out.logits.device.type == "meta" and logits.device.type == "meta"
        assert out.steps.device.type == "meta"
        assert all(f.device.type == "meta" for f in out.features.values())


# ------------------------------------------------------------------------------- torch.compile
def _explain(fn, *args, **kwargs):
    torch._dynamo.reset()
    return torch._dynamo.explain(fn)(*args, **kwargs)


def test_clock_has_no_graph_breaks():
    """Dynamo traces the whole step loop as one graph for a fixed timesteps and layer set:
    ``model(x)``, ``forward_timesteps`` with a layer subset, and a training forward with gradient
    checkpointing under bf16 autocast."""
    torch.manual_seed(0)
    model = randomize_(bm.create_model("blt_bl", num_classes=5, timesteps=5, **SMALL_BLT)).eval()
    x = torch.randn(2, 3, 32, 32)
    for explanation in (
        _explain(model, x),
        _explain(model.forward_timesteps, x, layers=["layer1", "layer3"]),
    ):
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1

    model.train().set_grad_checkpointing(True)

    def train_forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.forward_timesteps(x).logits

    explanation = _explain(train_forward, x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()


def test_compiled_clock_matches_eager_and_compiles_once():
    """fullgraph=True (an error on any graph break); same results as eager; a second batch of the
    same shape reuses the graph, a different ``timesteps`` compiles a new one."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch.manual_seed(0)
    model = randomize_(bm.create_model("blt_blt", num_classes=5, timesteps=5, **SMALL_BLT)).eval()
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(model.forward_timesteps, backend=counter, fullgraph=True)
    x1, x2 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for x in (x1, x2):
            got, ref = compiled(x, layers="all"), model.forward_timesteps(x, layers="all")
            torch.testing.assert_close(got.logits, ref.logits)
            assert torch.equal(got.steps, ref.steps)
            for layer in ref.features:
                torch.testing.assert_close(got.features[layer], ref.features[layer])
        assert counter.frame_count == 1
        assert compiled(x1, timesteps=6).logits.shape[0] == len(model.readout_steps(6))
        assert counter.frame_count == 2
    torch._dynamo.reset()


# ------------------------------------------------------------------------------- recipe --compile
TINY_RUN = ["--dataset", "synthetic", "--limit-train", "32", "--limit-val", "16", "--input-size", "32",
            "--batch-size", "8", "--workers", "0", "--no-progress", "--epochs", "1",
            "--model-kwargs", '{"timesteps": 5}', "--device", "cpu"]  # fmt: skip


def _recipe():
    sys.path.insert(0, str(ROOT / "examples" / "train"))
    import train

    return train


def test_recipe_compile_flag_trains_the_same_weights(tmp_path):
    """``--compile`` (here with the aot_eager backend, which traces like inductor but runs aten
    ops) trains the same weights as eager, saves them under the model's own key names (no
    ``_orig_mod.`` prefix) and records the flag in run_config.json."""
    from safetensors.torch import load_file

    recipe = _recipe()
    recipe.main([*TINY_RUN, "--output-dir", str(tmp_path / "eager")])
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    recipe.main([*TINY_RUN, "--output-dir", str(tmp_path / "compiled"), "--compile",
                 "--compile-backend", "aot_eager"])  # fmt: skip
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    torch._dynamo.reset()
    a = load_file(str(tmp_path / "eager" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    start = bm.create_model("blt_bl_tiny", num_classes=4, timesteps=5).state_dict()
    assert any(not torch.equal(b[k], v) for k, v in start.items())  # it trained
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    config = json.loads((tmp_path / "compiled" / "run_config.json").read_text())
    assert config["args"]["compile"] is True and config["args"]["compile_backend"] == "aot_eager"


def test_recipe_rejects_compile_options_without_compile(tmp_path):
    recipe = _recipe()
    with pytest.raises(SystemExit):
        recipe.main([*TINY_RUN, "--output-dir", str(tmp_path), "--compile-mode", "reduce-overhead"])


# ------------------------------------------------------------------------------- benchmark scripts
def _run(cmd, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHON=sys.executable)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_train_step_benchmark_runs_and_checks_parity(tmp_path):
    out = tmp_path / "train.json"
    stdout = _run([sys.executable, "benchmarks/train_step_benchmark.py", "--img-size", "32",
                   "--batch-size", "2", "--num-layers", "4", "--timesteps", "5", "--rounds", "1",
                   "--steps", "1", "--threads", "1", "--skip-memory", "--json", str(out),
                   "--settings", "ours-fp32-cl-ckpt", "ours-bf16-cl"])  # fmt: skip
    result = json.loads(out.read_text())
    assert [r["setting"] for r in result["rows"]] == [
        "ref-fp32",
        "ours-fp32-cl-ckpt",
        "ours-bf16-cl",
    ]
    assert all("ok" in line for line in result["parity"]) and "MISMATCH" not in stdout
    assert result["rows"][0]["speed_vs_ref"] == 1.0


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    """The GPU script's CPU path end to end at tiny sizes (every step it would run on CUDA)."""
    _run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(tmp_path)], timeout=1200)
    assert (tmp_path / "summary.txt").is_file()
