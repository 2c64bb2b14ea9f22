"""rcnn-sat B / BL networks (Spoerer et al. 2020): parity with the Keras reference, the clock,
the published HDF5 files (both layouts), the converter and its refusals.

The fixtures (tests/fixtures/rcnn/) were made with the real Keras code by
scripts/make_rcnn_fixtures.sh: seeded weights in both Keras HDF5 layouts, and every layer's
activation at every step plus the outputs of both readouts. No TensorFlow is needed here.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
import torchvision
from _rcnn_fixtures import LAYOUTS, VARIANTS, load, write_keras_file
from conftest import randomize_

import blt_models as bm
from blt_models import _convert_rcnn_sat as rcnn_convert

TOL = 1e-4


@pytest.fixture(scope="module")
def fixtures():
    return {v: load(v) for v in VARIANTS}


def keras_file(fixture, layout, tmp_path, name=None):
    return write_keras_file(
        fixture, layout, tmp_path / (name or f"{fixture['meta']['variant']}_{layout}.h5")
    )


def images_of(fixture) -> torch.Tensor:
    """The fixture's uint8 NHWC images, preprocessed as rcnn_sat.preprocess_image (x/127.5 - 1)."""
    return (
        torch.from_numpy(fixture["images"]).permute(0, 3, 1, 2).double().div(127.5).sub(1).float()
    )


def fixture_kwargs(fixture) -> dict:
    kwargs = {"channels": fixture["channels"].tolist(), "num_classes": int(fixture["classes"])}
    if fixture["meta"]["variant"] == "bl":
        kwargs["timesteps"] = int(fixture["timesteps"])
    return kwargs


def rel_err(got: torch.Tensor, want: np.ndarray) -> float:
    ref = torch.from_numpy(np.asarray(want)).to(got.dtype)
    assert got.shape == ref.shape
    return float((got - ref).abs().max() / ref.abs().max())


def check_parity(model, fixture, softmax_key="softmax") -> dict[str, float]:
    """Every layer at every step, the pre-softmax readouts and the softmax outputs vs Keras."""
    with torch.no_grad():
        out = model.eval().forward_timesteps(images_of(fixture), layers="all")
    steps = int(fixture["timesteps"])
    assert out.steps.tolist() == list(range(steps))
    errors = {}
    for n, name in enumerate(model.layer_names):
        keras = fixture[f"act_{n}"].transpose(0, 1, 4, 2, 3)  # [T, B, H, W, C] -> [T, B, C, H, W]
        assert out.features[name].shape[0] == steps
        for t in range(steps):
            errors[f"{name}@{t}"] = rel_err(out.features[name][t], keras[t])
    if softmax_key == "softmax":
        errors["presoftmax"] = rel_err(out.logits, fixture["presoftmax"])
    errors[softmax_key] = rel_err(out.logits.softmax(-1), fixture[softmax_key])
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, f"{worst}: rel err {errors[worst]:.2e}"
    return errors


# ------------------------------------------------------------------------ parity
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_layer_and_step_matches_keras(fixtures, tmp_path, variant, layout):
    fixture = fixtures[variant]
    path = keras_file(fixture, layout, tmp_path)
    model = bm.create_model(f"rcnn_{variant}", checkpoint_path=path, **fixture_kwargs(fixture))
    errors = check_parity(model, fixture)
    assert len(errors) == len(model.layer_names) * int(fixture["timesteps"]) + 2


def test_bl_cumulative_readout_matches_keras(fixtures, tmp_path):
    fixture = fixtures["bl"]
    path = keras_file(fixture, "save", tmp_path)
    kwargs = fixture_kwargs(fixture)
    cumulative = bm.create_model("rcnn_bl", checkpoint_path=path, cumulative_readout=True, **kwargs)
    check_parity(cumulative, fixture, "softmax_cumulative")
    instant = bm.create_model("rcnn_bl", checkpoint_path=path, **kwargs).eval()
    x = images_of(fixture)
    with torch.no_grad():
        a, b = instant.forward_timesteps(x), cumulative.eval().forward_timesteps(x)
    # Cumulative logits are the running sums of the instant ones; step 0 is the same.
    assert torch.allclose(b.logits, a.logits.cumsum(0), atol=1e-5)
    assert torch.equal(a.logits[0], b.logits[0]) and not torch.allclose(a.logits[1:], b.logits[1:])
    # model(x) is the last readout of each.
    with torch.no_grad():
        assert torch.equal(instant(x), a.logits[-1]) and torch.equal(cumulative(x), b.logits[-1])


def test_fewer_steps_are_the_first_steps_and_more_are_refused(fixtures, tmp_path):
    fixture = fixtures["bl"]
    model = bm.create_model(
        "rcnn_bl", checkpoint_path=keras_file(fixture, "save_weights", tmp_path),
        cumulative_readout=True, **fixture_kwargs(fixture),
    ).eval()  # fmt: skip
    x = images_of(fixture)
    with torch.no_grad():
        full = model.forward_timesteps(x, layers=["layer3"])
        short = model.forward_timesteps(x, timesteps=2, layers=["layer3"])
    assert torch.equal(short.logits, full.logits[:2])
    assert torch.equal(short.features["layer3"], full.features["layer3"][:2])
    with pytest.raises(bm.TimestepsError, match="BatchNorms for 4 steps"):
        model.forward_timesteps(x, timesteps=5)
    with pytest.raises(bm.TimestepsError, match="feed-forward"):
        bm.create_model("rcnn_b").forward_timesteps(x, timesteps=2)
    with pytest.raises(bm.ConfigValueError, match="timesteps = 0"):
        bm.create_model("rcnn_bl", timesteps=0)


def test_keras_names_are_layer_aliases(fixtures, tmp_path):
    fixture = fixtures["bl"]
    model = bm.create_model(
        "rcnn_bl", checkpoint_path=keras_file(fixture, "save", tmp_path), **fixture_kwargs(fixture)
    ).eval()
    x = images_of(fixture)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers=["RCL_2", "ReLU_Layer_5", "layer0"])
    assert rel_err(out.features["RCL_2"][1], fixture["act_2"][1].transpose(0, 3, 1, 2)) < TOL
    assert rel_err(out.features["ReLU_Layer_5"][3], fixture["act_5"][3].transpose(0, 3, 1, 2)) < TOL
    assert bm.create_model("rcnn_b_d").resolve_layer("ReLU_Layer_13") == "layer13"
    with pytest.raises(KeyError, match="layer7"):
        model.resolve_layer("layer7")


# ------------------------------------------------------------------------ architecture
def _b_params(channels, kernels, classes, in_chans=3):
    widths = (in_chans, *channels)
    convs = sum(k * k * widths[n] * widths[n + 1] for n, k in enumerate(kernels))
    return convs + 2 * sum(channels) + channels[-1] * classes + classes


@pytest.mark.parametrize(
    "arch, channels, kernels",
    [
        ("rcnn_b", (96, 128, 192, 256, 512, 1024, 2048), (7, 5, 3, 3, 3, 3, 1)),
        ("rcnn_b_k", (96, 128, 192, 256, 512, 1024, 2048), (11, 7, 5, 5, 5, 5, 3)),
        ("rcnn_b_f", (192, 256, 384, 512, 1024, 2048, 4096), (7, 5, 3, 3, 3, 3, 1)),
        ("rcnn_b_d", (96, 96, 128, 128, 192, 192, 256, 256, 512, 512, 1024, 1024, 2048, 2048),
         (7, 7, 5, 5, 3, 3, 3, 3, 3, 3, 3, 3, 1, 1)),
    ],
)  # fmt: skip
def test_b_layer_tables(arch, channels, kernels):
    with torch.device("meta"):
        model = bm.create_model(arch, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == _b_params(channels, kernels, 1000)
    assert [m.conv.kernel_size[0] for m in model.layers] == list(kernels)
    assert [m.conv.out_channels for m in model.layers] == list(channels)
    pools = [m.pool for m in model.layers]
    assert pools == (
        [n > 0 and n % 2 == 0 for n in range(14)] if arch == "rcnn_b_d" else [False] + [True] * 6
    )
    assert model.timesteps == 1 and model.readout_steps() == [0]


def test_bl_sizes_match_the_published_counts():
    model = bm.create_model("rcnn_bl")
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    # Published BL at 565 classes: 27,979,605 trainable parameters; 28,047,701 numbers in the file.
    assert params == 27_979_605 and params + stats == 28_047_701
    convs = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert convs == 26_753_824
    assert model.timesteps == 8 and len(model.layers[0].norms) == 8
    assert all(n.eps == 1e-3 and n.momentum == 0.01 for layer in model.layers for n in layer.norms)
    assert model.first_steps() == dict.fromkeys(model.layer_names, 0)
    assert model.readout_steps() == list(range(8))
    info = model.feature_info  # probed at 128 px
    assert [d["num_chs"] for d in info] == [96, 128, 192, 256, 512, 1024, 2048]
    assert [d["reduction"] for d in info] == [1, 2, 4, 8, 16, 32, 64]


def test_input_checks_and_other_sizes():
    model = bm.create_model("rcnn_bl", channels=[3, 4, 4, 5, 5, 6, 6], timesteps=2).eval()
    with pytest.raises(bm.InputError, match="at least 64x64"):
        model(torch.zeros(1, 3, 63, 128))
    with pytest.raises(bm.InputError, match="input channel"):
        model(torch.zeros(1, 1, 64, 64))
    with torch.no_grad():
        out = model.forward_timesteps(torch.randn(2, 3, 64, 96), layers=["layer6"])
    assert out.features["layer6"].shape == (2, 2, 6, 1, 1)  # floor pooling, as Keras 'valid'
    with pytest.raises(ValueError, match="7 positive integers"):
        bm.create_model("rcnn_bl", channels=[3, 4])
    with pytest.raises(ValueError, match="variant"):
        bm.models.RcnnSatB(variant="b_x")


def test_grad_flows_through_every_step():
    model = bm.create_model("rcnn_bl", channels=[3, 4, 4, 5, 5, 6, 6], timesteps=3, num_classes=4)
    out = model.forward_timesteps(torch.randn(2, 3, 64, 64))
    out.logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_transform_gives_the_reference_scaling(fixtures):
    from PIL import Image

    model = bm.create_model("rcnn_bl.ecoset", pretrained=False)
    cfg = bm.resolve_data_config(model)
    assert (
        cfg["input_size"] == (3, 128, 128)
        and cfg["mean"] == (0.5,) * 3
        and cfg["std"] == (0.5,) * 3
    )
    rgb = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    x = bm.create_transform(model)(Image.fromarray(rgb))
    reference = torch.from_numpy(rgb).permute(2, 0, 1).double() / 127.5 - 1  # preprocess_image
    assert torch.allclose(x.double(), reference, atol=1e-6)


# ------------------------------------------------------------------------ registry and tags
def test_registry_names_and_tags():
    assert "rcnn_bl" in bm.list_models("*bl*") and "blt_bl" in bm.list_models("*bl*")
    assert set(bm.list_models("rcnn_*")) == {
        "rcnn_b",
        "rcnn_b_k",
        "rcnn_b_f",
        "rcnn_b_d",
        "rcnn_bl",
    }
    assert bm.list_pretrained("rcnn*") == ["rcnn_bl.ecoset"]
    ecoset = bm.get_pretrained_cfg("rcnn_bl")  # the default tag
    assert ecoset.tag == "ecoset" and ecoset.url == "https://osf.io/9td5p/download"
    assert ecoset.sha256 is None and "no SHA-256" in ecoset.source
    assert ecoset.num_classes == 565 and ecoset.timesteps == 8
    assert ecoset.class_names[0] == "0001_man" and ecoset.class_names[-1] == "3038_hovercraft"
    assert len(set(ecoset.class_names)) == 565
    imagenet = bm.get_pretrained_cfg("rcnn_bl", "imagenet")
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert list(imagenet.class_names) == categories and imagenet.num_classes == 1000
    for arch in ("rcnn_b", "rcnn_b_k", "rcnn_b_f", "rcnn_b_d"):
        for tag in ("ecoset", "imagenet"):
            cfg = bm.get_pretrained_cfg(arch, tag)
            assert cfg.url is None and "osf.io/mz9hw" in cfg.source and cfg.timesteps == 1
            assert cfg.input_size == (3, 128, 128) and cfg.mean == (0.5,) * 3


def test_tag_without_download_location_says_where_to_get_it():
    with pytest.raises(bm.WeightsUnavailableError) as err:
        bm.create_model("rcnn_bl.imagenet", pretrained=True)
    assert "osf.io/mz9hw" in str(err.value) and "checkpoint_path=" in str(err.value)


def test_offline_download_error_names_url_and_checkpoint_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = bm.get_pretrained_cfg("rcnn_bl", "ecoset")
    monkeypatch.setattr(cfg, "url", "http://127.0.0.1:9/9td5p/download")  # nothing listens
    with pytest.raises(bm.WeightsUnavailableError) as err:
        bm.create_model("rcnn_bl.ecoset", pretrained=True)
    assert "127.0.0.1:9/9td5p/download" in str(err.value) and "checkpoint_path=" in str(err.value)


def _serve(fixture, layout, tmp_path, folder):
    served = tmp_path / folder / "download"  # OSF URLs all end in /download
    served.parent.mkdir(parents=True)
    return write_keras_file(fixture, layout, served)


def test_pretrained_tags_download_keras_files_into_their_own_cache_names(
    fixtures, tmp_path, monkeypatch
):
    """Two OSF-style URLs (.../<id>/download) must not share a cached file (no hash is pinned)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    bl, b = fixtures["bl"], fixtures["b"]
    for arch, tag, fixture, folder in (
        ("rcnn_bl", "ecoset", bl, "aaaaa"),
        ("rcnn_b", "imagenet", b, "bbbbb"),
    ):
        cfg = bm.get_pretrained_cfg(arch, tag)
        kwargs = fixture_kwargs(fixture)
        monkeypatch.setattr(cfg, "url", _serve(fixture, "save", tmp_path, folder).as_uri())
        monkeypatch.setattr(cfg, "num_classes", kwargs.pop("num_classes"))
        monkeypatch.setattr(cfg, "timesteps", kwargs.pop("timesteps", 1))
        monkeypatch.setattr(cfg, "class_names", None)
        monkeypatch.setattr(cfg, "model_args", kwargs)
    for arch, tag, fixture in (("rcnn_bl", "ecoset", bl), ("rcnn_b", "imagenet", b)):
        check_parity(bm.create_model(f"{arch}.{tag}", pretrained=True), fixture)
    cached = sorted(p.name for p in (tmp_path / "torch" / "hub" / "checkpoints").iterdir())
    assert cached == ["aaaaa-download", "bbbbb-download"]


def test_wrong_file_for_a_tag_is_refused(fixtures, tmp_path, monkeypatch):
    """The published tag expects 565 classes and the published widths: a small file must fail."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = bm.get_pretrained_cfg("rcnn_bl", "ecoset")
    monkeypatch.setattr(cfg, "url", _serve(fixtures["bl"], "save", tmp_path, "ccccc").as_uri())
    with pytest.raises(bm.CheckpointMismatchError, match="shape mismatches"):
        bm.create_model("rcnn_bl.ecoset", pretrained=True)


def test_checkpoint_of_the_other_family_is_refused(fixtures, tmp_path):
    path = keras_file(fixtures["b"], "save_weights", tmp_path)
    with pytest.raises(bm.CheckpointMismatchError, match="unexpected keys"):
        bm.create_model("rcnn_bl", checkpoint_path=path, **fixture_kwargs(fixtures["bl"]))


# ------------------------------------------------------------------------ converter
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_convert_infers_the_network_and_loads_from_local_dir(fixtures, tmp_path, variant, layout):
    fixture = fixtures[variant]
    path = keras_file(fixture, layout, tmp_path)
    arch = "rcnn_b_f" if variant == "b_f" else None  # reduced B-F widths: B and B-F share kernels
    spec = rcnn_convert.inspect_rcnn_sat_h5(path, arch=arch)
    assert spec.arch == f"rcnn_{variant}" and not spec.published
    assert spec.kwargs["channels"] == fixture["channels"].tolist()
    assert spec.kwargs["num_classes"] == 7 and spec.kwargs.get("timesteps", 1) == int(
        fixture["timesteps"]
    )
    out = bm.convert_rcnn_sat_h5(path, tmp_path / "out", arch=arch)
    model = bm.create_model(f"local-dir:{out}")
    assert model.pretrained_cfg.architecture == f"rcnn_{variant}"
    assert model.pretrained_cfg.sha256 and "converted by blt-models" in model.pretrained_cfg.source
    check_parity(model, fixture)
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["channels"] == fixture["channels"].tolist()
    assert config["pretrained_cfg"]["mean"] == [0.5] * 3


def test_b_and_b_f_widths_decide_without_arch(fixtures, tmp_path):
    path = keras_file(fixtures["b_f"], "save_weights", tmp_path)
    spec = rcnn_convert.inspect_rcnn_sat_h5(path)
    assert spec.arch == "rcnn_b" and "neither rcnn_b nor rcnn_b_f" in " ".join(spec.notes)
    with pytest.raises(bm.KerasWeightsError, match="fit rcnn_b, rcnn_b_f, not rcnn_b_k"):
        rcnn_convert.inspect_rcnn_sat_h5(path, arch="rcnn_b_k")
    with pytest.raises(bm.KerasWeightsError, match="not rcnn_bl"):
        rcnn_convert.inspect_rcnn_sat_h5(path, arch="rcnn_bl")


def _with_classes(fixture, tmp_path, classes: int):
    """The fixture's BL file with a ReadoutDense of ``classes`` outputs (random weights)."""
    path = keras_file(fixture, "save", tmp_path, f"bl_{classes}.h5")
    rng = np.random.default_rng(classes)
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights/ReadoutDense/ReadoutDense"]
        width = group["kernel:0"].shape[0]
        del group["kernel:0"], group["bias:0"]
        group["kernel:0"] = rng.normal(size=(width, classes)).astype("float32")
        group["bias:0"] = rng.normal(size=classes).astype("float32")
    return path


@pytest.mark.parametrize("classes, first", [(565, "0001_man"), (1000, "tench")])
def test_convert_writes_the_dataset_class_names(fixtures, tmp_path, classes, first):
    path = _with_classes(fixtures["bl"], tmp_path, classes)
    out = bm.convert_rcnn_sat_h5(path, tmp_path / "out", cumulative_readout=True)
    config = json.loads((out / "config.json").read_text())
    names = config["pretrained_cfg"]["class_names"]
    assert len(names) == classes and names[0] == first
    assert config["pretrained_cfg"]["tag"] == ("ecoset" if classes == 565 else "imagenet")
    assert config["model_args"]["cumulative_readout"] is True
    assert "assumed from the" in config["pretrained_cfg"]["training_data"]
    card = (out / "README.md").read_text()
    assert "Spoerer" in card and "labels in config.json" in card
    model = bm.create_model(f"local-dir:{out}")
    assert model.cumulative_readout and model.pretrained_cfg.class_names[0] == first


def test_cli_convert(fixtures, tmp_path, capsys):
    from blt_models.cli import main

    path = keras_file(fixtures["bl"], "save_weights", tmp_path)
    assert main(["convert", str(path), str(tmp_path / "cli"), "--cumulative-readout"]) == 0
    stdout = capsys.readouterr().out
    assert "rcnn_bl: rcnn-sat Keras file" in stdout and "verified" in stdout
    model = bm.create_model(f"local-dir:{tmp_path / 'cli'}")
    check_parity(model, fixtures["bl"], "softmax_cumulative")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as handle:
        handle.attrs["layer_names"] = np.array([b"dense"])
        handle.create_group("dense").attrs["weight_names"] = np.array([b"dense/kernel:0"])
        handle["dense"]["dense/kernel:0"] = np.zeros((3, 2), "float32")
    assert main(["convert", str(bad), str(tmp_path / "no")]) == 1
    assert "matches no rcnn-sat network" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_convert_refuses_overrides_the_weights_fix(fixtures, tmp_path):
    path = keras_file(fixtures["bl"], "save_weights", tmp_path)
    with pytest.raises(ValueError, match="timesteps cannot be chosen"):
        rcnn_convert.load_rcnn_sat_h5(path, timesteps=8)
    b_path = keras_file(fixtures["b"], "save_weights", tmp_path)
    with pytest.raises(ValueError, match="cumulative_readout cannot be chosen"):
        rcnn_convert.load_rcnn_sat_h5(b_path, cumulative_readout=True)
    with pytest.raises(ValueError, match="class_names has 3 names"):
        rcnn_convert.load_rcnn_sat_h5(path, class_names=["a", "b", "c"])


# ------------------------------------------------------------------------ bad files
def _edit(fixture, tmp_path, edit, layout="save_weights"):
    path = keras_file(fixture, layout, tmp_path, "edited.h5")
    with h5py.File(path, "r+") as handle:
        root = handle["model_weights"] if layout == "save" else handle
        edit(root)
    return path


def _drop_layer(name):
    def edit(root):
        names = [
            n
            for n in root.attrs["layer_names"]
            if (n.decode() if isinstance(n, bytes) else n) != name
        ]
        root.attrs["layer_names"] = np.array(
            [n.encode() if isinstance(n, str) else n for n in names]
        )
        del root[name]

    return edit


def _replace(layer, weight, shape):
    def edit(root):
        group = root[layer][layer]
        del group[weight]
        group[weight] = np.zeros(shape, "float32")

    return edit


def _add_layer(name):
    def edit(root):
        names = [n.encode() if isinstance(n, str) else n for n in root.attrs["layer_names"]]
        root.attrs["layer_names"] = np.array(names + [name.encode()])
        group = root.create_group(name)
        group.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode()])
        group.create_group(name)["kernel:0"] = np.zeros((2, 2), "float32")

    return edit


@pytest.mark.parametrize(
    "variant, edit, message",
    [
        ("bl", _drop_layer("BatchNorm_Layer_3_Time_2"), "layer 3 has them for steps [0, 1, 3]"),
        ("bl", _drop_layer("RCL_6_LConv"), "RCL_6_LConv"),
        ("bl", _drop_layer("ReadoutDense"), "no ReadoutDense layer"),
        ("bl", _replace("RCL_2_BConv", "kernel:0", (5, 5, 5, 6)), "RCL_2_BConv has a 5x5 kernel, expected 3"),
        ("bl", _replace("RCL_3_BConv", "kernel:0", (3, 3, 4, 7)), "takes 4 input channels, but the layer below gives 6"),
        ("bl", _replace("BatchNorm_Layer_1_Time_0", "gamma:0", (4,)), "gamma has shape [4], expected [5]"),
        ("bl", _replace("ReadoutDense", "kernel:0", (9, 7)), "do not read 10 features"),
        ("bl", _add_layer("Extra_Dense"), "no rcnn-sat network has: Extra_Dense"),
        ("b", _add_layer("RCL_0_BConv"), "both the B"),
        ("b", _drop_layer("BatchNorm_Layer_4"), "BatchNorm layers [0, 1, 2, 3, 5, 6]"),
        ("b", _replace("Conv_Layer_6", "kernel:0", (3, 3, 9, 10)), "fit no B variant"),
        ("b_d", _drop_layer("Conv_Layer_13"), "conv layers"),
    ],
)  # fmt: skip
def test_files_that_fit_no_variant_are_refused_with_a_report(
    fixtures, tmp_path, variant, edit, message
):
    path = _edit(fixtures[variant], tmp_path, edit)
    with pytest.raises(bm.KerasWeightsError) as err:
        bm.convert_rcnn_sat_h5(path, tmp_path / "out")
    text = str(err.value)
    assert message in text, text
    assert "Found:" in text and "layers with weights" in text and "Expected" in text
    assert not (tmp_path / "out").exists()
    assert isinstance(err.value, ValueError) and isinstance(err.value, bm.errors.BltModelsError)


def test_unreadable_files_are_refused(fixtures, tmp_path):
    text = tmp_path / "weights.h5"
    text.write_text("<html>OSF login page</html>")
    with pytest.raises(bm.KerasWeightsError, match="not an HDF5 file"):
        bm.convert_rcnn_sat_h5(text, tmp_path / "out")
    good = keras_file(fixtures["bl"], "save_weights", tmp_path)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(bm.KerasWeightsError, match="download it again"):
        bm.convert_rcnn_sat_h5(truncated, tmp_path / "out")
    keras3 = tmp_path / "keras3.weights.h5"
    with h5py.File(keras3, "w") as handle:
        handle.create_group("layers/conv2d/vars")["0"] = np.zeros((3, 3, 3, 4), "float32")
        handle.create_group("vars")
    with pytest.raises(bm.KerasWeightsError, match="Keras 3 weights format"):
        bm.convert_rcnn_sat_h5(keras3, tmp_path / "out")
    listed = _edit(
        fixtures["b"], tmp_path, lambda root: root["Conv_Layer_2"].__delitem__("Conv_Layer_2")
    )
    with pytest.raises(bm.KerasWeightsError, match="is listed but missing"):
        bm.convert_rcnn_sat_h5(listed, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        bm.convert_rcnn_sat_h5(tmp_path / "nope.h5", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_chunked_and_bytes_attributes_are_read(fixtures, tmp_path):
    """Keras splits long attributes into name0, name1...; older files store bytes."""

    def chunk(root):
        names = [n.encode() if isinstance(n, str) else n for n in root.attrs["layer_names"]]
        del root.attrs["layer_names"]
        half = len(names) // 2
        root.attrs["layer_names0"] = np.array(names[:half])
        root.attrs["layer_names1"] = np.array(names[half:])

    path = _edit(fixtures["bl"], tmp_path, chunk, layout="save")
    model, how = rcnn_convert.load_rcnn_sat_h5(path)
    assert "4 steps" in how
    check_parity(model, fixtures["bl"])


@pytest.mark.slow
def test_full_size_published_bl_file_converts(fixtures, tmp_path):
    """A BL file of the published shape (565 classes, 8 steps, widths 96..2048; 28,047,701
    numbers) converts as rcnn_bl.ecoset with the ecoset names."""
    template = fixtures["bl"]
    layout = json.loads(str(template["h5:save_weights"]))
    path = tmp_path / "bl_ecoset.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as handle:
        names = []
        for n, (c, k) in enumerate(
            zip((96, 128, 192, 256, 512, 1024, 2048), (7, 5, 3, 3, 3, 3, 1), strict=True)
        ):
            c_in = 3 if n == 0 else (96, 128, 192, 256, 512, 1024)[n - 1]
            for conv, shape in (("BConv", (k, k, c_in, c)), ("LConv", (k, k, c, c))):
                name = f"RCL_{n}_{conv}"
                names.append(name)
                g = handle.create_group(name)
                g.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode()])
                g.create_group(name)["kernel:0"] = rng.normal(0, 0.01, shape).astype("float32")
            for t in range(8):
                name = f"BatchNorm_Layer_{n}_Time_{t}"
                names.append(name)
                g = handle.create_group(name)
                g.attrs["weight_names"] = np.array(
                    [
                        f"{name}/{w}:0".encode()
                        for w in ("gamma", "beta", "moving_mean", "moving_variance")
                    ]
                )
                for w in ("gamma", "beta", "moving_mean", "moving_variance"):
                    g.require_group(name)[f"{w}:0"] = np.ones(c, "float32")
        g = handle.create_group("ReadoutDense")
        g.attrs["weight_names"] = np.array([b"ReadoutDense/kernel:0", b"ReadoutDense/bias:0"])
        g.create_group("ReadoutDense")["kernel:0"] = rng.normal(0, 0.01, (2048, 565)).astype(
            "float32"
        )
        g["ReadoutDense"]["bias:0"] = np.zeros(565, "float32")
        handle.attrs["layer_names"] = np.array([n.encode() for n in names + ["ReadoutDense"]])
        handle.attrs["backend"] = layout["groups"][""].get("backend", {"v": "tensorflow"})["v"]
        handle.attrs["keras_version"] = "2.2.4-tf"
    found = bm._keras_h5.read_keras_h5(path)
    assert found.num_values == 28_047_701
    spec = rcnn_convert.inspect_rcnn_sat_h5(found)
    assert spec.arch == "rcnn_bl" and spec.published and "channels" not in spec.kwargs
    out = bm.convert_rcnn_sat_h5(path, tmp_path / "bl_ecoset")
    model = bm.create_model(f"local-dir:{out}")
    cfg = model.pretrained_cfg
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["tag"] == "ecoset"
    assert cfg.training_data.startswith("ecoset") and "assumed" not in cfg.training_data
    assert cfg.class_names[0] == "0001_man" and model.timesteps == 8
    shutil.rmtree(out)


def test_extraction_of_a_batchnorm_model(fixtures, tmp_path):
    """Per-step features of rcnn_bl to HDF5 and back (its BatchNorms hold 0-d counters, which the
    extraction's weight hash must take)."""
    fixture = fixtures["bl"]
    model = bm.create_model(
        "rcnn_bl", checkpoint_path=keras_file(fixture, "save", tmp_path), **fixture_kwargs(fixture)
    ).eval()
    x = images_of(fixture)
    result = bm.extract_features(
        model, x, layers=["RCL_1", "layer6"], out=tmp_path / "features.h5", batch_size=1,
        progress=False,
    )  # fmt: skip
    loaded = bm.load_features(tmp_path / "features.h5")
    assert result.steps.tolist() == [0, 1, 2, 3]
    for name, n in (("layer1", 1), ("layer6", 6)):
        keras = fixture[f"act_{n}"].transpose(1, 0, 4, 2, 3)  # -> [N, T, C, H, W]
        assert rel_err(torch.as_tensor(np.asarray(loaded.features[name])), keras) < TOL
    # An HDF5 file that is not a Keras weight file (here: the features) is refused by name.
    with pytest.raises(bm.KerasWeightsError, match="not a Keras 2 weight file"):
        bm.create_model("rcnn_bl", checkpoint_path=tmp_path / "features.h5")


def test_input_stage_is_one_method(monkeypatch):
    """Layer 0's bottom-up conv of the image is computed once per run, by input_drive (the one
    place a time-varying input would recompute it per frame)."""
    model = bm.create_model("rcnn_bl", channels=[3, 4, 4, 5, 5, 6, 6], timesteps=3).eval()
    x = torch.randn(2, 3, 64, 64)
    calls = []
    original = model.input_drive

    def counted(image):
        calls.append(image)
        return original(image)

    monkeypatch.setattr(model, "input_drive", counted)
    with torch.no_grad():
        out = model.forward_timesteps(x, layers=["layer0"])
    assert len(calls) == 1 and calls[0] is x
    with torch.no_grad():
        z = model.layers[0].bconv(x)
        assert torch.equal(out.features["layer0"][0], torch.relu(model.layers[0].norms[0](z)))
    monkeypatch.setattr(model, "input_drive", lambda image: torch.zeros_like(original(image)))
    with torch.no_grad():
        assert not torch.allclose(model.forward_timesteps(x).logits, out.logits)


SMALL_BL = [3, 4, 4, 5, 5, 6, 6]


def small_bl(timesteps=4, **kw):
    torch.manual_seed(0)
    model = bm.create_model("rcnn_bl", channels=SMALL_BL, timesteps=timesteps, **kw)
    return randomize_(model).eval()  # non-trivial per-step BatchNorm scale and shift


def seq_frames(t, seed, b=2):
    return torch.randn(t, b, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def run_all(model, x, **kw):
    with torch.no_grad():
        return model.forward_timesteps(x, layers="all", **kw)


def differing_steps(a, b):
    return [t for t in range(a.shape[0]) if not torch.equal(a[t], b[t])]


def test_bl_arrival_rule_is_the_same_step_everywhere():
    """Layer n reads maxpool(a[t][n-1]) of the same step: frame t reaches every layer at t."""
    model = small_bl()
    assert model.supports_sequences and not model.feedforward
    assert model.arrival_steps(0) == model.first_steps() == dict.fromkeys(model.layer_names, 0)
    assert model.arrival_steps(3, 4) == dict.fromkeys(model.layer_names, 3)


@pytest.mark.parametrize("cumulative", [False, True])
def test_bl_sequence_causality_delays_and_constant_sequence(cumulative):
    T = 4
    model = small_bl(T, cumulative_readout=cumulative)
    image = seq_frames(1, seed=1)[0]
    constant = image[None].repeat(T, 1, 1, 1, 1)  # materialised: takes the per-frame path
    static = run_all(model, image)
    base = run_all(model, constant)
    # A constant sequence is the static image, bit for bit.
    assert torch.equal(base.steps, static.steps) and base.first_step == static.first_step
    assert torch.equal(base.logits, static.logits)
    for name in model.layer_names:
        assert torch.equal(base.features[name], static.features[name]), name
    with torch.no_grad():
        assert torch.equal(model(constant), static.logits[-1])

    other = seq_frames(1, seed=2)[0]
    for onset in range(T):
        seq = constant.clone()
        seq[onset] = other  # only the frame of step `onset` changes
        out = run_all(model, seq)
        arrival = model.arrival_steps(onset, T)
        for name in model.layer_names:
            diff = differing_steps(out.features[name], base.features[name])
            # Nothing before the arrival step changes, the arrival step does, and the lateral
            # term carries the change on to every later step.
            assert diff == list(range(arrival[name], T)), (onset, name, diff)
        assert differing_steps(out.logits, base.logits) == list(range(onset, T)), onset


def test_bl_sequence_recomputes_the_input_drive_per_frame(monkeypatch):
    model = small_bl(4)
    calls = []
    original = model.input_drive

    def counted(image):
        calls.append(image)
        return original(image)

    monkeypatch.setattr(model, "input_drive", counted)
    seq = seq_frames(4, seed=3)
    with torch.no_grad():
        out = model.forward_timesteps(seq, layers=["layer0"])
    assert len(calls) == 4 and all(torch.equal(c, seq[t]) for t, c in enumerate(calls))
    with torch.no_grad():  # layer 0 at step t is built from frame t's drive
        rcl, a0 = model.layers[0], out.features["layer0"]
        assert torch.equal(a0[0], torch.relu(rcl.norms[0](rcl.bconv(seq[0]))))
        for t in range(1, 4):
            z = rcl.bconv(seq[t]) + rcl.lconv(a0[t - 1])
            assert torch.equal(a0[t], torch.relu(rcl.norms[t](z))), t
        calls.clear()
        expanded = model.forward_timesteps(seq[0][None].expand(4, -1, -1, -1, -1))
        assert len(calls) == 1  # an expanded image is the static image: one drive
        assert torch.equal(expanded.logits, model.forward_timesteps(seq[0]).logits)
        calls.clear()
        short = model.forward_timesteps(seq[:2])  # fewer frames: the first steps of the network
        assert len(calls) == 2 and short.logits.shape[0] == 2
        assert torch.equal(short.logits, model.forward_timesteps(seq).logits[:2])


def test_bl_sequence_longer_than_its_batchnorms_is_refused():
    model = small_bl(3)
    with pytest.raises(bm.errors.TimestepsError, match="at most 3 steps"):
        model(seq_frames(4, seed=4))
    with pytest.raises(bm.errors.TimestepsError, match="T=3"):
        model.forward_timesteps(seq_frames(3, seed=4), timesteps=2)


B_SMALL = {
    "rcnn_b": [3, 4, 4, 5, 5, 6, 6],
    "rcnn_b_k": [3, 4, 4, 5, 5, 6, 6],
    "rcnn_b_f": [3, 4, 4, 5, 5, 6, 6],
    "rcnn_b_d": list(range(3, 17)),
}


@pytest.mark.parametrize("arch", list(B_SMALL))
def test_b_variants_sweep_each_frame(arch):
    torch.manual_seed(0)
    model = randomize_(bm.create_model(arch, channels=B_SMALL[arch], num_classes=5)).eval()
    assert model.feedforward
    seq = seq_frames(3, seed=5, b=1)
    out = run_all(model, seq)
    assert out.steps.tolist() == [0, 1, 2] and out.logits.shape == (3, 1, 5)
    assert model.arrival_steps(2) == dict.fromkeys(model.layer_names, 2)
    for t in range(3):
        single = run_all(model, seq[t])
        assert torch.equal(out.logits[t], single.logits[0])
        for name in model.layer_names:
            assert torch.equal(out.features[name][t], single.features[name][0]), name
    with torch.no_grad():
        assert torch.equal(model(seq), out.logits[-1])


def test_timm_style_head_and_intermediates():
    model = bm.create_model("rcnn_b_d", channels=list(range(3, 17)), num_classes=6).eval()
    x = torch.randn(1, 3, 64, 64)
    final, inter = model.forward_intermediates(x, indices=[0, -1])
    assert final.shape == (1, 16, 1, 1) and [t.shape[1] for t in inter] == [3, 16]
    assert model.get_classifier() is model.readout
    model.reset_classifier(11)
    assert model(x).shape == (1, 11) and model.num_classes == 11
