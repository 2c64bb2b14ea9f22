"""Declared connections match what each family computes (item 7 of issue 16).

For every layer ``A`` and a step ``t``, the output of ``A`` at ``t`` is perturbed in place as the
clock runs; the layers that change at ``t + 1`` must be exactly those that the declared
connections predict: the targets of ``A``'s one-step connections, and everything those reach
through same-step (delay 0) connections at ``t + 1``.
"""

from __future__ import annotations

import pytest
import torch

import blt_models as bm
from blt_models._clock import CONNECTION_KINDS, Connection

CASES = {
    "blt_b2lt3 biological": ("blt_b2lt3", dict(num_layers=4), 64),
    "blt_b3l standard": ("blt_b3l", dict(num_layers=4, unroll="standard"), 64),
    "blt_blt biological": ("blt_blt", dict(num_layers=4), 64),
    "blt_b feed-forward": ("blt_b", dict(num_layers=4), 64),
    "cornet_z": ("cornet_z", {}, 64),
    "cornet_r": ("cornet_r", {}, 64),
    "cornet_rt": ("cornet_rt", {}, 64),
    "cornet_s": ("cornet_s", {}, 64),
    "blt_vs biological": ("blt_vs", dict(image_size=128, unroll="biological"), 128),
    "blt_vs standard": pytest.param(
        ("blt_vs", dict(image_size=128, unroll="standard"), 128), marks=pytest.mark.slow
    ),
    "blt_vs no skips": pytest.param(
        ("blt_vs", dict(image_size=128, skip_connections=False), 128), marks=pytest.mark.slow
    ),
    "resnet50": ("resnet50", {}, 64),
}


def _model(name: str, kwargs: dict):
    torch.manual_seed(0)
    return bm.create_model(name, num_classes=5, **kwargs).eval()


def _run(model, x, timesteps, perturb=None, stop=None):
    """Features per step (copies), the storage of each at each step, optionally perturbing."""
    names = frozenset(model.layer_names)
    readouts = frozenset(model.readout_steps(timesteps))
    feats, ptrs = [], []
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for step in model._unroll(x, timesteps, names, readouts):
            if perturb is not None and step.t == perturb[0]:
                v = step.features[perturb[1]]
                v.add_(torch.randn(v.shape, generator=gen) * (v.std() + 0.1))
            feats.append({k: v.clone() for k, v in step.features.items()})
            ptrs.append({k: v.data_ptr() for k, v in step.features.items()})
            if stop is not None and step.t >= stop:
                break
    return feats, ptrs


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-5 * (1 + a.abs().max()))


def _predicted(conns: tuple[Connection, ...], src: str, present: set[str]) -> set[str]:
    changed = {c.dst for c in conns if c.src == src and c.delay == 1 and c.dst in present}
    grew = True
    while grew:
        reach = {c.dst for c in conns if c.delay == 0 and c.src in changed and c.dst in present}
        grew = not reach <= changed
        changed |= reach
    return changed


@pytest.mark.parametrize(
    "case",
    [pytest.param(v.values[0], marks=v.marks, id=k) if hasattr(v, "values")
     else pytest.param(v, id=k) for k, v in CASES.items()],
)  # fmt: skip
def test_declared_connections_are_what_the_clock_computes(case):
    name, kwargs, size = case
    model = _model(name, kwargs)
    conns = model.connections()
    layers = set(model.layer_names)
    assert conns, "every family declares its connections"
    for c in conns:
        assert c.kind in CONNECTION_KINDS and c.delay in (0, 1), c
        assert c.src in layers or (c.src == "input" and c.kind == "input"), c
        assert c.dst in layers or (c.dst == "readout" and c.kind == "readout" and c.delay == 0), c
        assert not c.module or model.get_submodule(c.module) is not None
    assert len([c for c in conns if c.kind == "readout"]) == 1, "one layer feeds the readout"
    assert len(set(conns)) == len(conns), "no connection twice"
    assert {c.dst for c in conns if c.src == "input"}, "the image enters somewhere"

    first = model.first_steps()
    timesteps = max(max(first.values()) + 2, model.min_timesteps)
    try:
        timesteps = model._resolve_timesteps(timesteps)
    except bm.TimestepsError:  # a family whose clock has a fixed length (CORnet-Z, -S, ResNet)
        timesteps = model.timesteps
    x = torch.randn(1, model.in_chans, size, size, generator=torch.Generator().manual_seed(0))
    base, ptrs = _run(model, x, timesteps)
    exercised, reused = set(), set()
    mismatches = []
    # Once every layer runs (a step before the last), one step tests every connection; CORnet-S
    # runs one area per step, so every step is tested.
    every = timesteps > 1 and set(base[timesteps - 2]) == layers
    for t in [timesteps - 2] if every else range(timesteps - 1):
        # A layer that holds an image-independent value at t + 1 (a gated stream whose drive has
        # not arrived: BLT-VS's TD streams give their GroupNorm's beta) cannot show a change.
        present = {n for n in base[t + 1] if first[n] <= t + 1}
        for src in base[t]:
            if ptrs[t][src] == ptrs[t + 1].get(src):  # one tensor reused at every step (an input
                reused.add(src)  # stage computed once): perturbing it would perturb every step
                continue
            pert, _ = _run(model, x, timesteps, perturb=(t, src), stop=t + 1)
            changed = {n for n in present if _differs(base[t + 1][n], pert[t + 1][n])}
            want = _predicted(conns, src, present)
            if changed != want:
                mismatches.append(
                    f"{src}@t={t}: changed at t+1 {sorted(changed)}, declared {sorted(want)}"
                )
            exercised |= {c for c in conns if c.src == src and c.delay == 1 and c.dst in present}
    assert not mismatches, "\n".join(mismatches)
    one_step = {c for c in conns if c.delay == 1 and c.src not in reused}
    assert exercised == one_step, f"never exercised: {sorted(map(str, one_step - exercised))}"


def test_blt_vs_streams_are_not_a_chain():
    conns = _model("blt_vs", dict(image_size=128, unroll="biological")).connections()
    pairs = {(c.src, c.dst) for c in conns}
    assert ("lgn_bu", "lgn_td") not in pairs and ("lgn_td", "v1_bu") not in pairs
    assert ("v1_td", "lgn_bu") in pairs and ("retina_bu", "lgn_td") in pairs  # the gates
    assert ("lgn_bu", "v1_bu") in pairs and ("v1_bu", "v4_bu") in pairs  # the V1 -> V4 skip


def test_cornet_recurrence_is_declared():
    for name, delay in (("cornet_r", 0), ("cornet_rt", 1)):
        conns = _model(name, {}).connections()
        assert {c.dst for c in conns if c.kind == "lateral"} == {"V1", "V2", "V4", "IT"}
        assert {c.delay for c in conns if c.kind == "bottom_up"} == {delay}
