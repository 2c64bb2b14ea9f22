"""Presentation protocols (blt_models.stimuli): the documented frames, options, records, errors."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import blt_models as bm
from blt_models.stimuli import (
    RSVP,
    BackwardMask,
    Presentation,
    StimulusError,
    protocol_from_dict,
)


def batch(b=3, c=2, size=5, seed=0):
    return torch.randn(b, c, size, size, generator=torch.Generator().manual_seed(seed)) + 3


def timeline(seq, contents):
    """One character per step: the name of the content the frame equals, '_' for blank (0)."""
    out = []
    for frame in seq:
        names = [n for n, c in contents.items() if torch.equal(frame, c)]
        out.append(
            names[0] if names else "_" if torch.equal(frame, torch.zeros_like(frame)) else "?"
        )
    return " ".join(out)


def test_documented_frames():
    x, m = batch(seed=1), batch(seed=2)
    assert timeline(Presentation(timesteps=6, on=1, off=3).apply(x), {"I": x}) == "_ I I _ _ _"
    assert timeline(Presentation(timesteps=3).apply(x), {"I": x}) == "I I I"
    seq = BackwardMask(timesteps=6, soa=2, mask="image").apply(x, mask=m)
    assert timeline(seq, {"I": x, "M": m}) == "I I M M M M"
    seq = BackwardMask(timesteps=6, soa=3, duration=1, mask_duration=2, mask="image").apply(
        x, mask=m
    )
    assert timeline(seq, {"I": x, "M": m}) == "I _ _ M M _"
    items = [batch(seed=10 + k) for k in range(3)]
    seq = RSVP(timesteps=7, items=3, duration=1, gap=1).apply(items)
    assert timeline(seq, {str(k + 1): it for k, it in enumerate(items)}) == "1 _ 2 _ 3 _ _"
    seq = RSVP(timesteps=6, items=2, duration=2, gap=1, onset=1).apply(torch.stack(items[:2]))
    assert timeline(seq, {"1": items[0], "2": items[1]}) == "_ 1 1 _ 2 2"
    assert seq.shape == (6, 3, 2, 5, 5) and seq.is_contiguous()


def test_noise_mask_is_seeded_per_image_held_and_centred_on_the_blank():
    x = batch(b=4, size=32)  # 8192 noise values per frame
    p = BackwardMask(timesteps=5, soa=1, mask_std=0.5, seed=7, blank=0.25)
    seq = p.apply(x)
    assert torch.equal(seq[1], seq[4])  # one pattern for the mask's steps
    assert abs(seq[1].mean().item() - 0.25) < 0.03 and abs(seq[1].std().item() - 0.5) < 0.03
    # The same image index gets the same mask in any batch; other seeds give other masks.
    part = p.apply(x[2:], index=[2, 3])
    assert torch.equal(part[1], seq[1, 2:])
    assert not torch.equal(BackwardMask(timesteps=5, soa=1, seed=8).apply(x)[1], seq[1])
    assert not torch.equal(seq[1, 0], seq[1, 1])


def test_blank_contrast_and_noise_per_step():
    x = batch(b=2, c=3)
    blank = (0.1, -0.2, 0.3)
    seq = Presentation(timesteps=4, on=1, off=3, blank=blank).apply(x)
    grey = torch.tensor(blank).view(1, 3, 1, 1).expand_as(x)
    assert torch.equal(seq[0], grey) and torch.equal(seq[3], grey) and torch.equal(seq[1], x)
    seq = Presentation(timesteps=3, contrast=(1.0, 0.5, 0.0), blank=1.0).apply(x)
    assert torch.equal(seq[0], x)
    torch.testing.assert_close(seq[1], 1.0 + 0.5 * (x - 1.0))
    assert torch.equal(seq[2], torch.ones_like(x))
    p = Presentation(timesteps=3, noise_std=(0.0, 1.0, 2.0), seed=3)
    seq = p.apply(x)
    assert torch.equal(seq[0], x)
    n1, n2 = seq[1] - x, seq[2] - x
    assert 0.7 < n1.std().item() < 1.3 and 1.4 < n2.std().item() < 2.6
    assert not torch.allclose(n2, 2 * n1)  # fresh noise at every step
    assert torch.equal(p.apply(x), seq)  # seeded
    assert torch.equal(p.apply(x[1:], index=[1]), seq[:, 1:])
    half = Presentation(timesteps=2).apply(x.to(torch.float64))
    assert half.dtype == torch.float64


def test_records_round_trip_through_json():
    protocols = [
        Presentation(timesteps=8, on=1, off=3, contrast=[1, 1, 0.5, 1, 1, 1, 1, 1]),
        BackwardMask(timesteps=8, soa=2, duration=1, mask="image", blank=(0.1, 0.2)),
        RSVP(timesteps=9, items=2, duration=2, gap=3, noise_std=0.1, seed=5),
    ]
    for p in protocols:
        record = json.loads(json.dumps(p.to_dict()))
        back = protocol_from_dict(record)
        assert back == p and type(back) is type(p) and hash(back) == hash(p)
    assert protocols[0].contrast == (1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(StimulusError, match="unknown protocol 'Flicker'"):
        protocol_from_dict({"protocol": "Flicker", "timesteps": 3})
    with pytest.raises(StimulusError, match="no field"):
        protocol_from_dict({"protocol": "Presentation", "timesteps": 3, "of": 2})
    with pytest.raises(StimulusError, match="not a protocol record"):
        protocol_from_dict({"timesteps": 3})


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Presentation(timesteps=8, on=2, off=9), r"ends at step 9.*beyond timesteps=8"),
        (lambda: Presentation(timesteps=8, on=3, off=3), "empty"),
        (lambda: Presentation(timesteps=8, on=8), "empty"),
        (lambda: Presentation(timesteps=0), "timesteps must be an integer between 1 and 10,000"),
        (lambda: Presentation(timesteps=8.0), "timesteps must be an integer"),
        (lambda: Presentation(timesteps=3, contrast=(1, 2)), "2 values but timesteps=3"),
        (lambda: Presentation(timesteps=3, noise_std=-1), ">= 0"),
        (lambda: Presentation(timesteps=3, contrast=float("nan")), "finite"),
        (lambda: BackwardMask(timesteps=8, soa=8), r"mask ends at step 9.*beyond timesteps=8"),
        (lambda: BackwardMask(timesteps=8, soa=4, mask_duration=5), "mask ends at step 9"),
        (lambda: BackwardMask(timesteps=8, soa=2, duration=3), "longer than soa"),
        (lambda: BackwardMask(timesteps=8, soa=0), "soa must be an integer between 1 and"),
        (lambda: BackwardMask(timesteps=8, soa=2, mask="pink"), "mask must be one of"),
        (lambda: RSVP(timesteps=4, items=3, duration=1, gap=1), r"last of 3 items ends at step 5"),
    ],
)
def test_bad_protocols_are_refused(build, match):
    with pytest.raises(StimulusError, match=match):
        build()
    assert issubclass(StimulusError, (bm.InputError, ValueError, bm.BltModelsError))


def test_bad_inputs_to_apply():
    x = batch()
    with pytest.raises(StimulusError, match="needs the mask images"):
        BackwardMask(timesteps=4, soa=1, mask="image").apply(x)
    with pytest.raises(StimulusError, match=r"mask has shape \(3, 2, 4, 4\)"):
        BackwardMask(timesteps=4, soa=1, mask="image").apply(x, mask=torch.randn(3, 2, 4, 4))
    one = BackwardMask(timesteps=4, soa=1, mask="image").apply(x, mask=x[0])
    assert torch.equal(one[1], x[0].expand_as(x))  # [C, H, W] masks every image
    with pytest.raises(StimulusError, match="unexpected input"):
        Presentation(timesteps=4).apply(x, mask=x)
    with pytest.raises(StimulusError, match=r"\[B, C, H, W\]"):
        Presentation(timesteps=4).apply(x[0])
    with pytest.raises(StimulusError, match="floating-point"):
        Presentation(timesteps=4).apply(x.to(torch.uint8))
    with pytest.raises(StimulusError, match="index has 2 entries"):
        Presentation(timesteps=4).apply(x, index=[0, 1])
    with pytest.raises(StimulusError, match="blank has 3 values but the images have 2"):
        Presentation(timesteps=4, blank=(0, 0, 0)).apply(x)
    with pytest.raises(StimulusError, match="needs 2 image batches"):
        RSVP(timesteps=4, items=2).apply(x)
    with pytest.raises(StimulusError, match="item 1 has shape"):
        RSVP(timesteps=4, items=2).apply([x, x[:2]])


@settings(max_examples=40, deadline=None)
@given(
    timesteps=st.integers(1, 12),
    on=st.integers(0, 11),
    length=st.integers(1, 12),
)
def test_presentation_shows_the_image_exactly_on_its_steps(timesteps, on, length):
    off = on + length
    if off > timesteps:
        with pytest.raises(StimulusError, match="beyond timesteps"):
            Presentation(timesteps=timesteps, on=on, off=off)
        return
    x = batch(b=1, c=1, size=2)
    seq = Presentation(timesteps=timesteps, on=on, off=off).apply(x)
    shown = [t for t in range(timesteps) if torch.equal(seq[t], x)]
    blank = [t for t in range(timesteps) if torch.equal(seq[t], torch.zeros_like(x))]
    assert shown == list(range(on, off)) and sorted(shown + blank) == list(range(timesteps))


def test_protocol_drives_a_model():
    model = bm.create_model("blt_bl_tiny").eval()
    x = torch.randn(2, 1, 32, 32)
    p = BackwardMask(timesteps=8, soa=2)
    with torch.no_grad():
        out = model.forward_timesteps(p.apply(x), layers=["layer0"])
        assert out.timesteps == 8 and out.steps.tolist() == [3, 4, 5, 6, 7]
        # Until the mask arrives, layer 0 is the flash of the static image.
        static = model.forward_timesteps(x, layers=["layer0"])
        assert torch.equal(out.features["layer0"][:2], static.features["layer0"][:2])
        with pytest.raises(bm.TimestepsError, match="T=8 frames"):
            model.forward_timesteps(p.apply(x), timesteps=10)
