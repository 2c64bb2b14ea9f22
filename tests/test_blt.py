"""The BLT family against the facts of the reference code (blt-reference.md sections 1 and 2)."""

import math

import pytest
import torch
from _reference_blt import reference_forward, standard_forward
from conftest import randomize_

import blt_models as bm
from blt_models.models.blt import BLT, BLT_NAMES, parse_connectivity

# Reference section 1.8: total parameters at 1000 classes and state-dict tensors (max pooling).
PARAMS = {
    "b": (4_471_464, 26), "b_pm": (5_020_392, 26), "b_top2linear": (14_104_552, 26),
    "b2": (7_774_248, 34), "b3": (12_477_736, 40), "bl": (10_002_600, 38),
    "bl_top2linear": (22_484_904, 38), "b2l": (13_305_384, 46), "b3l": (18_008_872, 52),
    "bt": (8_416_936, 36), "b2t": (11_719_720, 44), "b3t": (16_423_208, 50),
    "blt": (13_948_072, 48), "b2lt": (17_250_856, 56), "b3lt": (21_954_344, 62),
    "bt2": (11_718_824, 44), "b2t2": (15_021_608, 52), "b3t2": (19_725_096, 58),
    "blt2": (17_249_960, 56), "b2lt2": (20_552_744, 64), "b3lt2": (25_256_232, 70),
    "bt3": (16_421_288, 50), "b2t3": (19_724_072, 58), "b3t3": (24_427_560, 64),
    "blt3": (21_952_424, 62), "b2lt3": (25_255_208, 70), "b3lt3": (29_958_696, 76),
}  # fmt: skip
# Number of logits at T=10 and T=15 (section 1.3); None: feed-forward, a single tensor.
LOGITS = {"b": None, "b_pm": None, "b_top2linear": None, "b2": (7, 12), "b3": (8, 13),
          "bl": (5, 10), "bl_top2linear": (5, 10), "blt": (5, 10), "b3lt3": (8, 13), "b2t3": (7, 12)}  # fmt: skip


def test_registry_has_every_reference_name():
    assert {f"blt_{n}" for n in BLT_NAMES} <= set(bm.list_models("blt_*"))
    assert len(BLT_NAMES) == 27


@pytest.mark.parametrize("short", BLT_NAMES)
def test_parameter_and_tensor_counts(short):
    model = bm.create_model(f"blt_{short}")
    params, tensors = PARAMS[short]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == tensors
    at_3890 = bm.create_model(f"blt_{short}", num_classes=3890)
    assert sum(p.numel() for p in at_3890.parameters()) == params + 2890 * (model.channels[-1] + 1)


def test_state_dict_layout_bl():
    sd = bm.create_model("blt_bl").state_dict()
    expected = ["conv_input.weight", "conv_input.bias"]
    for k in range(6):
        expected += [f"norm_{k}.weight", f"norm_{k}.bias", f"conv_{k}_{k}.weight", f"conv_{k}_{k}.bias"]
        if k < 5:
            prefix = f"conv_{k}_{k + 1}" + (".conv" if k in (1, 2, 3) else "")
            expected += [f"{prefix}.weight", f"{prefix}.bias"]
    expected += ["read_out.linear.weight", "read_out.linear.bias"]
    assert list(sd) == expected  # registration order matters for optimizer states
    assert sd["conv_input.weight"].shape == (64, 3, 7, 7)
    assert sd["conv_3_4.conv.weight"].shape == (512, 256, 3, 3)
    assert sd["read_out.linear.weight"].shape == (1000, 512)


def test_state_dict_layout_top2linear_blur():
    sd = bm.create_model("blt_bl_top2linear", pool="blur").state_dict()
    assert len(sd) == 42
    assert list(sd)[:8] == [
        "conv_input.weight", "conv_input.bias", "pool_input.filt", "norm_0.weight", "norm_0.bias",
        "conv_0_0.weight", "conv_0_0.bias", "conv_0_1.blurpool.filt",
    ]  # fmt: skip
    assert sd["conv_3_4.linear.weight"].shape == (1024, 8192)
    assert sd["conv_4_4.weight"].shape == (1024, 1024, 1, 1)
    assert sd["conv_4_5.weight"].shape == (2048, 1024, 1, 1)
    assert sd["conv_5_5.weight"].shape == (2048, 2048, 1, 1)
    assert sd["read_out.linear.weight"].shape == (1000, 2048)
    base = torch.tensor([1.0, 3.0, 3.0, 1.0])
    filt = torch.outer(base, base) / 64
    assert torch.equal(sd["pool_input.filt"], filt.expand(64, 1, 4, 4))
    assert sd["conv_2_3.blurpool.filt"].shape == (256, 1, 4, 4)


def test_state_dict_layout_b_pm():
    model = bm.create_model("blt_b_pm")
    sd = model.state_dict()
    assert sd["conv_input.weight"].shape == (64, 3, 5, 5)
    assert sd["conv_2_3.weight"].shape == (256, 256, 3, 3)  # bare: factor 1
    assert isinstance(model.conv_4_5, torch.nn.Sequential)
    assert model.feedforward


EDGES_B3LT3 = {  # section 1.4: (kind, kernel, stride, padding[, output_padding])
    "conv_0_1": ("conv", 3, 1, 1), "conv_1_2": ("pool+conv", 3, 1, 1), "conv_4_5": ("conv", 3, 1, 1),
    "conv_1_3": ("pool+conv", 5, 2, 2), "conv_1_4": ("pool+conv", 9, 4, 4),
    "conv_0_3": ("pool+conv", 5, 2, 2), "conv_3_5": ("pool+conv", 3, 1, 1),
    "conv_1_0": ("conv", 3, 1, 1), "conv_5_4": ("conv", 3, 1, 1),
    "conv_2_1": ("convT", 3, 2, 1), "conv_3_1": ("convT", 5, 4, 1), "conv_4_1": ("convT", 9, 8, 1),
    "conv_5_2": ("convT", 5, 4, 1), "conv_3_0": ("convT", 5, 4, 1), "conv_2_2": ("conv", 3, 1, 1),
}  # fmt: skip


@pytest.mark.parametrize("edge", sorted(EDGES_B3LT3))
def test_edge_modules_b3lt3(edge):
    kind, k, s, p = EDGES_B3LT3[edge]
    module = getattr(bm.create_model("blt_b3lt3"), edge)
    if kind == "pool+conv":
        assert list(dict(module.named_children())) == ["maxpool", "conv"]
        module = module.conv
    conv_type = torch.nn.ConvTranspose2d if kind == "convT" else torch.nn.Conv2d
    assert type(module) is conv_type
    assert (module.kernel_size, module.stride, module.padding) == ((k, k), (s, s), (p, p))
    if kind == "convT":
        assert module.output_padding == (1, 1)


@pytest.mark.parametrize(
    "name,shifts",
    [("b", (-1,)), ("bl_top2linear", (-1, 0)), ("b3", (-3, -2, -1)), ("bt2", (-1, 1, 2)),
     ("b3lt3", (-3, -2, -1, 0, 1, 2, 3)), ("b_pm", (-1,)), ("b2lt", (-2, -1, 0, 1))],
)  # fmt: skip
def test_parse_connectivity(name, shifts):
    assert parse_connectivity(name)[0] == shifts


@pytest.mark.parametrize("short", sorted(LOGITS))
def test_readout_counts_and_steps(short):
    model = bm.create_model(f"blt_{short}")
    expected = LOGITS[short]
    for i, t in enumerate((10, 15)):
        steps = model.readout_steps(t)
        if expected is None:
            assert steps == [0]
        else:
            assert len(steps) == expected[i]
            assert steps == list(range(t - expected[i], t))


@pytest.mark.parametrize(
    "short,first",
    [("bl", [0, 1, 2, 3, 4, 5]), ("b2t", [0, 1, 1, 2, 2, 3]), ("b3lt3", [0, 1, 1, 1, 2, 2])],
)
def test_first_active_steps(short, first, rand_images):
    model = bm.create_model(f"blt_{short}", num_classes=5)
    assert list(model.first_steps(10).values()) == first
    out = model.forward_timesteps(rand_images(1, size=64), timesteps=8, layers="all")
    for k, name in enumerate(model.layer_names):
        active = out.features[name].flatten(1).abs().sum(1) > 0
        assert active.tolist() == [t >= first[k] for t in range(8)]


def _relerr(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# Every name, every pool, several timesteps: the unroller equals the literal reference loop.
@pytest.mark.parametrize("short", BLT_NAMES)
@pytest.mark.parametrize("pool", ["max", "avg", "blur"])
def test_parity_with_reference_loop(short, pool):
    # 32 px: layer maps 8, 8, 4, 2, 1, 1 (blur pooling needs maps of 3 px: 64 px)
    size = 224 if "top2linear" in short else 64 if pool == "blur" else 32
    torch.manual_seed(0)
    model = randomize_(bm.create_model(f"blt_{short}", pool=pool, num_classes=7)).eval()
    x = torch.randn(2, 3, size, size)
    for times in ((7,) if size == 224 else (6, 9)):
        with torch.no_grad():
            ref = reference_forward(model, x, times)
            out = model.forward_timesteps(x, timesteps=times)
            last = model(x) if model.feedforward else None
        if model.feedforward:
            assert out.logits.shape == (1, 2, 7)
            assert _relerr(out.logits[0], ref) < 1e-4
            assert _relerr(last, ref) < 1e-4
        else:
            assert out.logits.shape == (len(ref), 2, 7)
            assert _relerr(out.logits, torch.stack(ref)) < 1e-4
            model.timesteps = times
            with torch.no_grad():
                assert _relerr(model(x), ref[-1]) < 1e-4


@pytest.mark.parametrize("short", ["bl", "b2t", "b3lt3"])
def test_standard_unrolling(short, rand_images):
    model = randomize_(bm.create_model(f"blt_{short}", unroll="standard", num_classes=4)).eval()
    x = rand_images(2, size=64)
    with torch.no_grad():
        out = model.forward_timesteps(x, timesteps=4, layers=["layer5"])
        ref = standard_forward(model, x, 4)
    assert out.steps.tolist() == [0, 1, 2, 3]
    assert set(out.first_step.values()) == {0}
    assert _relerr(out.logits, torch.stack(ref)) < 1e-4
    # Step 0 is a pure bottom-up sweep: it equals the feed-forward model with the same weights.
    ff = bm.create_model("blt_b", num_classes=4)
    ff.load_state_dict({k: v for k, v in model.state_dict().items() if k in ff.state_dict()})
    if short == "bl":  # conv_{k-1}_k is the only bottom-up edge, so step 0 is blt_b's sweep
        with torch.no_grad():
            assert _relerr(out.logits[0], ff.eval()(x)) < 1e-4


@pytest.mark.parametrize("num_layers,size", [(4, 64), (5, 64), (8, 64)])
def test_other_depths_read_out_from_last_layer(num_layers, size, rand_images):
    model = randomize_(bm.create_model("blt_bl", num_layers=num_layers, num_classes=3)).eval()
    assert model.read_out.linear.in_features == model.channels[-1]
    x = rand_images(1, size=size)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers="all")
        ref = reference_forward(model, x, model.timesteps)
    assert out.logits.shape == (len(ref), 1, 3)
    assert _relerr(out.logits, torch.stack(ref)) < 1e-4


def test_features_are_the_reference_hook_values(rand_images):
    """Feature k at step t is what the reference's output_k hook sees at model time t."""
    model = randomize_(bm.create_model("blt_blt", num_classes=3)).eval()
    x = rand_images(1, size=64)
    with torch.no_grad():
        out = model.forward_timesteps(x, timesteps=7, layers=["output_2", "layer4"])
        # Step 2 of layer 2: conv_1_2 of layer 1 at step 1 (layer 3 is absent until step 3).
        s = model.pool_input(model.conv_input(x))
        x0 = torch.relu(model.norm_0(s))
        x1 = torch.relu(model.norm_1(model.conv_0_1(x0)))
        x2 = torch.relu(model.norm_2(model.conv_1_2(x1)))
    assert torch.allclose(out.features["output_2"][2, 0], x2[0], atol=1e-5)
    assert out.features["layer4"].shape == (7, 1, 512, 2, 2)
    assert out.first_step["output_2"] == 2


def test_pruning_does_not_change_results(rand_images):
    model = randomize_(bm.create_model("blt_b2lt", num_classes=3)).eval()
    x = rand_images(1, size=64)
    with torch.no_grad():
        lean = model.forward_timesteps(x).logits
        full = model.forward_timesteps(x, layers="all").logits
    assert torch.equal(lean, full)


def test_input_sizes_other_than_224(rand_images):
    model = bm.create_model("blt_blt", num_classes=3).eval()
    for size in (32, 96, 128, 160):
        out = model.forward_timesteps(rand_images(1, size=size), layers=["layer5"])
        assert out.features["layer5"].shape[-1] == math.ceil(size / 32)
    model(torch.randn(1, 3, 96, 128))  # non-square


def test_blur_needs_larger_maps():
    model = bm.create_model("blt_bl", pool="blur", num_classes=3)
    assert model.min_input_size == 64 and bm.create_model("blt_blt", pool="blur").min_input_size == 64
    with pytest.raises(bm.InputError, match="reflection padding"):
        model(torch.randn(1, 3, 32, 32))
    model(torch.randn(1, 3, 48, 48))


def test_pool_average_alias_and_errors():
    assert bm.create_model("blt_bl", pool="average").pool == "avg"
    assert isinstance(bm.create_model("blt_bl", pool="average").pool_input, torch.nn.AvgPool2d)
    with pytest.raises(ValueError, match="pool must be one of"):
        bm.create_model("blt_bl", pool="median")
    with pytest.raises(ValueError, match="unroll must be one of"):
        bm.create_model("blt_bl", unroll="sideways")
    with pytest.raises(ValueError, match="no layer table for num_layers=7"):
        bm.create_model("blt_bl", num_layers=7)
    with pytest.raises(ValueError, match="top2linear"):
        bm.create_model("blt_bl_top2linear", num_layers=4)


def test_feed_forward_ignores_timesteps(rand_images):
    model = bm.create_model("blt_b", timesteps=10, num_classes=3).eval()
    x = rand_images(1, size=64)
    with torch.no_grad():
        a = model.forward_timesteps(x, timesteps=3, layers=["layer5"])
        b = model.forward_timesteps(x, timesteps=12)
    assert torch.equal(a.logits, b.logits)
    assert a.features["layer5"].shape[0] == 1 and a.steps.tolist() == [0]
    assert model.timesteps == 1


def test_custom_connectivity_class():
    model = BLT(connectivity=(-1, 0), num_layers=4, num_classes=2, channels=(32, 32, 64, 64),
                sizes=(8, 8, 4, 2), nominal_size=32, in_chans=1)  # fmt: skip
    out = model.forward_timesteps(torch.randn(2, 1, 32, 32))
    assert out.logits.shape == (10 - 3, 2, 2)


def test_bf16_autocast_stays_close_to_fp32(rand_images):
    model = randomize_(bm.create_model("blt_blt", num_classes=5)).eval()
    x = rand_images(2, size=64)
    with torch.no_grad():
        ref = model.forward_timesteps(x, layers=["layer3"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_timesteps(x, layers=["layer3"])
    assert low.features["layer3"].dtype == torch.bfloat16
    assert _relerr(low.logits.float(), ref.logits) < 0.05
    assert _relerr(low.features["layer3"].float(), ref.features["layer3"]) < 0.05


def test_gradients_flow_through_every_readout(rand_images):
    model = bm.create_model("blt_bl", num_layers=4, num_classes=3).train()
    out = model.forward_timesteps(rand_images(2, size=64))
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_inference_releases_previous_maps_without_changing_a_value():
    """In inference the step frees each previous output after its last reader; every variant,
    both unrollings (also one switched after construction), all layers, bit for bit what the
    autograd path (which releases nothing) computes."""
    names = [n for n in bm.list_models("blt_*") if n not in ("blt_vs", "blt_bl_tiny")]
    for name in names:
        layers = 6 if name.endswith(("top2linear", "pm")) else 5
        torch.manual_seed(0)
        model = bm.create_model(name, num_layers=layers, timesteps=7, unroll="standard").eval()
        if model.feedforward:
            continue
        side = 224 if name.endswith("top2linear") else 64  # a Linear edge fixes the size
        x = torch.randn(1 if side == 224 else 2, 3, side, side)
        for mode in ("biological", "standard"):  # the unrolling as set now, not at construction
            model.unroll = mode
            with torch.no_grad():
                freed = model.forward_timesteps(x, layers="all")
            with torch.enable_grad():
                kept = model.forward_timesteps(x, layers="all")
            for layer in model.layer_names:
                assert torch.equal(freed.features[layer], kept.features[layer]), (name, mode, layer)
            assert torch.equal(freed.logits, kept.logits), (name, mode)
