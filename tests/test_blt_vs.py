"""BLT-VS: parity with an independent functional re-implementation of the reference, key mapping,
parameter counts, clock tables, published-file loading (checkpoint_path= and the Hub cache).

The functional reference below is written from ../shared/reference/blt-vs-reference.md (sections
2-4) on the *published* key layout (``connections.<Area>.<module>``) with plain ``F.conv2d`` calls,
the reference's loops and its activation rule; it shares no code with ``blt_models``. Forward
tests use the 128 px variant with few classes to stay fast; the 224 px published configurations
are compared in the ``slow`` tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

import blt_models as bm
from blt_models._convert import blt_vs_kwargs_from_filename, blt_vs_kwargs_from_state_dict
from blt_models.models.blt_vs import blt_vs_state_dict_to_reference, convert_blt_vs_state_dict

torch.set_num_threads(min(2, torch.get_num_threads()))

HUB_ID = "novelmartis/blt_vs_model"
FILES = {
    "imagenet": "blt_vs_slt_111_biounroll_0_t_6_readout_multi_dataset_imagenet_num_1.pth",
    "ecoset": "blt_vs_slt_111_biounroll_1_t_12_readout_multi_dataset_ecoset_num_1.pth",
}

# ------------------------------------------------------------------ reference facts (section 2, 3)
NAMES = ["Retina", "LGN", "V1", "V2", "V3", "V4", "LOC", "Readout"]
ZOO_AREAS = ["retina", "lgn", "v1", "v2", "v3", "v4", "loc", "readout"]
CH = [32, 32, 576, 480, 352, 256, 352]
K = {224: [7, 7, 5, 1, 5, 3, 3, 5], 128: [5, 3, 3, 1, 3, 3, 3, 3]}
S = [2, 2, 2, 1, 1, 1, 2, 2]
OUT = {224: [112, 56, 28, 28, 28, 28, 14, 7], 128: [64, 32, 16, 16, 16, 16, 8, 4]}

# Section 3.4, ImageNet configuration: (module, weight shape); every module also has a bias.
IMAGENET_TABLE = [
    ("Retina.bu_conv", (32, 3, 7, 7)), ("Retina.layer_norm_bu", (32,)), ("Retina.layer_norm_td", (32,)),
    ("LGN.bu_conv", (32, 32, 7, 7)), ("LGN.td_conv", (576, 32, 5, 5)),
    ("LGN.layer_norm_bu", (32,)), ("LGN.layer_norm_td", (32,)),
    ("V1.bu_conv", (576, 32, 5, 5)), ("V1.bu_l_conv_depthwise", (576, 1, 5, 5)),
    ("V1.bu_l_conv_pointwise", (576, 576, 1, 1)), ("V1.td_conv", (480, 576, 1, 1)),
    ("V1.td_l_conv_depthwise", (576, 1, 5, 5)), ("V1.td_l_conv_pointwise", (576, 576, 1, 1)),
    ("V1.skip_td_depthwise", (576, 4, 3, 3)), ("V1.skip_td_pointwise", (576, 576, 1, 1)),
    ("V1.layer_norm_bu", (576,)), ("V1.layer_norm_td", (576,)),
    ("V2.bu_conv", (480, 576, 1, 1)), ("V2.bu_l_conv_depthwise", (480, 1, 5, 5)),
    ("V2.bu_l_conv_pointwise", (480, 480, 1, 1)), ("V2.td_conv", (352, 480, 5, 5)),
    ("V2.td_l_conv_depthwise", (480, 1, 5, 5)), ("V2.td_l_conv_pointwise", (480, 480, 1, 1)),
    ("V2.layer_norm_bu", (480,)), ("V2.layer_norm_td", (480,)),
    ("V3.bu_conv", (352, 480, 5, 5)), ("V3.bu_l_conv_depthwise", (352, 1, 5, 5)),
    ("V3.bu_l_conv_pointwise", (352, 352, 1, 1)), ("V3.td_conv", (256, 352, 3, 3)),
    ("V3.td_l_conv_depthwise", (352, 1, 5, 5)), ("V3.td_l_conv_pointwise", (352, 352, 1, 1)),
    ("V3.layer_norm_bu", (352,)), ("V3.layer_norm_td", (352,)),
    ("V4.bu_conv", (256, 352, 3, 3)), ("V4.bu_l_conv_depthwise", (256, 1, 5, 5)),
    ("V4.bu_l_conv_pointwise", (256, 256, 1, 1)), ("V4.td_conv", (352, 256, 3, 3)),
    ("V4.td_l_conv_depthwise", (256, 1, 5, 5)), ("V4.td_l_conv_pointwise", (256, 256, 1, 1)),
    ("V4.skip_bu_depthwise", (256, 9, 7, 7)), ("V4.skip_bu_pointwise", (256, 256, 1, 1)),
    ("V4.layer_norm_bu", (256,)), ("V4.layer_norm_td", (256,)),
    ("LOC.bu_conv", (352, 256, 3, 3)), ("LOC.bu_l_conv_depthwise", (352, 1, 5, 5)),
    ("LOC.bu_l_conv_pointwise", (352, 352, 1, 1)), ("LOC.td_conv", (1100, 352, 5, 5)),
    ("LOC.td_l_conv_depthwise", (352, 1, 5, 5)), ("LOC.td_l_conv_pointwise", (352, 352, 1, 1)),
    ("LOC.layer_norm_bu", (352,)), ("LOC.layer_norm_td", (352,)),
    ("Readout.readout_conv", (1100, 352, 5, 5)), ("Readout.layer_norm_td", (1100,)),
]  # fmt: skip
ECOSET_CHANGES = {"LOC.td_conv": (665, 352, 5, 5), "Readout.readout_conv": (665, 352, 5, 5),
                  "Readout.layer_norm_td": (665,)}  # fmt: skip


# ------------------------------------------------------------------ functional reference (section 3, 4)
class RefBLTVS:
    """The reference forward pass, step by step as section 4 describes it, on published keys."""

    def __init__(self, sd, num_classes, image_size, bio, readout_type="multi"):
        self.sd, self.nc, self.size, self.bio, self.readout_type = sd, num_classes, image_size, bio, readout_type

    def has(self, area, module):
        return f"connections.{area}.{module}.weight" in self.sd

    def conv(self, area, module, x, stride=1, padding=0, groups=1):
        w, b = self.sd[f"connections.{area}.{module}.weight"], self.sd[f"connections.{area}.{module}.bias"]
        return F.conv2d(x, w, b, stride, padding, 1, groups)

    def gn(self, area, which, x):
        p = f"connections.{area}.layer_norm_{which}"
        return F.group_norm(x, 1, self.sd[p + ".weight"], self.sd[p + ".bias"], 1e-5)

    def layer(self, i, bu=None, bu_l=None, td=None, td_l=None, bu_skip=None, td_skip=None):
        """Section 3.2: one call of area i; returns (BU output, TD output)."""
        a, k, s = NAMES[i], K[self.size][i], S[i]
        lk = 0 if i < 2 else (5 if self.size == 224 else 3)
        B = self.conv(a, "bu_conv", bu, s, (k - 1) // 2) if bu is not None else None
        Lb = Ld = Sb = Sd = D = None
        if bu_l is not None and self.has(a, "bu_l_conv_depthwise"):
            Lb = self.conv(a, "bu_l_conv_pointwise", self.conv(a, "bu_l_conv_depthwise", bu_l, 1, lk // 2, CH[i]))
        if td_l is not None and self.has(a, "td_l_conv_depthwise"):
            Ld = self.conv(a, "td_l_conv_pointwise", self.conv(a, "td_l_conv_depthwise", td_l, 1, lk // 2, CH[i]))
        if bu_skip is not None and self.has(a, "skip_bu_depthwise"):
            ks = 7 if self.size == 224 else 5
            Sb = self.conv(a, "skip_bu_pointwise", self.conv(a, "skip_bu_depthwise", bu_skip, 1, ks // 2, 64))
        if td_skip is not None and self.has(a, "skip_td_depthwise"):
            Sd = self.conv(a, "skip_td_pointwise", self.conv(a, "skip_td_depthwise", td_skip, 1, 1, 64))
        if td is not None and self.has(a, "td_conv"):
            ka, sa = K[self.size][i + 1], S[i + 1]
            pad = (ka - 1) // 2
            target = OUT[self.size][i]  # = spatial size of B
            op = target - ((td.shape[-1] - 1) * sa - 2 * pad + ka)
            w, b = self.sd[f"connections.{a}.td_conv.weight"], self.sd[f"connections.{a}.td_conv.bias"]
            D = F.conv_transpose2d(td, w, b, sa, pad, op)

        def add(*xs):
            out = 0
            for x in xs:
                if x is not None:
                    out = out + x
            return out

        bu_drive, bu_mod = add(B, Lb, Sb), add(B, Sb)
        td_drive, td_mod = add(D, Ld, Sd), add(D, Sd)
        if isinstance(td_mod, torch.Tensor):
            bu_out = (F.relu(bu_drive) * 2 * torch.sigmoid(td_mod)
                      if isinstance(bu_drive, torch.Tensor) else torch.zeros_like(td_mod))  # fmt: skip
        else:
            bu_out = F.relu(bu_drive)  # TypeError for an int, as in the reference
        if isinstance(bu_mod, torch.Tensor):
            td_out = (F.relu(td_drive) * 2 * torch.sigmoid(bu_mod)
                      if isinstance(td_drive, torch.Tensor) else torch.zeros_like(bu_mod))  # fmt: skip
        else:
            td_out = F.relu(td_drive)
        return self.gn(a, "bu", bu_out), self.gn(a, "td", td_out)

    def readout(self, x):
        k = K[self.size][7]
        z = self.conv("Readout", "readout_conv", x, 2, (k - 1) // 2)
        logits = F.adaptive_avg_pool2d(z, 1).flatten(1)[:, : self.nc]
        return logits, self.gn("Readout", "td", F.relu(z))

    def run(self, img, T):
        """(list of logits, [{area: {'bu': ..., 'td': ...}} per step]) with section 4.7 zero-fill."""
        bu, td = [None] * 8, [None] * 8
        logits, record = [], []
        bu[0] = self.layer(0, bu=img)[0]
        for t in range(T):
            if not self.bio:
                for i in range(1, 7):
                    kw = dict(bu=bu[i - 1])
                    if t > 0:
                        kw.update(bu_l=bu[i], td=td[i + 1])
                    if i == 5:
                        kw["bu_skip"] = bu[2]
                    bu[i] = self.layer(i, **kw)[0]
                out, td[7] = self.readout(bu[6])
                logits.append(out)
                for i in range(6, 0, -1):
                    kw = dict(bu=bu[i - 1], td=td[i + 1])
                    if t > 0:
                        kw["td_l"] = td[i]
                    if i == 5:  # the reference's off-by-position: V4's TD offered to V4
                        kw["td_skip"] = td[5]
                    td[i] = self.layer(i, **kw)[1]
                td[0] = self.layer(0, bu=img, td=td[1])[1]  # Retina: beta
                bu[7] = out
            elif t > 0:
                new_bu, new_td = list(bu), list(td)
                for i in range(1, 7):
                    wake = bu[i - 1] is not None or td[i + 1] is not None
                    wake |= (i == 5 and bu[2] is not None) or (i == 2 and td[5] is not None)
                    if not wake:
                        continue
                    kw = dict(bu=bu[i - 1], bu_l=bu[i], td=td[i + 1], td_l=td[i])
                    if i == 5:
                        kw["bu_skip"] = bu[2]
                    if i == 2:
                        kw["td_skip"] = td[5]
                    new_bu[i], new_td[i] = self.layer(i, **kw)
                bu, td = new_bu, new_td
                if bu[6] is not None:
                    out, td[7] = self.readout(bu[6])
                    logits.append(out)
                    bu[7] = out
            step = {}
            for i, a in enumerate(NAMES):
                c = self.sd["connections.Readout.readout_conv.weight"].shape[0] if i == 7 else CH[i]
                zero = torch.zeros(img.shape[0], c, OUT[self.size][i], OUT[self.size][i])
                b_, d_ = bu[i], td[i]
                step[a] = {"bu": b_ if b_ is not None else (torch.zeros_like(d_) if d_ is not None else zero),
                           "td": d_ if d_ is not None else (torch.zeros_like(b_) if b_ is not None and i < 7 else zero)}  # fmt: skip
            record.append(step)
        if self.readout_type == "single":
            w = torch.softmax(self.sd["readout_weights"], 0)
            logits = [(torch.stack(logits).permute(1, 0, 2) * w.view(1, -1, 1)).sum(1)]
        return logits, record


# ------------------------------------------------------------------ helpers
def randomise(model, seed=0):
    """Random weights everywhere, GroupNorm weights U(0.5, 1.5) and biases N(0, 0.3) (section 7)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm_" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name.endswith("weight")
                        else torch.randn(p.shape, generator=g) * 0.3)  # fmt: skip
            elif name == "readout_weights":
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else 1
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * (3 / fan_in) ** 0.5)
    return model


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def small(**kw):
    kw = dict(image_size=128, num_classes=10, add_feats=6, **kw)
    return randomise(bm.create_model("blt_vs", **kw))


def images(n=2, size=128, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def check_parity(model, T, bio, x, report, layers="all"):
    ref = RefBLTVS(blt_vs_state_dict_to_reference(model.state_dict()), model.num_classes,
                   model.image_size, bio, model.readout_type)  # fmt: skip
    with torch.no_grad():
        ref_logits, record = ref.run(x, T)
        out = model.forward_timesteps(x, layers=layers)
    assert out.logits.shape[0] == len(ref_logits)
    for r, (ours, theirs) in enumerate(zip(out.logits, ref_logits, strict=True)):
        err = rel_err(ours, theirs)
        report.append(err)
        assert err < 1e-4, f"readout {r}: relative error {err}"
    for name, feats in out.features.items():
        area, stream = name.rsplit("_", 1)
        ref_area = dict(zip(ZOO_AREAS, NAMES, strict=True))[area]
        for t in range(T):
            theirs = record[t][ref_area][stream]
            assert feats[t].shape == theirs.shape, (name, t)
            if theirs.abs().max() == 0:
                assert torch.equal(feats[t], theirs), (name, t)
            else:
                assert rel_err(feats[t], theirs) < 1e-4, (name, t)
    return out, record


# ------------------------------------------------------------------ parity
def test_parity_standard_unrolling_per_step_and_per_area():
    model = small(timesteps=2, unroll="standard")
    x = images()
    errs: list[float] = []
    out, record = check_parity(model, 2, False, x, errs)
    assert out.steps.tolist() == [0, 1] and max(errs) < 1e-5
    # Standard mode: the Retina's TD is the constant beta of its GroupNorm (not a zoo layer).
    beta = model.retina.norm_td.bias.view(1, -1, 1, 1).expand(2, -1, 64, 64)
    assert torch.allclose(record[1]["Retina"]["td"], beta)
    # Reference quirk (section 6.2): the V4 -> V1 TD skip is dead in standard mode.
    with torch.no_grad():
        model.v1.td_skip.spatial.weight.add_(1.0)
        model.v1.td_skip.pointwise.bias.add_(1.0)
        assert torch.equal(model.forward_timesteps(x).logits, out.logits)


def test_parity_biological_unrolling_per_step_and_per_area():
    model = small(timesteps=6, unroll="biological")
    x = images()
    errs: list[float] = []
    out, record = check_parity(model, 6, True, x, errs)
    assert out.steps.tolist() == [4, 5] and max(errs) < 1e-5
    # First-activation TD outputs are the GroupNorm's beta (section 4.4), and are reported.
    beta = model.v1.norm_td.bias.view(1, -1, 1, 1).expand(2, -1, 16, 16)
    assert torch.allclose(out.features["v1_td"][2], beta)
    assert out.features["v1_td"][:2].abs().max() == 0  # absent before step 2
    assert out.features["loc_bu"][:4].abs().max() == 0 and out.features["loc_bu"][4].abs().max() > 0
    # model(x) is the last readout.
    with torch.no_grad():
        assert torch.equal(model(x), out.logits[-1])


def test_parity_single_readout():
    x = images(1)
    for unroll, T, n in (("standard", 2, 2), ("biological", 6, 2)):
        model = small(timesteps=T, unroll=unroll, readout_type="single")
        assert model.readout_weights.shape == (n,)
        assert next(iter(model.state_dict())) == "readout_weights"
        errs: list[float] = []
        out, _ = check_parity(model, T, unroll == "biological", x, errs, layers=None)
        assert out.steps.tolist() == [T - 1] and errs[0] < 1e-5
        with pytest.raises(bm.TimestepsError, match="exactly"):
            model.forward_timesteps(x, timesteps=T + 1)


# ------------------------------------------------------------------ clock tables
def test_readout_counts_both_unrolling_modes():
    std = bm.create_model("blt_vs", image_size=128, num_classes=10)
    bio = bm.create_model("blt_vs", image_size=128, num_classes=10, unroll="biological")
    for T in (1, 6, 8):
        assert std.readout_steps(T) == list(range(T))
    for T, n in ((4, 0), (5, 1), (12, 8), (13, 9)):
        assert len(bio.readout_steps(T)) == n
        assert bio.readout_steps(T) == list(range(4, T))
    with pytest.raises(bm.TimestepsError, match="timesteps >= 5"):
        bio.forward_timesteps(images(1), timesteps=4)


def test_first_steps_tables():
    std = bm.create_model("blt_vs", image_size=128, num_classes=10)
    bio = bm.create_model("blt_vs", image_size=128, num_classes=10, unroll="biological")
    assert std.layer_names == (
        "retina_bu", "lgn_bu", "lgn_td", "v1_bu", "v1_td", "v2_bu", "v2_td", "v3_bu", "v3_td",
        "v4_bu", "v4_td", "loc_bu", "loc_td", "readout_td",
    )  # fmt: skip
    assert set(std.first_steps().values()) == {0}
    # Biological: image information per stream (section 4.2's schedule); TD streams first hold beta.
    assert bio.first_steps() == {
        "retina_bu": 0, "lgn_bu": 1, "lgn_td": 3, "v1_bu": 2, "v1_td": 3, "v2_bu": 3, "v2_td": 4,
        "v3_bu": 4, "v3_td": 4, "v4_bu": 3, "v4_td": 4, "loc_bu": 4, "loc_td": 5, "readout_td": 4,
    }  # fmt: skip
    assert bio.present_steps() == {
        "retina_bu": 0, "lgn_bu": 1, "lgn_td": 1, "v1_bu": 2, "v1_td": 2, "v2_bu": 3, "v2_td": 3,
        "v3_bu": 4, "v3_td": 4, "v4_bu": 3, "v4_td": 3, "loc_bu": 4, "loc_td": 4, "readout_td": 4,
    }  # fmt: skip
    assert bio.resolve_layer("V4_TD") == "v4_td" and bio.resolve_layer("Readout_TD") == "readout_td"
    # Reference crash fixed: no skip -> V4 wakes from V3 at step 5, first readout at step 6.
    noskip = bm.create_model("blt_vs", image_size=128, num_classes=10, unroll="biological",
                             skip_connections=False)  # fmt: skip
    assert noskip.readout_steps(8) == [6, 7] and noskip.first_steps()["v4_bu"] == 5
    # Without top-down connections the TD streams are GroupNorm constants, except V1's (skip).
    notd = bm.create_model("blt_vs", image_size=128, num_classes=10, topdown_connections=False)
    assert [n for n in notd.layer_names if n.endswith("_td")] == ["readout_td"]


def test_input_size_is_enforced():
    model = bm.create_model("blt_vs", image_size=128, num_classes=10, timesteps=1)
    with pytest.raises(bm.InputError, match="128x128"):
        model(torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="224 or 128"):
        bm.create_model("blt_vs", image_size=160)


# ------------------------------------------------------------------ keys, counts, configs
@pytest.mark.parametrize("tag,total", [("imagenet", 34_989_732), ("ecoset", 27_332_427)])
def test_published_configurations_keys_and_counts(tag, total):
    model = bm.create_model(f"blt_vs.{tag}")
    assert sum(p.numel() for p in model.parameters()) == total
    ref = blt_vs_state_dict_to_reference(model.state_dict())
    expected = []
    for module, shape in IMAGENET_TABLE:
        shape = ECOSET_CHANGES.get(module, shape) if tag == "ecoset" else shape
        out_channels = shape[1] if module.endswith("td_conv") else shape[0]  # ConvT: in x out x k x k
        expected += [(f"connections.{module}.weight", shape), (f"connections.{module}.bias", (out_channels,))]
    assert [(k, tuple(v.shape)) for k, v in ref.items()] == expected  # 106 keys, reference order
    assert len(ref) == 106
    assert convert_blt_vs_state_dict(ref).keys() == model.state_dict().keys()
    assert model.timesteps == {"imagenet": 6, "ecoset": 12}[tag]
    assert model.unroll == {"imagenet": "standard", "ecoset": "biological"}[tag]
    assert blt_vs_kwargs_from_filename(FILES[tag]) == {
        "skip_connections": True, "lateral_connections": True, "topdown_connections": True,
        "unroll": model.unroll, "timesteps": model.timesteps, "readout_type": "multi",
        "num_classes": model.num_classes,
    }  # fmt: skip
    assert blt_vs_kwargs_from_state_dict(ref)["num_classes"] == model.num_classes


def test_128px_counts_and_key_mapping_examples():
    assert sum(p.numel() for p in bm.create_model("blt_vs", image_size=128).parameters()) == 16_439_716
    assert sum(p.numel() for p in bm.create_model("blt_vs", image_size=128, num_classes=565).parameters()) == 13_682_251
    sd = convert_blt_vs_state_dict({
        "connections.V1.bu_l_conv_depthwise.weight": 0, "connections.V4.skip_bu_pointwise.bias": 1,
        "connections.Readout.readout_conv.weight": 2, "connections.LOC.layer_norm_td.bias": 3,
    })  # fmt: skip
    assert list(sd) == ["v1.bu_lateral.spatial.weight", "v4.bu_skip.pointwise.bias",
                        "readout.conv.weight", "loc.norm_td.bias"]  # fmt: skip
    with pytest.raises(KeyError):
        convert_blt_vs_state_dict({"connections.V9.bu_conv.weight": 0})


def test_tag_defaults_and_overrides():
    m = bm.create_model("blt_vs.ecoset", image_size=128, timesteps=13)
    assert (m.timesteps, m.unroll, m.num_classes, m.add_feats) == (13, "biological", 565, 100)
    m = bm.create_model("blt_vs.imagenet", image_size=128, unroll="biological", num_classes=7)
    assert (m.timesteps, m.unroll, m.num_classes) == (6, "biological", 7)
    assert m.pretrained_cfg.class_names is None


def test_pretrained_cfgs():
    from torchvision.models import ResNet50_Weights

    assert bm.list_pretrained("blt_vs*") == ["blt_vs.ecoset", "blt_vs.imagenet"]
    for tag in ("imagenet", "ecoset"):
        cfg = bm.get_pretrained_cfg("blt_vs", tag)
        assert (cfg.hf_hub_id, cfg.hf_hub_filename) == (HUB_ID, FILES[tag])
        assert cfg.mean == cfg.std == (0.5, 0.5, 0.5) and cfg.crop_pct == 1.0
        assert cfg.input_size == (3, 224, 224) and cfg.interpolation == "bilinear"
        assert cfg.license.startswith("MIT") and "Thorat" in cfg.citation and "KietzmannLab" in cfg.source
    imagenet = bm.get_pretrained_cfg("blt_vs", "imagenet")
    assert list(imagenet.class_names) == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert imagenet.class_names[36] == "terrapin"
    assert bm.get_pretrained_cfg("blt_vs", "ecoset").class_names is None
    assert bm.get_pretrained_cfg("blt_vs").tag == "imagenet"  # default tag


def test_reset_classifier_keeps_add_feats():
    model = small(timesteps=1)
    old = model.readout.conv.weight[10:].clone()
    model.reset_classifier(4)
    assert model.readout.conv.weight.shape[0] == 10 and torch.equal(model.readout.conv.weight[4:], old)
    assert model.loc.td_conv.in_channels == 10
    with torch.no_grad():
        assert model(images(1)).shape == (1, 4)


# ------------------------------------------------------------------ published files
def test_published_layout_file_round_trip(tmp_path):
    model = small(timesteps=1)
    path = tmp_path / "blt_vs_slt_111_biounroll_0_t_1_readout_multi_dataset_x_num_1.pth"
    torch.save(blt_vs_state_dict_to_reference(model.state_dict()), path)
    loaded = bm.create_model("blt_vs", image_size=128, num_classes=10, add_feats=6, timesteps=1,
                             checkpoint_path=path)  # fmt: skip
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = images(1)
    with torch.no_grad():
        assert torch.equal(loaded.forward_timesteps(x).logits, model.forward_timesteps(x).logits)
    # A DataParallel prefix is accepted; a wrong configuration is refused with a key report.
    torch.save({"module." + k: v for k, v in torch.load(path).items()}, path)
    bm.create_model("blt_vs", image_size=128, num_classes=10, add_feats=6, checkpoint_path=path)
    with pytest.raises(bm.CheckpointMismatchError, match="readout.conv.weight"):
        bm.create_model("blt_vs", image_size=128, num_classes=11, add_feats=6, checkpoint_path=path)
    # Plain load_state_dict takes the published layout too (the key mapping runs as a load hook).
    plain = bm.create_model("blt_vs", image_size=128, num_classes=10, add_feats=6, timesteps=1)
    plain.load_state_dict(torch.load(path))
    with torch.no_grad():
        assert torch.equal(plain.eval().forward_timesteps(x).logits, model.forward_timesteps(x).logits)


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A file in the published ImageNet layout (random weights), as torch.save writes it."""
    model = bm.create_model("blt_vs.imagenet")
    randomise(model, seed=3)
    path = tmp_path_factory.mktemp("pub") / FILES["imagenet"]
    torch.save(blt_vs_state_dict_to_reference(model.state_dict()), path)
    return path, model.state_dict()


def _fake_hub_cache(root, filename, source):
    repo = root / ("models--" + HUB_ID.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
    blob.parent.mkdir(parents=True)
    shutil.copyfile(source, blob)
    snap = repo / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snap.parent), snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_checkpoint_path_and_offline_hub_cache(imagenet_file, offline_hub):
    path, state = imagenet_file
    by_path = bm.create_model("blt_vs.imagenet", checkpoint_path=path)
    _fake_hub_cache(offline_hub, FILES["imagenet"], path)
    by_hub = bm.create_model("blt_vs.imagenet", pretrained=True)
    assert (by_hub.timesteps, by_hub.unroll, by_hub.num_classes) == (6, "standard", 1000)
    assert by_hub.pretrained_cfg.class_names[36] == "terrapin"
    for k, v in state.items():
        assert torch.equal(by_path.state_dict()[k], v) and torch.equal(by_hub.state_dict()[k], v), k


def test_offline_error_names_repo_and_file(offline_hub):
    with pytest.raises(bm.WeightsUnavailableError) as err:
        bm.create_model("blt_vs.ecoset", pretrained=True, image_size=128)
    assert HUB_ID in str(err.value) and FILES["ecoset"] in str(err.value)


# ------------------------------------------------------------------ 224 px published configurations
@pytest.mark.slow
@pytest.mark.parametrize("tag,T", [("imagenet", 3), ("ecoset", 7)])
def test_parity_published_configurations_224(tag, T):
    model = randomise(bm.create_model(f"blt_vs.{tag}", timesteps=T), seed=5)
    errs: list[float] = []
    check_parity(model, T, tag == "ecoset", images(2, 224), errs)
    print(tag, "max relative error per readout:", errs)
