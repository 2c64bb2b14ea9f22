"""Time-varying input on the clock: sequences [T, B, C, H, W], causality, delays, feed-forward."""

import pytest
import torch
from conftest import randomize_

import blt_models as bm
from blt_models.errors import InputError, TimestepsError
from blt_models.models.blt import TINY_ARGS

TINY = dict(TINY_ARGS, num_classes=5, in_chans=1)


def frames(t, b=2, c=1, size=32, seed=0):
    return torch.randn(t, b, c, size, size, generator=torch.Generator().manual_seed(seed))


def blt(name, unroll="biological", **kw):
    torch.manual_seed(0)
    return randomize_(bm.create_model(name, unroll=unroll, **dict(TINY, **kw))).eval()


def blt_vs(unroll):
    torch.manual_seed(0)
    model = bm.create_model(
        "blt_vs", image_size=128, num_classes=10, add_feats=6, unroll=unroll, timesteps=6
    )
    return randomize_(model).eval()


def cornet(name):
    torch.manual_seed(0)
    return randomize_(bm.create_model(name, timesteps=4, num_classes=5)).eval()


# (factory, channels, side, T, readout layer)
RECURRENT = {
    "blt_bl-bio": (lambda: blt("blt_bl"), 1, 32, 7, "layer3"),
    "blt_bl-std": (lambda: blt("blt_bl", "standard"), 1, 32, 4, "layer3"),
    "blt_b2lt-bio": (lambda: blt("blt_b2lt"), 1, 32, 6, "layer3"),
    "blt_b2lt-std": (lambda: blt("blt_b2lt", "standard"), 1, 32, 4, "layer3"),
    "blt_blt-bio": (lambda: blt("blt_blt"), 1, 32, 7, "layer3"),
    "blt_blt-std": (lambda: blt("blt_blt", "standard"), 1, 32, 4, "layer3"),
    "cornet_r": (lambda: cornet("cornet_r"), 3, 32, 4, "IT"),
    "cornet_rt": (lambda: cornet("cornet_rt"), 3, 32, 5, "IT"),
    "blt_vs-std": (lambda: blt_vs("standard"), 3, 128, 3, "loc_bu"),
    "blt_vs-bio": (lambda: blt_vs("biological"), 3, 128, 7, "loc_bu"),
}


def run(model, x, **kw):
    with torch.no_grad():
        return model.forward_timesteps(x, layers="all", **kw)


def changed_steps(a, b):
    """Steps (dim 0) at which two [T, B, ...] tensors differ at all (bitwise)."""
    return [t for t in range(a.shape[0]) if not torch.equal(a[t], b[t])]


@pytest.mark.parametrize("key", list(RECURRENT))
def test_clock_rule_causality_delays_and_constant_sequence(key):
    factory, c, side, T, readout_layer = RECURRENT[key]
    model = factory()
    image = frames(1, b=1, c=c, size=side, seed=1)[0]
    constant = image[None].repeat(T, 1, 1, 1, 1)  # materialised: the per-frame input stage
    static = run(model, image, timesteps=T)
    base = run(model, constant)

    # A constant sequence is the static image, bit for bit (features, readouts, steps).
    assert torch.equal(base.steps, static.steps)
    assert torch.equal(base.logits, static.logits)
    for name in model.layer_names:
        assert torch.equal(base.features[name], static.features[name]), name
    assert base.first_step == static.first_step
    # The static image is the frame of every step: first_step is the earliest arrival.
    arrivals = [model.arrival_steps(s, T) for s in range(T)]
    assert static.first_step == {k: min(a[k] for a in arrivals) for k in model.layer_names}
    assert torch.equal(model(constant), static.logits[-1])

    other = frames(1, b=1, c=c, size=side, seed=2)[0]
    onsets = sorted({1, T - 2} if key.startswith("blt_vs") else {0, 1, T // 2, T - 1})
    for onset in onsets:
        seq = constant.clone()
        seq[onset] = other  # only the frame of step `onset` changes
        out = run(model, seq)
        arrival = model.arrival_steps(onset, T)
        for name in model.layer_names:
            diff = changed_steps(out.features[name], base.features[name])
            # Causality and delay: nothing changes before the frame reaches the layer, and it
            # changes exactly at the step the family's update rule says.
            expected_first = arrival[name] if arrival[name] < T else None
            assert (diff[0] if diff else None) == expected_first, (key, onset, name, diff)
            assert arrival[name] >= onset
        rows = changed_steps(out.logits, base.logits)
        changed = [int(out.steps[r]) for r in rows]
        first_readout = next((s for s in out.steps.tolist() if s >= arrival[readout_layer]), None)
        assert (changed[0] if changed else None) == first_readout, (key, onset, changed)


def test_blt_biological_delay_is_first_step_and_standard_is_zero():
    bio, std = blt("blt_b2lt"), blt("blt_b2lt", "standard")
    assert bio.first_steps() == {"layer0": 0, "layer1": 1, "layer2": 1, "layer3": 2}
    for onset in (0, 3):
        assert bio.arrival_steps(onset) == {k: onset + f for k, f in bio.first_steps().items()}
        assert std.arrival_steps(onset) == dict.fromkeys(std.layer_names, onset)


def test_cornet_and_blt_vs_delay_tables():
    assert cornet("cornet_rt").arrival_steps(2) == {"V1": 2, "V2": 3, "V4": 4, "IT": 5}
    r = cornet("cornet_r")
    assert r.arrival_steps(0) == {"V1": 0, "V2": 1, "V4": 1, "IT": 1} == r.first_steps()
    assert r.arrival_steps(2) == dict.fromkeys(("V1", "V2", "V4", "IT"), 2)
    std = blt_vs("standard")
    assert std.arrival_steps(3) == dict.fromkeys(std.layer_names, 3)
    bio = blt_vs("biological")
    # From onset 2 on, every stream present: bottom-up one area per step, the V1 -> V4 skip
    # saving one, each TD stream with its BU partner (the table of docs/stimuli.md).
    delay = dict(retina_bu=0, lgn_bu=1, lgn_td=1, v1_bu=2, v1_td=2, v2_bu=3, v2_td=3, v3_bu=4,
                 v3_td=4, v4_bu=3, v4_td=3, loc_bu=4, loc_td=4, readout_td=4)  # fmt: skip
    for onset in (2, 5):
        assert bio.arrival_steps(onset, 12) == {k: onset + d for k, d in delay.items()}
    # Frames 0 and 1 reach TD streams later: those still hold GroupNorm beta, not a drive.
    assert bio.arrival_steps(0, 12)["lgn_td"] == 6 > bio.first_steps(12)["lgn_td"] == 3


FEEDFORWARD = {
    "blt_b": (lambda: blt("blt_b"), 1, 32),
    "blt_b_pm": (
        lambda: randomize_(bm.create_model("blt_b_pm", num_classes=5, in_chans=1)).eval(),
        1,
        64,
    ),
    "blt_b_top2linear": (
        lambda: randomize_(bm.create_model("blt_b_top2linear", num_classes=5, in_chans=1)).eval(),
        1,
        224,
    ),
    "cornet_z": (lambda: randomize_(bm.create_model("cornet_z", num_classes=5)).eval(), 3, 32),
    "resnet50": (lambda: bm.create_model("resnet50", num_classes=5).eval(), 3, 32),
}


@pytest.mark.parametrize("key", list(FEEDFORWARD))
def test_feedforward_models_sweep_each_frame(key):
    factory, c, side = FEEDFORWARD[key]
    torch.manual_seed(0)
    model = factory()
    seq = frames(3, b=1, c=c, size=side, seed=3)
    out = run(model, seq)
    assert out.steps.tolist() == [0, 1, 2] and out.timesteps == 3
    assert out.logits.shape == (3, 1, 5)
    assert out.first_step == dict.fromkeys(model.layer_names, 0)
    assert model.arrival_steps(2) == dict.fromkeys(model.layer_names, 2)
    for t in range(3):
        single = run(model, seq[t])
        assert torch.equal(out.logits[t], single.logits[0])
        for name in model.layer_names:
            assert torch.equal(out.features[name][t], single.features[name][0]), name
    with torch.no_grad():
        assert torch.equal(model(seq), out.logits[-1])


def test_expanded_sequence_takes_the_static_path():
    model = blt("blt_bl")
    image = frames(1, seed=4)[0]
    static = run(model, image, timesteps=6)
    expanded = run(model, image[None].expand(6, -1, -1, -1, -1))
    assert torch.equal(static.logits, expanded.logits)
    assert torch.equal(static.features["layer2"], expanded.features["layer2"])


def test_input_stage_runs_once_static_and_once_per_needed_step_for_a_sequence():
    model = blt("blt_bl")
    calls = []
    model.conv_input.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with torch.no_grad():
        model(frames(1)[0])
        assert len(calls) == 1
        calls.clear()
        model(frames(model.timesteps))
        # model(x) needs layer 0 only up to step T-1 - first_step(layer3) = T-4.
        assert len(calls) == model.timesteps - 3
        calls.clear()
        model.forward_timesteps(frames(model.timesteps), layers=["layer0"])
        assert len(calls) == model.timesteps


def test_sequence_errors():
    model = blt("blt_bl")
    seq = frames(6)
    with pytest.raises(TimestepsError, match=r"T=6 frames.*timesteps=5"):
        model.forward_timesteps(seq, timesteps=5)
    with pytest.raises(TimestepsError, match="needs timesteps >= 4"):
        model(frames(3))
    with pytest.raises(InputError, match=r"each frame.*has 3.*never as \[B, T, C, H, W\]"):
        model(torch.randn(6, 2, 3, 32, 32))
    with pytest.raises(InputError, match="too small"):
        model(torch.randn(6, 2, 1, 4, 4))
    with pytest.raises(InputError, match="floating-point"):
        model(torch.zeros(6, 2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputError, match="at least one frame"):
        model(torch.randn(0, 2, 1, 32, 32))
    with pytest.raises(InputError, match="5-D time-major"):
        model(torch.randn(1, 6, 2, 1, 32, 32))
    with pytest.raises(TimestepsError, match="positive integer"):
        model.forward_timesteps(seq, timesteps=True)
    resnet = bm.create_model("resnet50", num_classes=3)
    with pytest.raises(TimestepsError, match="T=2 frames"):
        resnet.forward_timesteps(torch.randn(2, 1, 3, 32, 32), timesteps=1)


def test_cornet_s_refuses_sequences_with_the_reason():
    model = bm.create_model("cornet_s", num_classes=3).eval()
    with pytest.raises(InputError, match="enters only at step 0.*cornet_r"):
        model(torch.randn(9, 1, 3, 32, 32))
    with pytest.raises(InputError, match="does not take input sequences"):
        model.arrival_steps(2)
    assert model.arrival_steps(0) == model.first_steps()


def test_forward_features_of_a_sequence_reads_its_own_last_step():
    """A sequence longer than the default clock: features and head at the sequence's last
    readout (it read the default clock's step before, silently)."""
    model = bm.create_model("blt_bl_tiny").eval()
    seq = torch.randn(model.timesteps + 2, 2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.forward_features(seq)
        ref = model.forward_timesteps(seq, layers=[model.head_layer])
        assert torch.equal(feats, ref.features[model.head_layer][-1])
        assert torch.equal(model.forward_head(feats), model(seq))
