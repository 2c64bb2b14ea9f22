"""CORnet Z / S / R / RT: official layouts, official numerics, the clock, and weight loading.

The "reference" forwards below are written from the published facts of the official code
(cornet-reference.md), functionally on the state dict, independently of blt_models.models.cornet.
"""

from __future__ import annotations

import argparse
import ast
import copy
import functools
import hashlib
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import blt_models as bm

ARCHS = ("cornet_z", "cornet_r", "cornet_rt", "cornet_s")
AREAS = ("V1", "V2", "V4", "IT")
WIDTHS = {"V1": 64, "V2": 128, "V4": 256, "IT": 512}
IN_WIDTH = {"V1": 3, "V2": 64, "V4": 128, "IT": 256}
S_TIMES = {"V2": 2, "V4": 4, "IT": 2}


# ------------------------------------------------------------------------ official key layouts
def official_shapes(arch: str, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of the official model (from the facts)."""
    shapes: dict[str, tuple[int, ...]] = {}
    if arch == "cornet_z":
        for a in AREAS:
            k = 7 if a == "V1" else 3
            shapes[f"{a}.conv.weight"] = (WIDTHS[a], IN_WIDTH[a], k, k)
            shapes[f"{a}.conv.bias"] = (WIDTHS[a],)
    elif arch in ("cornet_r", "cornet_rt"):
        for a in AREAS:
            c, k = WIDTHS[a], 7 if a == "V1" else 3
            shapes[f"{a}.conv_input.weight"] = (c, IN_WIDTH[a], k, k)
            shapes[f"{a}.conv_input.bias"] = (c,)
            for norm in ("norm_input", "norm1"):
                shapes[f"{a}.{norm}.weight"] = (c,)
                shapes[f"{a}.{norm}.bias"] = (c,)
            shapes[f"{a}.conv1.weight"] = (c, c, 3, 3)
    else:

        def bn(prefix: str, c: int) -> None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{name}"] = (c,)
            shapes[f"{prefix}.num_batches_tracked"] = ()

        shapes["V1.conv1.weight"] = (64, 3, 7, 7)
        bn("V1.norm1", 64)
        shapes["V1.conv2.weight"] = (64, 64, 3, 3)
        bn("V1.norm2", 64)
        for a, times in S_TIMES.items():
            c, cin = WIDTHS[a], IN_WIDTH[a]
            shapes[f"{a}.conv_input.weight"] = (c, cin, 1, 1)
            shapes[f"{a}.skip.weight"] = (c, c, 1, 1)
            bn(f"{a}.norm_skip", c)
            shapes[f"{a}.conv1.weight"] = (4 * c, c, 1, 1)
            shapes[f"{a}.conv2.weight"] = (4 * c, 4 * c, 3, 3)
            shapes[f"{a}.conv3.weight"] = (c, 4 * c, 1, 1)
            for t in range(times):
                bn(f"{a}.norm1_{t}", 4 * c)
                bn(f"{a}.norm2_{t}", 4 * c)
                bn(f"{a}.norm3_{t}", c)
    shapes["decoder.linear.weight"] = (num_classes, 512)
    shapes["decoder.linear.bias"] = (num_classes,)
    return shapes


@pytest.mark.parametrize(
    "arch, tensors, params",
    [("cornet_z", 10, 2_071_656), ("cornet_r", 30, 5_208_936), ("cornet_rt", 30, 5_208_936),
     ("cornet_s", 164, 53_416_616)],
)  # fmt: skip
def test_key_layout_and_parameter_count(arch, tensors, params):
    model = bm.create_model(arch)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = official_shapes(arch)
    assert got == expected
    assert len(got) == tensors
    n_params = sum(p.numel() for p in model.parameters())
    # Computed from the official shapes (buffers excluded), and the published rounded sizes.
    assert n_params == sum(
        torch.Size(s).numel()
        for k, s in expected.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert n_params == params
    assert round(n_params / 1e6, 2) == {"cornet_z": 2.07, "cornet_s": 53.42}.get(arch, 5.21)


def test_num_classes_sets_decoder_width():
    model = bm.create_model("cornet_z", num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 1_563_786  # reference table @10 classes
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


# ------------------------------------------------------------------------ helpers
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norms, biases and BatchNorm statistics, so that every weight matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


@functools.cache
def _make(arch: str, seed: int, kwargs: tuple) -> bm.ClockedModel:
    torch.manual_seed(seed)
    return randomize(bm.create_model(arch, **dict(kwargs)), seed)


def make(arch: str, seed: int = 0, **kwargs) -> bm.ClockedModel:
    """A randomised model in eval mode, built once per module (tests must not modify it)."""
    return _make(arch, seed, tuple(sorted(kwargs.items())))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def images(n: int = 2, size: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ reference forwards
def ref_cornet_z(sd, x):
    for a in AREAS:
        k, s = (7, 2) if a == "V1" else (3, 1)
        x = F.conv2d(x, sd[f"{a}.conv.weight"], sd[f"{a}.conv.bias"], s, k // 2)
        x = F.max_pool2d(F.relu(x), 3, 2, 1)
    return F.linear(x.mean((2, 3)), sd["decoder.linear.weight"], sd["decoder.linear.bias"])


def ref_cornet_r(sd, x, times: int, synchronous: bool):
    """Official R (sequential) / RT (synchronous) update with explicit zero maps of the official
    sizes (56, 28, 14, 7 at 224; the same formula at other sizes)."""
    spec = {"V1": (7, 4), "V2": (3, 2), "V4": (3, 2), "IT": (3, 2)}
    side, sizes = x.shape[-1], {}
    for a in AREAS:
        k, s = spec[a]
        side = (side + 2 * (k // 2) - k) // s + 1
        sizes[a] = side

    def block(a, inp, state):
        k, s = spec[a]
        if inp is None:
            drive = torch.zeros(x.shape[0], WIDTHS[a], sizes[a], sizes[a])
        else:
            drive = F.conv2d(
                inp, sd[f"{a}.conv_input.weight"], sd[f"{a}.conv_input.bias"], s, k // 2
            )
            drive = F.relu(
                F.group_norm(drive, 32, sd[f"{a}.norm_input.weight"], sd[f"{a}.norm_input.bias"])
            )
        h = drive + (0 if state is None else state)
        h = F.conv2d(h, sd[f"{a}.conv1.weight"], None, 1, 1)
        return F.relu(F.group_norm(h, 32, sd[f"{a}.norm1.weight"], sd[f"{a}.norm1.bias"]))

    outputs, states = {"inp": x}, {}
    for a in AREAS:
        outputs[a] = states[a] = block(a, x if a == "V1" else None, None)
    for _ in range(1, times):
        new = {"inp": x} if synchronous else outputs  # R overwrites while iterating
        for i, a in enumerate(AREAS):
            below = "inp" if i == 0 else AREAS[i - 1]
            new[a] = states[a] = block(a, outputs[below] if synchronous else new[below], states[a])
        outputs = new
    return F.linear(
        outputs["IT"].mean((2, 3)), sd["decoder.linear.weight"], sd["decoder.linear.bias"]
    )


def ref_cornet_s(sd, x, return_steps: bool = False):
    def bn(x, p):
        return F.batch_norm(
            x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
            False, 0.0, 1e-5,
        )  # fmt: skip

    steps = []
    x = F.relu(bn(F.conv2d(x, sd["V1.conv1.weight"], None, 2, 3), "V1.norm1"))
    x = F.max_pool2d(x, 3, 2, 1)
    x = F.relu(bn(F.conv2d(x, sd["V1.conv2.weight"], None, 1, 1), "V1.norm2"))
    steps.append(x)
    for a, times in S_TIMES.items():
        x = F.conv2d(x, sd[f"{a}.conv_input.weight"])
        for t in range(times):
            if t == 0:
                skip, stride = bn(F.conv2d(x, sd[f"{a}.skip.weight"], None, 2), f"{a}.norm_skip"), 2
            else:
                skip, stride = x, 1
            x = F.relu(bn(F.conv2d(x, sd[f"{a}.conv1.weight"]), f"{a}.norm1_{t}"))
            x = F.relu(bn(F.conv2d(x, sd[f"{a}.conv2.weight"], None, stride, 1), f"{a}.norm2_{t}"))
            x = bn(F.conv2d(x, sd[f"{a}.conv3.weight"]), f"{a}.norm3_{t}")
            x = F.relu(x + skip)
            steps.append(x)
    logits = F.linear(x.mean((2, 3)), sd["decoder.linear.weight"], sd["decoder.linear.bias"])
    return (logits, steps) if return_steps else logits


def reference_logits(arch, sd, x, times=5):
    if arch == "cornet_z":
        return ref_cornet_z(sd, x)
    if arch == "cornet_s":
        return ref_cornet_s(sd, x)
    return ref_cornet_r(sd, x, times, synchronous=arch == "cornet_rt")


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_reference_forward(arch):
    model = make(arch)
    x = images()
    with torch.no_grad():
        ref = reference_logits(arch, model.state_dict(), x)
        got = model(x)
    assert rel_err(got, ref) < 1e-4


@pytest.mark.parametrize("arch", ["cornet_r", "cornet_rt"])
def test_every_readout_is_the_reference_output_with_times_step_plus_1(arch):
    model = make(arch)
    sd = model.state_dict()
    x = images(2, 48)
    with torch.no_grad():
        out = model.forward_timesteps(x, timesteps=5)
        for t in range(5):
            assert rel_err(out.logits[t], reference_logits(arch, sd, x, times=t + 1)) < 1e-4


def test_recurrent_map_sizes_at_224_are_the_official_ones():
    model = make("cornet_rt")
    assert model.area_sizes(224, 224) == [(56, 56), (28, 28), (14, 14), (7, 7)]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_matches_reference_forward_at_224(arch):
    model = make(arch)
    x = images(1, 224)
    with torch.no_grad():
        assert rel_err(model(x), reference_logits(arch, model.state_dict(), x)) < 1e-4


def test_non_square_input_sizes():
    x = torch.randn(1, 3, 100, 77)
    for arch in ARCHS:
        out = make(arch).forward_timesteps(x, layers=["IT"])
        assert out.logits.shape[-1] == 1000
        assert out.features["IT"].shape[-2:] == (4, 3)  # 100 -> 25, 13, 7, 4; 77 -> 20, 10, 5, 3


def test_no_device_specific_code_in_the_family():
    tree = ast.parse(Path(bm.models.cornet.__file__).read_text())
    assert not any(
        isinstance(n, ast.Attribute) and n.attr in ("cuda", "cpu") for n in ast.walk(tree)
    )


def test_zero_maps_follow_the_input_dtype_and_device():
    model = copy.deepcopy(make("cornet_rt")).double()
    x = images(1)
    with torch.no_grad():
        got = model(x.double())
        assert got.dtype == torch.float64
        assert rel_err(got.float(), make("cornet_rt")(x)) < 1e-4
        meta = copy.deepcopy(make("cornet_r")).to("meta")
        assert meta(x.to("meta")).device.type == "meta"


# ------------------------------------------------------------------------ R / RT on the clock
def test_r_and_rt_update_order():
    rt = make("cornet_rt")
    r = make("cornet_r")
    r.load_state_dict(rt.state_dict())
    x = images()
    with torch.no_grad():
        out_r = r.forward_timesteps(x, layers="all")
        out_rt = rt.forward_timesteps(x, layers="all")
        f_r, f_rt = out_r.features, out_rt.features
        # Step 0 is the same for both: V1 sees the image, the other areas a zero drive.
        for a in AREAS:
            assert torch.equal(f_r[a][0], f_rt[a][0])
        # R: V2 at step t reads V1 at step t. RT: V2 at step t reads V1 at step t - 1.
        for t in range(1, 5):
            want_r = r.V2.update(r.V2.drive(f_r["V1"][t]), f_r["V2"][t - 1])
            want_rt = rt.V2.update(rt.V2.drive(f_rt["V1"][t - 1]), f_rt["V2"][t - 1])
            assert torch.allclose(f_r["V2"][t], want_r, atol=1e-6)
            assert torch.allclose(f_rt["V2"][t], want_rt, atol=1e-6)
        assert not torch.allclose(out_r.logits[-1], out_rt.logits[-1])
    assert r.first_steps() == {"V1": 0, "V2": 1, "V4": 1, "IT": 1}
    assert rt.first_steps() == {"V1": 0, "V2": 1, "V4": 2, "IT": 3}
    assert out_rt.first_step == rt.first_steps() and out_rt.steps.tolist() == [0, 1, 2, 3, 4]


def test_rt_early_output_does_not_depend_on_the_image():
    model = make("cornet_rt")
    a, b = images(2, 48, seed=1), images(2, 48, seed=2)
    with torch.no_grad():
        la = model.forward_timesteps(a, timesteps=6).logits
        lb = model.forward_timesteps(b, timesteps=6).logits
        for t in range(6):
            same = torch.allclose(la[t], lb[t], atol=1e-6)
            assert same == (t <= 2), t  # readout at step t = official output with times = t + 1
        # Within a batch, too: every image gets the same logits with times <= 3.
        logits = model.forward_timesteps(torch.cat([a, b]), timesteps=3).logits[-1]
        assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-6)


def test_r_output_depends_on_the_image_from_times_2():
    model = make("cornet_r")
    a, b = images(2, 48, seed=1), images(2, 48, seed=2)
    with torch.no_grad():
        la = model.forward_timesteps(a, timesteps=2).logits
        lb = model.forward_timesteps(b, timesteps=2).logits
    assert torch.allclose(la[0], lb[0], atol=1e-6) and not torch.allclose(la[1], lb[1])


def test_rt_times_1_is_decoder_of_relu_norm1_bias():
    model = make("cornet_rt", timesteps=1)
    with torch.no_grad():
        logits = model(images())
        const = F.relu(model.IT.norm1.bias)
        expected = model.decoder.linear(const)[None].expand(2, -1)
        assert torch.allclose(logits, expected, atol=1e-5)
        # The features before arrival are the computed bias responses.
        it = model.forward_timesteps(images(), timesteps=1, layers=["IT"]).features["IT"][0]
        assert torch.allclose(it, const[None, :, None, None].expand_as(it))


def test_pruned_unrolling_gives_the_same_values():
    model = make("cornet_rt")
    x = images()
    with torch.no_grad():
        full = model.forward_timesteps(x, layers="all")
        v1_only = model.forward_timesteps(x, layers=["V1.output"])  # alias of V1
        assert torch.equal(v1_only.features["V1.output"], full.features["V1"])
        assert torch.equal(model(x), full.logits[-1])


# ------------------------------------------------------------------------ S and Z on the clock
def test_cornet_s_clock_mapping():
    model = make("cornet_s")
    x = images(1)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers="all")
        _, ref_steps = ref_cornet_s(model.state_dict(), x, return_steps=True)
    assert out.timesteps == 9 and out.steps.tolist() == [8] and out.logits.shape == (1, 1, 1000)
    assert out.first_step == {"V1": 0, "V2": 1, "V4": 3, "IT": 7}
    active = {"V1": [0], "V2": [1, 2], "V4": [3, 4, 5, 6], "IT": [7, 8]}
    assert {k: list(v) for k, v in model.area_steps.items()} == active
    for area, steps in active.items():
        feats = out.features[area]
        for t in range(9):
            if t in steps:
                assert rel_err(feats[t], ref_steps[t]) < 1e-4, (area, t)
            else:
                assert not feats[t].any(), (area, t)


def test_cornet_s_and_z_reject_other_timesteps():
    s = make("cornet_s")
    with pytest.raises(bm.TimestepsError, match="inner steps"):
        s.forward_timesteps(images(1), timesteps=5)
    with pytest.raises(bm.TimestepsError, match="inner steps"):
        bm.create_model("cornet_s", timesteps=4)
    z = make("cornet_z")
    with pytest.raises(bm.TimestepsError, match="feed-forward"):
        z.forward_timesteps(images(1), timesteps=2)
    out = z.forward_timesteps(images(1), layers=["IT"])
    assert out.steps.tolist() == [0] and out.features["IT"].shape == (1, 1, 512, 2, 2)


# ------------------------------------------------------------------------ weight files
def write_official_file(model: nn.Module, path: Path, arch: str) -> Path:
    """What the official training wrote: a DataParallel state dict plus training extras."""
    state = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}
    torch.save({"epoch": 43, "arch": arch, "state_dict": state, "optimizer": optimizer}, path)
    return path


@pytest.mark.parametrize("arch", ARCHS)
def test_official_layout_file_round_trips(arch, tmp_path):
    source = make(arch)
    path = write_official_file(source, tmp_path / f"{arch}.pth", arch)
    loaded = bm.create_model(arch, checkpoint_path=path).eval()
    want = source.state_dict()
    got = loaded.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    x = images(1)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_official_file_with_wrong_keys_is_rejected(tmp_path):
    source = make("cornet_r")
    path = write_official_file(source, tmp_path / "r.pth", "cornet_r")
    with pytest.raises(bm.CheckpointMismatchError, match="missing keys"):
        bm.create_model("cornet_s", checkpoint_path=path)


def test_blt_reference_checkpoint_of_cornet_rt(tmp_path):
    source = make("cornet_rt", num_classes=10)
    args = argparse.Namespace(model="cornet_rt", recurrent_steps=3, num_classes=10)
    torch.save({"model": source.state_dict(), "args": args, "epoch": 1}, tmp_path / "ckpt.pth")
    model = bm.load_reference_checkpoint(tmp_path / "ckpt.pth").eval()
    assert model.timesteps == 3 and model.num_classes == 10
    with torch.no_grad():
        assert (
            rel_err(model(images(1)), ref_cornet_r(source.state_dict(), images(1), 3, True)) < 1e-4
        )


# ------------------------------------------------------------------------ pretrained configs
def test_pretrained_configs():
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    digests = {
        "cornet_z": "5c427c9c",
        "cornet_r": "5930a990",
        "cornet_rt": "933c001c",
        "cornet_s": "1d3f7974",
    }
    assert bm.list_pretrained("cornet*") == sorted(f"{a}.imagenet" for a in ARCHS)
    for arch, digest in digests.items():
        cfg = bm.get_pretrained_cfg(arch)
        assert cfg.url == f"https://s3.amazonaws.com/cornet-models/{arch}-{digest}.pth"
        assert cfg.sha256 == digest
        assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
        assert cfg.num_classes == 1000 and list(cfg.class_names) == categories
        assert cfg.input_size == (3, 224, 224)
        assert (
            "GPL" in cfg.license
            and "dicarlolab/CORnet" in cfg.source
            and "Kubilius" in cfg.citation
        )
    assert bm.get_pretrained_cfg("cornet_rt").timesteps == 5
    assert bm.get_pretrained_cfg("cornet_s").timesteps == 9


def _serve_official_file(tmp_path, monkeypatch, arch="cornet_z"):
    """An official-layout file behind a file:// URL named after its SHA-256, as on the server."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    source = make(arch, seed=5)
    staging = write_official_file(source, tmp_path / "staging.pth", arch)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    served = tmp_path / "server" / f"{arch}-{digest}.pth"
    served.parent.mkdir()
    staging.rename(served)
    cfg = bm.get_pretrained_cfg(arch)
    monkeypatch.setattr(cfg, "url", served.as_uri())
    monkeypatch.setattr(cfg, "sha256", digest)
    return source, served, tmp_path / "torch_home" / "hub" / "checkpoints" / served.name


def test_pretrained_download_hash_check_and_strict_load(tmp_path, monkeypatch):
    source, _, cached = _serve_official_file(tmp_path, monkeypatch)
    model = bm.create_model("cornet_z", pretrained=True).eval()
    assert cached.is_file()  # downloaded into torch.hub's cache
    x = images(1)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    assert model.pretrained_cfg.class_names is not None and model.pretrained_cfg.timesteps == 1
    # A new head keeps the body and drops the class names.
    assert (
        bm.create_model("cornet_z", pretrained=True, num_classes=7).pretrained_cfg.class_names
        is None
    )
    # A corrupted cached file is caught on the next load (cache hits are checked too).
    with open(cached, "ab") as handle:
        handle.write(b"garbage")
    with pytest.raises(bm.HashMismatchError, match="does not match"):
        bm.create_model("cornet_z", pretrained=True)


def test_pretrained_download_with_wrong_content(tmp_path, monkeypatch):
    _serve_official_file(tmp_path, monkeypatch)
    monkeypatch.setattr(bm.get_pretrained_cfg("cornet_z"), "sha256", "00000000")
    with pytest.raises(bm.HashMismatchError, match="expected 00000000"):
        bm.create_model("cornet_z", pretrained=True)


def test_pretrained_offline_error_names_url_and_checkpoint_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = bm.get_pretrained_cfg("cornet_rt")
    url = "http://127.0.0.1:9/cornet-models/cornet_rt-933c001c.pth"  # nothing listens: refused
    monkeypatch.setattr(cfg, "url", url)
    with pytest.raises(bm.WeightsUnavailableError) as err:
        bm.create_model("cornet_rt", pretrained=True)
    message = str(err.value)
    assert url in message and "checkpoint_path=" in message and "cornet_rt-933c001c.pth" in message
    assert not os.path.exists(tmp_path / "hub" / "checkpoints" / "cornet_rt-933c001c.pth")
