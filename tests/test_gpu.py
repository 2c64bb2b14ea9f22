"""CUDA paths: parity with the CPU, bf16 autocast, channels_last, gradient checkpointing and
``torch.compile`` (inductor, and CUDA graphs via ``mode="reduce-overhead"``).

Every test here is marked ``gpu`` and is skipped where CUDA is absent (tests/conftest.py); run
them alone with ``pytest -m gpu tests/test_gpu.py`` (benchmarks/gpu_check.sh does).
"""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_

import blt_models as bm

pytestmark = pytest.mark.gpu

SMALL_BLT = dict(num_layers=4, channels=(32, 32, 32, 32), sizes=(16, 16, 8, 4), nominal_size=64)
MODELS = [
    ("blt_blt", SMALL_BLT, 64),
    ("blt_bl", dict(pool="blur"), 64),
    ("cornet_rt", {}, 64),
    ("cornet_s", {}, 64),
    ("blt_vs", {}, 224),
]


@pytest.fixture
def exact_fp32():
    """fp32 convolutions and matmuls without TF32, so that CUDA is compared with the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _pair(name, kwargs, size, batch=2):
    torch.manual_seed(0)
    cpu = randomize_(bm.create_model(name, num_classes=7, **kwargs)).eval()
    gpu = bm.create_model(name, num_classes=7, **kwargs).eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    return cpu, gpu.cuda(), x


@pytest.mark.parametrize("name,kwargs,size", MODELS, ids=[m[0] for m in MODELS])
def test_cuda_forward_matches_cpu_fp32(name, kwargs, size, exact_fp32):
    cpu, gpu, x = _pair(name, kwargs, size)
    with torch.no_grad():
        ref = cpu.forward_timesteps(x, layers="all")
        got = gpu.forward_timesteps(x.cuda(), layers="all")
    assert got.logits.is_cuda and got.steps.is_cuda
    torch.testing.assert_close(got.logits.cpu(), ref.logits, rtol=1e-3, atol=1e-3)
    assert torch.equal(got.steps.cpu(), ref.steps)
    for layer, f in ref.features.items():
        assert got.features[layer].is_cuda
        torch.testing.assert_close(got.features[layer].cpu(), f, rtol=1e-3, atol=1e-3, msg=layer)


@pytest.mark.parametrize("name,kwargs,size", MODELS[:3], ids=[m[0] for m in MODELS[:3]])
def test_cuda_bf16_autocast_and_channels_last(name, kwargs, size, exact_fp32):
    _, gpu, x = _pair(name, kwargs, size)
    x = x.cuda()
    with torch.no_grad():
        ref = gpu.forward_timesteps(x, layers="all")
        gpu_cl = gpu.to(memory_format=torch.channels_last)
        cl = gpu_cl.forward_timesteps(x.contiguous(memory_format=torch.channels_last), layers="all")
        torch.testing.assert_close(cl.logits, ref.logits, rtol=1e-3, atol=1e-3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = gpu_cl.forward_timesteps(x.contiguous(memory_format=torch.channels_last))
    assert low.logits.dtype == torch.bfloat16
    err = (low.logits.float() - ref.logits).norm() / ref.logits.norm()
    assert err < 0.05, float(err)


def test_cuda_training_step_with_grad_checkpointing_matches_plain(exact_fp32):
    torch.manual_seed(0)
    model = randomize_(bm.create_model("blt_blt", num_classes=5, timesteps=6, **SMALL_BLT)).cuda()
    x = torch.randn(3, 3, 64, 64, device="cuda")
    model.forward_timesteps(x).logits.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model.forward_timesteps(x).logits.square().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_clock_on_cuda_matches_eager(mode, exact_fp32):
    """inductor and CUDA graphs give eager's values; with CUDA graphs each call's outputs are
    read (cloned) before the next call, which replays into the same memory."""
    _, model, x = _pair("blt_blt", SMALL_BLT, 64, batch=4)
    torch._dynamo.reset()
    compiled = torch.compile(model.forward_timesteps, mode=mode, fullgraph=True)
    inputs = [torch.randn_like(x).cuda() for _ in range(3)]
    with torch.no_grad():
        for xi in inputs:  # a few calls: warm-up, recording, replays
            got = compiled(xi, layers=["layer1", "layer3"])
            got_logits, got_layer1 = got.logits.clone(), got.features["layer1"].clone()
            ref = model.forward_timesteps(xi, layers=["layer1", "layer3"])
            torch.testing.assert_close(got_logits, ref.logits, rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(got_layer1, ref.features["layer1"], rtol=1e-3, atol=1e-3)
    torch._dynamo.reset()


def test_cuda_compiled_training_step_matches_eager(exact_fp32):
    torch.manual_seed(0)
    model = randomize_(bm.create_model("blt_bl", num_classes=5, timesteps=6, **SMALL_BLT)).cuda()
    x = torch.randn(4, 3, 64, 64, device="cuda")
    model.forward_timesteps(x).logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    compiled = torch.compile(model.forward_timesteps, fullgraph=True)
    compiled(x).logits.square().mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-3, atol=1e-5, msg=n)
    torch._dynamo.reset()
