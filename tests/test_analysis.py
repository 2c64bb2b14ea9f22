"""Tests of blt_models.analysis (needs the [analysis] extra; skipped without it)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

pytest.importorskip("rsatoolbox")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import torch  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402

import blt_models as bm  # noqa: E402
from blt_models import analysis as ba  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_blt(connectivity: str = "blt", timesteps: int = 5):
    torch.manual_seed(0)
    return bm.create_model(
        f"blt_{connectivity}",
        channels=(32, 32, 32),
        sizes=(14, 7, 7),
        nominal_size=28,
        in_chans=1,
        num_classes=4,
        timesteps=timesteps,
    ).eval()


@pytest.fixture(scope="module")
def model_run():
    model = tiny_blt()
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.forward_timesteps(x, layers="all")
    feats = {k: v.permute(1, 0, 2, 3, 4) for k, v in out.features.items()}  # [N, T, C, H, W]
    labels = np.arange(16) % 4
    return model, out, feats, labels


@pytest.fixture(scope="module")
def rdms(model_run):
    return ba.compute_rdms(model_run[2], method="correlation")


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------------- inputs
def test_feature_inputs_agree_and_use_model_time(model_run):
    model, out, feats, _ = model_run
    a = ba.as_feature_set(out)
    b = ba.as_feature_set(feats)
    for layer in feats:
        np.testing.assert_array_equal(a.features[layer], b.features[layer])
    # biological unrolling: layer k first active at step k; inferred from zeros == declared
    assert a.first_step == b.first_step == {"layer0": 0, "layer1": 1, "layer2": 2}
    assert b.states()[:3] == [("layer0", 0), ("layer0", 1), ("layer0", 2)]
    assert ("layer2", 1) not in b.states() and ("layer2", 1) in b.states(include_inactive=True)

    class Extracted:  # duck-typed extraction result: .features [N, T, ...], .steps, .first_step
        def __init__(self):
            self.features = {"layer2": feats["layer2"][:, 2:]}
            self.steps = np.arange(2, 5)
            self.first_step = {"layer2": 2}
            self.image_ids = [f"img{i}" for i in range(16)]

    r = ba.compute_rdms(Extracted())
    assert list(r.rdm_descriptors["step"]) == [2, 3, 4]
    assert list(r.pattern_descriptors["image_id"][:2]) == ["img0", "img1"]
    ref = ba.compute_rdms(feats, layers="layer2")
    np.testing.assert_allclose(r.dissimilarities, ref.dissimilarities)


# ----------------------------------------------------------------------------------- RDMs
@pytest.mark.parametrize("method", ["correlation", "euclidean", "cosine"])
def test_rdms_equal_direct_numpy(method):
    x = _rand(12, 3, 4, 5, seed=2)  # N=12 images, T=3 steps, 20 features
    rdms = ba.compute_rdms({"a": x}, method=method)
    mats = rdms.get_matrices()
    assert mats.shape == (3, 12, 12)
    for t in range(3):
        flat = x[:, t].reshape(12, -1)
        if method == "correlation":
            expected = 1 - np.corrcoef(flat)
        elif method == "cosine":
            expected = cdist(flat, flat, "cosine")
        else:  # rsatoolbox convention: squared Euclidean / number of features
            expected = cdist(flat, flat, "sqeuclidean") / flat.shape[1]
        np.fill_diagonal(expected, 0)
        np.testing.assert_allclose(mats[t], expected, atol=1e-10)
        np.testing.assert_allclose(ba.rdm_matrix(flat, method), expected, atol=1e-10)
    assert list(rdms.rdm_descriptors["state"]) == ["a@t0", "a@t1", "a@t2"]


def test_rdm_of_rdms_and_mds(rdms):
    for method in ("cosine", "spearman", "angular"):
        m = ba.rdm_of_rdms(rdms, method=method)
        assert m.values.shape == (rdms.n_rdm, rdms.n_rdm)
        np.testing.assert_allclose(m.values, m.values.T)
        np.testing.assert_allclose(np.diag(m.values), 0)
        assert m.labels[0] == ("layer0", 0) and m.labels[-1] == ("layer2", 4)
    m = ba.rdm_of_rdms(rdms, method="angular")
    t2 = ba.mds_trajectories(m, n_components=2, seed=3)
    assert {k: v.shape for k, v in t2.coords.items()} == {
        "layer0": (5, 2),
        "layer1": (4, 2),
        "layer2": (3, 2),
    }
    np.testing.assert_array_equal(t2.steps["layer2"], [2, 3, 4])
    again = ba.mds_trajectories(m, n_components=2, seed=3)
    np.testing.assert_allclose(again.coords["layer1"], t2.coords["layer1"])  # seeded
    t3 = ba.mds_trajectories(m, n_components=3, per_layer=True)
    assert t3.coords["layer0"].shape == (5, 3) and not t3.joint
    assert all(v >= 0 for v in t3.path_lengths().values())


# ------------------------------------------------------------------------------------ RSA
def test_rsa_of_rdm_with_itself_is_one(rdms):
    i = 6
    neural = rdms.get_matrices()[i]
    res = ba.rsa(rdms, neural, method="corr")
    assert res.scores.shape == (rdms.n_rdm, 1)
    assert res.scores[i, 0] == pytest.approx(1.0)
    assert res.best() == (res.labels[i], pytest.approx(1.0))
    for method in ("spearman", "cosine", "tau-a"):
        assert ba.rsa(rdms, neural, method=method).scores[i, 0] == pytest.approx(1.0)


def test_rsa_time_bins_noise_ceiling_and_bootstrap(rdms):
    from rsatoolbox.rdm import RDMs

    mats = rdms.get_matrices()
    per_bin = ba.rsa(rdms, mats[[0, 5, 9]])  # [bins, N, N]
    assert per_bin.scores.shape == (rdms.n_rdm, 3)
    np.testing.assert_allclose(per_bin.scores[[0, 5, 9], [0, 1, 2]], 1.0)
    steps, grid = per_bin.layer("layer1")
    np.testing.assert_array_equal(steps, [1, 2, 3, 4])
    assert grid.shape == (4, 3)
    # two "subjects" per bin -> noise ceiling from rsatoolbox
    rng = np.random.default_rng(0)
    vec = rdms.dissimilarities[[3, 3, 8, 8]] + 0.01 * rng.random((4, rdms.dissimilarities.shape[1]))
    neural = RDMs(
        vec, rdm_descriptors={"time": np.array([0, 0, 1, 1]), "subject": np.array([0, 1, 0, 1])}
    )
    res = ba.rsa(rdms, neural, n_bootstrap=5)
    assert res.bins == [0, 1]
    assert np.all(np.isfinite(res.noise_ceiling)) and np.all(res.noise_ceiling > 0.9)
    assert res.sem is not None and np.all(np.isfinite(res.sem))
    with pytest.raises(ValueError, match="conditions"):
        ba.rsa(rdms, np.zeros((5, 5)))


# ------------------------------------------------------------------------------------ CKA
def test_linear_cka_properties():
    x = _rand(30, 20, seed=4)
    y = _rand(30, 15, seed=5)
    assert ba.linear_cka(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(_rand(20, 20, seed=6))
    assert ba.linear_cka(x @ q, y) == pytest.approx(ba.linear_cka(x, y))  # orthogonal transform
    assert ba.linear_cka(3.7 * x, y) == pytest.approx(ba.linear_cka(x, y))  # isotropic scaling
    assert ba.linear_cka(x + 5.0, y) == pytest.approx(ba.linear_cka(x, y))  # centred
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert ba.linear_cka(x, y) == pytest.approx(direct)
    # HSIC form with the centring matrix
    n = 30
    h = np.eye(n) - 1 / n
    k, l = x @ x.T, y @ y.T  # noqa: E741
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    assert ba.hsic(k, l) == pytest.approx(hsic(k, l))
    assert ba.linear_cka(x, y) == pytest.approx(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)))


def test_unbiased_hsic_matches_song_formula():
    x, y = _rand(15, 6, seed=7), _rand(15, 4, seed=8)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    n = 15
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    song = (
        np.trace(kt @ lt)
        + one @ kt @ one * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ kt @ lt @ one
    ) / (n * (n - 3))
    assert ba.hsic(k, l, unbiased=True) == pytest.approx(song)


def test_angular_cka_range_and_matrix(model_run):
    for seed in range(5):
        a = ba.angular_cka(_rand(20, 8, seed=seed), _rand(20, 9, seed=seed + 10))
        assert 0.0 <= a <= np.pi / 2
    assert ba.angular_cka(_rand(20, 8), _rand(20, 8)) == pytest.approx(0.0, abs=1e-6)
    feats = model_run[2]
    lin = ba.cka_matrix(feats, kind="linear")
    ang = ba.cka_matrix(feats, kind="angular")
    assert lin.values.shape == (12, 12)
    np.testing.assert_allclose(np.diag(lin.values), 1.0)
    np.testing.assert_allclose(lin.values, lin.values.T)
    assert np.all((ang.values >= 0) & (ang.values <= np.pi / 2 + 1e-12))
    np.testing.assert_allclose(ang.values, np.arccos(np.clip(lin.values, -1, 1)))
    i, j = lin.index("layer0", 3), lin.index("layer2", 4)
    direct = ba.linear_cka(feats["layer0"][:, 3], feats["layer2"][:, 4])
    assert lin.values[i, j] == pytest.approx(direct)
    assert lin.block("layer1", "layer2").shape == (4, 3)


# --------------------------------------------------------------------------------- tuning
def test_dprime_finds_planted_face_units():
    rng = np.random.default_rng(0)
    n, t, u = 80, 4, 50
    is_face = np.arange(n) < 30
    x = rng.standard_normal((n, t, u))
    planted = np.array([3, 17, 41])
    x[np.ix_(is_face, np.arange(2, 4), planted)] += 2.0  # face preference from step 2 on
    sel = ba.face_selectivity({"IT": x}, is_face, threshold=1.0, units="flatten")
    assert sel.dprime["IT"].shape == (t, u)
    for step in (2, 3):
        np.testing.assert_array_equal(sel.selective_units("IT", step), planted)
    assert sel.fraction["IT"][0] == 0.0 and sel.fraction["IT"][3] == pytest.approx(3 / u)
    # the formula
    a, b = x[is_face, 2, 3], x[~is_face, 2, 3]
    expected = (a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2)
    assert sel.dprime["IT"][2, 3] == pytest.approx(expected)
    # channels: spatial mean per channel of [N, T, C, H, W]
    maps = np.repeat(x[..., None, None], 2, axis=-1).repeat(2, axis=-2)
    ch = ba.face_selectivity({"IT": maps}, is_face, threshold=1.0)
    np.testing.assert_allclose(ch.dprime["IT"], sel.dprime["IT"])


def test_decoding_above_chance_on_separable_data():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    x = rng.standard_normal((60, 3, 40))
    x[:, 1:, :3] += 6.0 * np.eye(3)[y][:, None, :]  # separable from step 1 on
    dec = ba.decode_over_time({"a": x}, y, cv=5)
    assert dec.chance == pytest.approx(1 / 3)
    assert dec.accuracy["a"][1] > 0.9 and dec.accuracy["a"][2] > 0.9
    assert dec.accuracy["a"][0] < 0.7


def test_readout_curves(model_run):
    _, out, _, labels = model_run
    cur = ba.readout_curves(out, labels)
    np.testing.assert_array_equal(cur.steps, out.steps.numpy())
    p = torch.softmax(out.logits.double(), dim=-1).numpy()
    np.testing.assert_allclose(cur.entropy, -(p * np.log(p)).sum(-1).mean(-1))
    expected = (out.logits.argmax(-1).numpy() == labels).mean(-1)
    np.testing.assert_allclose(cur.accuracy, expected)
    assert cur.topk_accuracy is None  # few classes: no top-5 by default
    top2 = ba.readout_curves(out, labels, k=2)
    assert top2.k == 2 and np.all(top2.topk_accuracy >= top2.accuracy)
    logits = np.zeros((2, 3, 4))
    logits[1, np.arange(3), [0, 1, 2]] = 50.0
    c = ba.readout_curves(logits, [0, 1, 3], steps=[5, 6])
    np.testing.assert_allclose(c.accuracy, [1 / 3, 2 / 3])  # ties at step 0 -> argmax class 0
    np.testing.assert_allclose(c.entropy[0], np.log(4))
    assert c.steps.tolist() == [5, 6]
    assert repr(c).startswith("ReadoutCurves(steps=[5, 6], images=3, num_classes=4")
    # Raw logits do not say at which clock steps they were read out: no silent 0..R-1.
    with pytest.raises(bm.InputError, match="pass steps="):
        ba.readout_curves(out.logits, labels)
    many = ba.readout_curves(np.random.default_rng(0).standard_normal((2, 8, 20)),
                             np.arange(8), steps=[0, 1])  # fmt: skip
    assert many.k == 5 and many.topk_accuracy is not None


def test_readout_curves_refuse_the_pooled_features_of_a_model_without_classifier():
    """A pruned model (or num_classes=0) gives pooled features as logits: readout_curves
    scored argmax over channels against the labels as an accuracy, without an error."""
    model = tiny_blt("bl", timesteps=5).eval()
    x, labels = torch.randn(4, 1, 28, 28), np.array([0, 1, 2, 3])
    with torch.no_grad():
        full = model.forward_timesteps(x)
        model.prune_intermediate_layers([1])
        out = model.forward_timesteps(x)
    with pytest.raises(bm.InputError, match="no classifier"):
        ba.readout_curves(out, labels)
    assert out.logits_are_features and out.logits.shape[-1] == model.num_features
    assert not full.logits_are_features and ba.readout_curves(full, labels).accuracy is not None


def test_rdm_frames_class_blocks_and_colour_scales(tmp_path, rdms, model_run, monkeypatch):
    from blt_models.analysis import plots

    labels = model_run[3]
    seen = []
    original = plots._figure

    def spy(*args, **kwargs):
        fig = original(*args, **kwargs)
        seen.append(fig)
        return fig

    monkeypatch.setattr(plots, "_figure", spy)
    names = ["shirt", "bag", "boot", "coat"]
    for scale in ("shared", "layer", "frame"):
        _png(ba.plot_rdm_frames(rdms, tmp_path / f"{scale}.png", labels=labels,
                                class_names=names, scale=scale))  # fmt: skip
    shared, per_layer, per_frame = seen
    limits = {a.images[0].get_clim() for a in shared.axes if a.images}
    assert len(limits) == 1  # one colour scale across steps and layers
    top = max(float(np.nanmax(m)) for m in rdms.get_matrices())
    assert limits.pop() == pytest.approx((0.0, top))
    assert len({a.images[0].get_clim() for a in per_layer.axes if a.images}) > 1
    assert {a.images[0].get_clim() for a in per_frame.axes if a.images} == {(0.0, 1.0)}
    first = next(a for a in shared.axes if a.images)
    assert [t.get_text() for t in first.get_yticklabels()] == names  # classes in label order
    for ax in [a for a in shared.axes if a.get_label() != "<colorbar>"]:  # inactive frames too
        if ax.get_ylabel() and ax.get_yticks().size:
            assert ax.get_ylim()[0] > ax.get_ylim()[1]
    assert len(first.lines) == 2 * 3  # 3 boundaries between 4 classes, both axes
    with pytest.raises(ValueError, match="scale must be"):
        ba.plot_rdm_frames(rdms, tmp_path / "x.png", scale="max")
    with pytest.raises(ValueError, match="labels for RDMs of 16 images"):
        ba.plot_rdm_frames(rdms, tmp_path / "x.png", labels=labels[:3])


# ---------------------------------------------------------------------------------- plots
def _png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plots_are_written(tmp_path, model_run, rdms):
    _, out, feats, labels = model_run
    rr = ba.rdm_of_rdms(rdms, method="angular")
    sel = ba.face_selectivity(feats, labels == 0)
    dec = ba.decode_over_time(feats, labels, cv=2, layers=["layer2"], max_features=64)
    paths = [
        ba.plot_rdm_frames(rdms, tmp_path / "frames.png", labels=labels),
        ba.plot_state_matrix(rr, tmp_path / "rdm_of_rdms.png"),
        ba.plot_state_matrix(ba.cka_matrix(feats, kind="angular"), tmp_path / "cka.png"),
        ba.plot_trajectories(ba.mds_trajectories(rr, 2), tmp_path / "traj2.png"),
        ba.plot_trajectories(ba.mds_trajectories(rr, 3), tmp_path / "traj3.png"),
        ba.plot_trajectories(ba.mds_trajectories(rr, 2, per_layer=True), tmp_path / "traj_sep.png"),
        ba.plot_rsa(ba.rsa(rdms, rdms.get_matrices()[4]), tmp_path / "rsa.png"),
        ba.plot_rsa(ba.rsa(rdms, rdms.get_matrices()[:3]), tmp_path / "rsa_bins.png"),
        ba.plot_selectivity(sel, tmp_path / "sel.png", decoding=dec),
        ba.plot_decoding(dec, tmp_path / "dec.png"),
        ba.plot_readout(ba.readout_curves(out, labels), tmp_path / "readout.png"),
        ba.plot_readout(ba.readout_curves(out), tmp_path / "readout_nolabels.png"),
    ]
    for path in paths:
        _png(path)


# -------------------------------------------------------------------------------- diagram
def test_diagram_png_and_tikz_for_blt(tmp_path):
    model = tiny_blt("b2lt")
    graph = ba.model_graph(model)
    kinds = {e.kind for e in graph.edges}
    assert {"bottom_up", "lateral", "top_down", "input", "readout"} <= kinds
    assert [n.name for n in graph.nodes] == ["input", "layer0", "layer1", "layer2", "readout"]
    skip = [e for e in graph.edges if (e.src, e.dst) == ("layer0", "layer2")]
    assert skip and skip[0].kind == "skip" and "conv" in skip[0].label and skip[0].delay == 1
    td = [e for e in graph.edges if (e.src, e.dst) == ("layer1", "layer0")][0]
    assert td.label == "convT 3x3/s2"
    png, tex = ba.save_diagram(model, tmp_path / "blt_b2lt")
    _png(png)
    src = tex.read_text()
    assert src.count(r"\begin{tikzpicture}") == 1 and src.count(r"\end{tikzpicture}") == 1
    assert src.count(r"\node[layer]") == 3 and r"\draw[td]" in src and r"\draw[lat]" in src
    assert "3$\\times$3" in src and src.count("{") == src.count("}")


def test_diagram_of_other_model_kinds(tmp_path):
    class Chain(torch.nn.Module):  # declares nothing: no diagram, rather than a guessed one
        layer_names = ("V1", "V2", "V4", "IT")
        num_classes = 10

        def __init__(self):
            super().__init__()
            for name in self.layer_names:
                self.add_module(name, torch.nn.Conv2d(3, 3, 3, 2 if name == "V1" else 1))

    with pytest.raises(TypeError, match="declares no connections"):
        ba.model_graph(Chain())
    g = ba.model_graph(bm.create_model("cornet_rt", num_classes=10))
    assert {(e.src, e.dst, e.kind, e.delay) for e in g.edges if e.kind == "lateral"} == {
        (n, n, "lateral", 1) for n in ("V1", "V2", "V4", "IT")
    }
    assert [e.label for e in g.edges if e.kind == "input"] == ["conv 7x7/s4"]
    g = ba.model_graph(bm.create_model("cornet_z", num_classes=10))
    assert g.edges[0].label == "conv 7x7/s2"

    class Described(Chain):
        def connections(self):
            return [
                ("V1", "V2", "bottom_up"),
                {"src": "IT", "dst": "V4", "kind": "top_down", "label": "fb"},
                ("V2", "V2", "lateral", "conv 3x3/s1"),
                ("V2", "V4", "bottom_up"),
                ("V4", "IT", "bottom_up"),
            ]

    g2 = ba.model_graph(Described())
    assert g2.meta["source"] == "connections"
    assert ("IT", "V4", "top_down", "fb") in [(e.src, e.dst, e.kind, e.label) for e in g2.edges]
    for m, name in ((bm.create_model("blt_vs", image_size=128), "blt_vs"), (Described(), "described")):
        png, tex = ba.save_diagram(m, tmp_path / name)
        _png(png)
        assert r"\end{tikzpicture}" in tex.read_text()


def test_import_error_names_the_extra(monkeypatch):
    saved = {k: v for k, v in sys.modules.items() if k.startswith("blt_models.analysis")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setitem(sys.modules, "rsatoolbox", None)
    try:
        with pytest.raises(ImportError, match=r'pip install -e "\.\[analysis\]"'):
            importlib.import_module("blt_models.analysis")
    finally:
        for k in [k for k in sys.modules if k.startswith("blt_models.analysis")]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.mark.slow
def test_example_runs_end_to_end(tmp_path):
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "analysis" / "run_analysis.py"
    argv = sys.argv
    sys.argv = [str(script), "--out", str(tmp_path)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    for name in (
        "rdm_frames.png",
        "rdm_of_rdms.png",
        "trajectories_2d.png",
        "connectivity.tex",
        "summary.json",
    ):
        assert (tmp_path / name).stat().st_size > 0


def test_compact_reprs(model_run):
    _, out, feats, labels = model_run
    text = repr(out)
    assert text.startswith("TimestepOutput(timesteps=") and len(text) < 600
    assert f"steps={out.steps.tolist()}" in text and "layer2: [" in text
    dec = ba.decode_over_time(feats, labels, cv=2, layers=["layer2"], max_features=64)
    text = repr(dec)
    assert text.startswith("DecodingResult(2-fold CV, 4 classes (0 ") and len(text) < 300
    assert "chance 0.250; layer2: steps" in text
    assert len(repr(ba.readout_curves(out, labels))) < 400


def test_temporal_tuning_recovers_preference_onset_and_bands(tmp_path):
    rng = np.random.default_rng(0)
    n_cat, per, steps, units = 4, 12, 6, 8
    y = np.repeat(np.arange(n_cat), per)
    x = {"early": rng.standard_normal((len(y), steps, units)),
         "late": rng.standard_normal((len(y), steps, units))}  # fmt: skip
    # unit u prefers category u % 4: from step 2 in "early", from step 4 in "late".
    for layer, onset in (("early", 2), ("late", 4)):
        for u in range(units):
            x[layer][y == u % n_cat, onset:, u] += 3.0
    res = ba.temporal_tuning(x, y, threshold=1.0, n_bootstrap=100)
    assert res.onset == {"early": 2, "late": 4}
    for layer in x:
        assert res.preferred[layer].tolist() == [u % n_cat for u in range(units)]
        d, (lo, hi) = res.dprime_mean[layer], res.dprime_ci[layer].T
        assert np.all(lo <= d + 1e-12) and np.all(d <= hi + 1e-12) and np.all(hi > lo)
        assert abs(d[0]) < 0.8 and d[-1] > 2.0  # no selectivity before the onset
        pref, other = res.preferred_response[layer], res.nonpreferred_response[layer]
        assert np.all(pref[-1] - other[-1] > 1.5) and np.all(np.abs(pref[0] - other[0]) < 1.5)
    assert "early: onset 2" in repr(res)
    _png(ba.plot_temporal_tuning(res, tmp_path / "tuning.png"))
    with pytest.raises(ValueError, match=">= 4 per category"):
        ba.temporal_tuning({"a": x["early"][:9]}, np.arange(9) % 3)


def test_temporal_tuning_of_noise_has_no_onset():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 10)
    res = ba.temporal_tuning({"a": rng.standard_normal((30, 5, 16))}, y, threshold=0.5)
    # Preferences picked on one half do not carry over to the other half: no selectivity.
    assert res.onset == {"a": None} and abs(res.dprime_mean["a"]).max() < 0.5


def test_every_result_prints_as_a_short_summary(model_run, rdms):
    """No result dumps its arrays (an RSAResult printed 36 KB): each repr is one short line with
    its shape, layers, steps and headline numbers."""
    model, out, feats, labels = model_run
    matrix = ba.cka_matrix(feats)
    neural = ba.compute_rdms({"v": np.asarray(feats["layer2"])[:, -1:]})
    results = {
        "FeatureSet": (ba.as_feature_set(feats), ["16 images", "layer0: steps 0..4", "(32, 14, 14)"]),
        "StateMatrix": (matrix, ["linear CKA", f"{len(matrix.labels)} x {len(matrix.labels)} states",
                                 "layer2: steps 2..4"]),
        "RSAResult": (ba.rsa(rdms, neural), ["corr", "states x 1 bins", "best 1.000 at step 4"]),
        "Trajectories": (ba.mds_trajectories(ba.rdm_of_rdms(rdms), n_components=2),
                         ["2-D joint MDS", "stress", "layer1: steps 1..4, path"]),
        "SelectivityResult": (ba.face_selectivity(feats, labels == 0),
                              ["d' > 0.2, channels", "layer0: steps 0..4, 32 units, max fraction"]),
        "DecodingResult": (ba.decode_over_time(feats, labels, cv=2, layers=["layer2"], max_features=64),
                           ["2-fold CV", "layer2: steps 2..4"]),
        "ModelGraph": (ba.model_graph(model), ["5 layers (input, layer0", "lateral 3", "top_down 2"]),
    }  # fmt: skip
    for name, (result, expected) in results.items():
        text = repr(result)
        assert text.startswith(name + "(") and "\n" not in text and len(text) < 500, text
        assert "array(" not in text and "[[" not in text, text
        for part in expected:
            assert part in text, (part, text)


def test_reprs_name_only_the_first_layers_of_a_deep_model():
    fs = ba.as_feature_set({f"l{i}": np.ones((3, 2, 4)) for i in range(20)})
    text = repr(fs)
    assert "l5: steps" in text and "l6:" not in text and "... (14 more)" in text and len(text) < 400


# ------------------------------------------------------------------ figure labels (issue 25)
@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib Figure saved during the test, in order (the plot functions return only
    the path)."""
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig

    def record(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def _colorbar_labels(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _legend_texts(fig) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize(("method", "label"), [("correlation", "1 - Pearson r"),
                                              ("cosine", "1 - cosine similarity")])  # fmt: skip
def test_rdm_colourbar_says_what_it_shows(model_run, tmp_path, figures, method, label):
    ba.plot_rdm_frames(ba.compute_rdms(model_run[2], method=method), tmp_path / "f.png")
    assert _colorbar_labels(figures[-1]) == [label]
    assert label in figures[-1]._suptitle.get_text()


def test_rsa_title_names_what_was_compared(model_run, rdms, tmp_path, figures):
    neural = ba.compute_rdms({"v": np.asarray(model_run[2]["layer2"])[:, -1:]})
    ba.plot_rsa(ba.rsa(rdms, neural), tmp_path / "rsa.png")
    title = figures[-1]._suptitle.get_text().replace("\n", " ")
    assert "3 layers" in title and "1 neural RDM" in title and "16 images" in title
    assert "1 - Pearson r" in title or "correlation" in title


def test_decoding_legend_explains_the_bands(model_run, tmp_path, figures):
    _, _, feats, labels = model_run
    dec = ba.decode_over_time(feats, labels, cv=2, max_features=64)
    ba.plot_decoding(dec, tmp_path / "d.png")
    texts = _legend_texts(figures[-1])
    assert {"layer0", "layer1", "layer2", "chance", "± 1 SD over folds"} <= set(texts)
    assert figures[-1].axes[0].get_ylim() == (0, 1.02)


def test_state_matrix_ticks_steps_inside_layer_blocks(model_run, tmp_path, figures):
    matrix = ba.cka_matrix(model_run[2])
    ba.plot_state_matrix(matrix, tmp_path / "m.png")
    ax = figures[-1].axes[0]
    steps = [t.get_text() for t in ax.get_xticklabels()]
    assert len(steps) == len(matrix.labels)  # one tick per state
    assert steps[:5] == ["0", "", "", "", "4"] and steps[-3:] == ["2", "3", "4"]  # layer2: 2..4
    layer_names = [t.get_text() for a in ax.child_axes for t in a.get_xticklabels()]
    assert layer_names == ["layer0", "layer1", "layer2"]


def test_readouts_that_ignore_the_image_are_marked_not_plotted(tmp_path, figures):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 8, 4))
    logits[:3] = logits[:3, :1]  # steps 0-2: the same readout for every image (CORnet-RT)
    curves = ba.readout_curves(logits, np.arange(8) % 4, steps=np.arange(5))
    assert curves.image_independent.tolist() == [True, True, True, False, False]
    ba.plot_readout(curves, tmp_path / "r.png")
    fig = figures[-1]
    assert "readout independent of the image" in _legend_texts(fig)
    top1 = next(line for line in fig.axes[0].get_lines() if line.get_label() == "top-1")
    assert list(top1.get_xdata()) == [3, 4] and fig.axes[0].get_ylim() == (0, 1.02)
    assert not ba.readout_curves(logits[:, :1], [0], steps=np.arange(5)).image_independent.any()


def test_selectivity_fraction_axis_is_the_whole_range(model_run, tmp_path, figures):
    _, _, feats, labels = model_run
    ba.plot_selectivity(ba.face_selectivity(feats, labels == 0), tmp_path / "s.png")
    assert figures[-1].axes[0].get_ylim() == (0, 1.02)
