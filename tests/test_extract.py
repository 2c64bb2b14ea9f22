"""Per-step feature extraction, preprocessing and timm compatibility (issue 6). Small models only."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _small_models import small_blt
from PIL import Image

import blt_models as bm
from blt_models.cli import main as cli_main
from blt_models.data import create_transform, resolve_data_config
from blt_models.extract import (
    NoImagesError,
    OutputMismatchError,
    StepOutOfRangeError,
    UnknownLayerError,
    UnreadableImageError,
    extract_features,
    load_features,
)

SAMPLES = Path(bm.__file__).parent / "samples" / "fashion_mnist"
T = 5  # blt_bl with 4 layers: layer k active from step k, readouts from step 3


def small_model(in_chans: int = 1, size: int = 32) -> bm.ClockedModel:
    return small_blt(T, in_chans=in_chans, size=size)


@pytest.fixture(scope="module")
def model() -> bm.ClockedModel:
    return small_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "stimuli"
    (out / "sub").mkdir(parents=True)
    for i in range(3):
        shutil.copy(SAMPLES / f"test0000{i}.png", out / f"img{i}.png")
    shutil.copy(SAMPLES / "test00003.png", out / "sub" / "img3.png")
    (out / "notes.txt").write_text("not an image")
    return out


def reference(
    model: bm.ClockedModel, x: torch.Tensor, layers: list[str]
) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        out = model.forward_timesteps(x, layers=layers)
    return {k: v.transpose(0, 1) for k, v in out.features.items()}  # [B, T, ...]


# --------------------------------------------------------------------------------- in memory
def test_tensor_source_equals_forward_timesteps(model, images):
    ref = reference(model, images, list(model.layer_names))
    # Same batch and layout: bit-identical to forward_timesteps.
    same = extract_features(model, images, layers="all", batch_size=len(images), progress=False,
                            memory_format="contiguous")  # fmt: skip
    for name in model.layer_names:
        assert torch.equal(same[name], ref[name])
    # The default layout on CPU (channels_last) agrees to float rounding and leaves the
    # caller's model as it was.
    fast = extract_features(model, images, layers="all", batch_size=len(images), progress=False)
    assert fast.metadata["model"]["name"] == same.metadata["model"]["name"]
    assert model.conv_input.weight.is_contiguous()
    for name in model.layer_names:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-5, atol=1e-5)
    # Other batch sizes: equal up to the float rounding of batched convolutions.
    res = extract_features(model, images, layers="all", batch_size=3, progress=False)
    assert res.layers == list(model.layer_names)
    assert res.steps.tolist() == list(range(T))
    assert res.image_ids == [str(i) for i in range(7)]
    for name in model.layer_names:
        assert res[name].shape == ref[name].shape
        torch.testing.assert_close(res[name], ref[name], rtol=1e-4, atol=1e-5)
    # Steps before a layer is active are zeros, and first_step says so.
    assert res.first_step == {f"layer{k}": k for k in range(4)}
    assert torch.count_nonzero(res["layer2"][:, :2]) == 0
    assert res.active("layer2").tolist() == [False, False, True, True, True]


def test_in_memory_maps_are_stored_channels_last_on_cpu(model, images):
    """The CPU default writes each layer's channels-last output into its rows as they are: the
    same shape and values as NCHW storage, only the memory order differs."""
    cl = extract_features(model, images, layers="all", batch_size=3, progress=False)
    nchw = extract_features(model, images, layers="all", batch_size=3, progress=False,
                            memory_format="contiguous")  # fmt: skip
    for name in model.layer_names:
        t = cl[name]  # [N, S, C, H, W] over N, S, H, W, C memory
        assert t.shape == nchw[name].shape
        assert t.is_contiguous() == (t.shape[-1] * t.shape[-2] == 1)  # 1x1 maps: the same
        assert t.permute(0, 1, 3, 4, 2).is_contiguous()
        torch.testing.assert_close(t, nchw[name], rtol=1e-5, atol=1e-5)
        # what analyses do with it: flattening follows C, H, W order like NCHW storage
        torch.testing.assert_close(t.reshape(len(t), -1), nchw[name].reshape(len(t), -1),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    # pooled features and a DataLoader of unknown length keep plain layouts / same values
    avg = extract_features(model, images, layers=["layer0"], pool="avg", progress=False)
    assert avg["layer0"].is_contiguous()
    torch.testing.assert_close(avg["layer0"], nchw["layer0"].mean((-2, -1)), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_channels_last_on_a_grayscale_input_and_the_model_given_back(model, images):
    """A one-channel batch is NCHW and channels-last at once: extraction must still run
    channels-last (bit for bit what a channels-last copy of the model gives on a restrided
    input), and give the caller's model back with its own layout and values."""
    import copy

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = extract_features(model, images, layers="all", batch_size=len(images), progress=False)
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    converted = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = images.to(memory_format=torch.channels_last)
    assert x.stride(1) == 1  # .to restrides; .contiguous(memory_format=...) would not
    with torch.inference_mode():
        ref = converted.forward_timesteps(x, layers="all")
    for name in model.layer_names:
        assert torch.equal(res[name], ref.features[name].transpose(0, 1)), name


def test_the_callers_model_keeps_its_dtype_and_modes(images):
    """Extraction converts the model for the run (eval mode, the compute dtype, the layout) and
    puts every module's mode and every tensor's dtype back."""
    model = small_model().to(torch.bfloat16).train()
    model.norm_1.eval()  # a module the caller froze
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    res = extract_features(model, images, layers="layer1", dtype="float64", progress=False)
    assert res["layer1"].dtype == torch.float64
    assert model.training and not model.norm_1.training and model.norm_2.training
    state = model.state_dict()
    assert {n: t.dtype for n, t in state.items()} == {n: t.dtype for n, t in before.items()}
    assert all(torch.equal(state[n], before[n]) for n in before)


def test_folder_source_uses_model_preprocessing(model, folder):
    res = extract_features(
        model, folder, layers=["output_3", "layer1"], steps=[-1, 1], progress=False
    )
    assert res.image_ids == ["img0.png", "img1.png", "img2.png", "sub/img3.png"]
    assert res.layers == ["layer3", "layer1"]  # aliases resolved to canonical names
    tf = create_transform(model)
    files = [folder / i for i in res.image_ids]
    x = torch.stack([tf(Image.open(f)) for f in files])
    ref = reference(model, x, ["layer3", "layer1"])
    torch.testing.assert_close(res["layer3"], ref["layer3"][:, [1, T - 1]], rtol=1e-4, atol=1e-5)
    assert res.steps.tolist() == [1, T - 1]
    assert res.metadata["data_config"]["input_size"] == [1, 32, 32]
    # A list of paths gives the same features, with the paths as ids.
    res2 = extract_features(
        model, [str(f) for f in files], layers="layer1", steps=[1, -1], progress=False
    )
    torch.testing.assert_close(res2["layer1"], res["layer1"])
    assert res2.image_ids == [str(f) for f in files]


def test_dataset_and_dataloader_sources(model, images):
    full = extract_features(model, images, layers="layer2", progress=False)
    ds = torch.utils.data.TensorDataset(images, torch.arange(7))
    res = extract_features(model, ds, layers="layer2", batch_size=4, progress=False)
    torch.testing.assert_close(res["layer2"], full["layer2"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    res = extract_features(model, loader, layers="layer2", progress=False)
    torch.testing.assert_close(res["layer2"], full["layer2"])
    assert res.num_images == 7


def test_pooling(model, images):
    full = extract_features(model, images, layers=["layer0", "layer3"], progress=False)
    avg = extract_features(model, images, layers=["layer0", "layer3"], pool="avg", progress=False)
    torch.testing.assert_close(avg["layer0"], full["layer0"].mean((-2, -1)))
    assert avg.metadata["dims"]["layer0"] == ["image", "step", "channel"]
    rp = extract_features(model, images, layers=["layer0"], pool="random:64:3", progress=False)
    rp2 = extract_features(
        model, images, layers=["layer0"], pool=bm.extract.Pooling("random", 64, 3), progress=False
    )
    other = extract_features(model, images, layers=["layer0"], pool="random:64:4", progress=False)
    assert rp["layer0"].shape == (7, T, 64)
    assert torch.equal(rp["layer0"], rp2["layer0"])  # fixed by the seed
    assert not torch.equal(rp["layer0"], other["layer0"])
    # A linear map, the same at every step: a projection of the flattened features.
    flat = full["layer0"].flatten(2)
    proj = rp.metadata["pool"]
    assert proj["kind"] == "random" and proj["width"] == 64 and proj["seed"] == 3
    ratio = rp["layer0"].norm(dim=-1) / flat.norm(dim=-1)
    assert 0.5 < ratio.median() < 1.5  # norms preserved in expectation
    with pytest.raises(ValueError, match="pool"):
        extract_features(model, images, layers="layer0", pool="max", progress=False)


# --------------------------------------------------------------------------------- files
@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_file_round_trip(model, images, tmp_path, suffix):
    out = tmp_path / f"feats{suffix}"
    mem = extract_features(
        model, images, layers=["layer1", "layer3"], steps=[0, 2, 4], progress=False
    )
    res = extract_features(model, images, layers=["layer1", "layer3"], steps=[0, 2, 4], out=out,
                           batch_size=3, progress=False)  # fmt: skip
    back = load_features(out)
    lazy = res["layer3"]  # a file-backed result reads on indexing
    assert isinstance(lazy, bm.extract.LazyFeatures) and lazy.shape == (7, 3, 512, 1, 1)
    torch.testing.assert_close(lazy[2:5, -1], mem["layer3"][2:5, -1])
    torch.testing.assert_close(lazy[[6, 0]], mem["layer3"][[6, 0]])
    torch.testing.assert_close(lazy[-1], mem["layer3"][-1])
    res = res.load()
    for r in (res, back):
        assert r.layers == ["layer1", "layer3"]
        torch.testing.assert_close(r["layer3"], mem["layer3"])
        torch.testing.assert_close(r["layer1"], mem["layer1"])
        assert r.steps.tolist() == [0, 2, 4]
        assert r.image_ids == mem.image_ids
        assert r.first_step == {"layer1": 1, "layer3": 3}
    meta = back.metadata
    for key in ("format", "format_version", "model", "weights_sha256", "timesteps", "steps",
                "layers", "first_step", "pool", "dtype", "feature_shapes", "dims", "source",
                "n_images", "library", "n_done", "complete"):  # fmt: skip
        assert key in meta, key
    assert meta["model"]["name"].startswith("blt_bl")
    assert meta["model"]["config"]["num_layers"] == 4
    assert meta["library"]["blt_models"] == bm.__version__
    assert meta["complete"] and meta["n_done"] == 7 and meta["timesteps"] == T
    assert meta["pool"] == {"kind": "none"}
    assert load_features(out, layers="layer1").layers == ["layer1"]
    with pytest.raises(UnknownLayerError, match="layer3"):
        load_features(out, layers="layer33")
    # A different request on the same file is refused, not mixed in.
    with pytest.raises(OutputMismatchError, match="layers"):
        extract_features(model, images, layers=["layer1"], steps=[0, 2, 4], out=out, progress=False)


class FailingImages(torch.utils.data.Dataset):
    """Images that raise from index ``fail_at`` on while ``fail`` is set; counts calls."""

    def __init__(self, images: torch.Tensor, fail_at: int | None) -> None:
        self.images, self.fail_at, self.calls = images, fail_at, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.fail_at is not None and i >= self.fail_at:
            raise RuntimeError("disk unplugged")
        self.calls += 1
        return self.images[i]


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_resume_after_interruption(model, images, tmp_path, suffix):
    kwargs = dict(layers=["layer0", "layer3"], batch_size=2, progress=False)
    whole = tmp_path / f"whole{suffix}"
    extract_features(model, FailingImages(images, None), out=whole, **kwargs)

    out = tmp_path / f"resumed{suffix}"
    with pytest.raises(RuntimeError, match="disk unplugged"):
        extract_features(model, FailingImages(images, 5), out=out, **kwargs)
    partial = load_features(out)
    assert not partial.metadata["complete"] and partial.num_images == 4  # two whole batches
    source = FailingImages(images, None)
    extract_features(model, source, out=out, **kwargs)
    # Item 0 twice (is it a tensor or an image for transform=? the shape probe); images 0-3
    # re-read (not run) to check they are unchanged; then 4, 5, 6.
    assert source.calls == 2 + 4 + 3

    a, b = load_features(whole), load_features(out)
    assert a.image_ids == b.image_ids and b.metadata["complete"]
    for name in a.layers:
        assert torch.equal(a[name], b[name])
    assert {k: v for k, v in a.metadata.items()} == {k: v for k, v in b.metadata.items()}
    # A complete file is read back without running the model again (a Dataset's images are
    # read once more to check that they are still the ones written).
    source = FailingImages(images, None)
    extract_features(model, source, out=out, **kwargs)
    assert source.calls == 2 + 7


# --------------------------------------------------------------------------------- errors
def test_named_errors(model, images, tmp_path, folder):
    with pytest.raises(UnknownLayerError, match=r"layer9.*Did you mean"):
        extract_features(model, images, layers=["layer9"], progress=False)
    with pytest.raises(KeyError):  # also a KeyError, like resolve_layer
        extract_features(model, images, layers="nope", progress=False)
    with pytest.raises(StepOutOfRangeError, match=r"step 5 .*\(0 \.\. 4"):
        extract_features(model, images, layers="layer0", steps=[0, 5], progress=False)
    with pytest.raises(bm.TimestepsError):
        extract_features(model, images, layers="layer0", steps=-6, progress=False)
    (folder / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(UnreadableImageError, match="broken.png"):
        extract_features(model, folder, layers="layer0", progress=False)
    with pytest.raises(UnreadableImageError, match="missing.png"):
        extract_features(model, [str(folder / "missing.png")], layers="layer0", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(NoImagesError, match="no image files"):
        extract_features(model, empty, layers="layer0", progress=False)
    with pytest.raises(NoImagesError, match="not a folder"):
        extract_features(model, str(tmp_path / "nowhere"), layers="layer0", progress=False)
    with pytest.raises(bm.InputError, match="floating-point"):
        extract_features(model, (images * 255).to(torch.uint8), layers="layer0", progress=False)
    import h5py

    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(OutputMismatchError, match="not a blt-models feature store"):
        extract_features(
            model, images, layers="layer0", out=tmp_path / "foreign.h5", progress=False
        )
    with pytest.raises(bm.ExtractionError, match="output format"):
        extract_features(model, images, layers="layer0", out=tmp_path / "x.npz", progress=False)


# --------------------------------------------------------------------------------- preprocessing
def test_data_config_and_transform():
    rgb = bm.create_model("blt_bl", num_layers=4)
    cfg = resolve_data_config(rgb)
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875
    assert cfg["mean"] == (0.485, 0.456, 0.406)
    assert resolve_data_config(rgb, img_size=64)["input_size"] == (3, 64, 64)
    gray = bm.create_model("blt_bl", num_layers=4, in_chans=1)
    cfg = resolve_data_config(gray, img_size=48, crop_pct=1.0)
    assert cfg["input_size"] == (1, 48, 48) and len(cfg["mean"]) == 1 and cfg["crop_pct"] == 1.0
    img = Image.open(SAMPLES / "test00000.png")  # 28x28 grayscale
    assert create_transform(cfg)(img).shape == (1, 48, 48)
    assert create_transform(rgb, img_size=40)(img).shape == (3, 40, 40)
    vgg = resolve_data_config(bm.get_pretrained_cfg("blt_bl", "vggface2"))
    assert vgg["mean"] == pytest.approx((0.6068, 0.4517, 0.38))
    with pytest.raises(TypeError, match="unknown"):
        resolve_data_config(rgb, colour="blue")


# --------------------------------------------------------------------------------- timm
def test_timm_feature_info_and_forward_intermediates(model, images):
    from timm.models._features import FeatureInfo

    model.train()
    info = model.feature_info
    assert model.training  # the dry run does not change the mode
    model.eval()
    assert [d["module"] for d in info] == list(model.layer_names)
    assert [d["num_chs"] for d in info] == [64, 128, 256, 512]
    assert [d["reduction"] for d in info] == [4, 8, 16, 32]
    fi = FeatureInfo(info, out_indices=(1, 3))
    assert fi.channels() == [128, 512] and fi.reduction() == [8, 32]

    with torch.inference_mode():
        ref = model.forward_timesteps(images, layers="all").features
        final, inter = model.forward_intermediates(images)
        assert torch.equal(final, ref["layer3"][-1])
        assert len(inter) == 4 and all(
            torch.equal(a, ref[n][-1]) for a, n in zip(inter, model.layer_names, strict=True)
        )
        for a, d in zip(inter, info, strict=True):
            assert a.shape[1] == d["num_chs"] and 32 // a.shape[-1] == d["reduction"]
        last2 = model.forward_intermediates(images, indices=2, intermediates_only=True)
        assert [a.shape[1] for a in last2] == [256, 512]
        sel = model.forward_intermediates(images, indices=[0, -1], intermediates_only=True,
                                          output_fmt="NHWC", stop_early=True, norm=True)  # fmt: skip
        assert torch.equal(sel[0], ref["layer0"][-1].permute(0, 2, 3, 1))
    assert model.prune_intermediate_layers([0, -1]) == [0, 3]
    # timm's own wrapper for forward_intermediates models (features_only, getter style).
    from timm.models._features import FeatureGetterNet

    getter = FeatureGetterNet(model, out_indices=(1, 3))
    assert getter.feature_info.channels() == [128, 512]
    with torch.inference_mode():
        feats = getter(images)
    assert [f.shape[1] for f in feats] == [128, 512]
    assert torch.equal(feats[1], ref["layer3"][-1])
    with pytest.raises(IndexError):
        model.forward_intermediates(images, indices=[4])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(images, output_fmt="NLC")


# --------------------------------------------------------------------------------- CLI
def test_cli_extract(folder, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    argv = ["extract", "blt_bl", str(folder), "--layers", "layer1", "output_3", "--steps", "0,2-4",
            "--out", str(out), "--pool", "avg", "--model-arg", "num_layers=4", "--timesteps", "5",
            "--in-chans", "1", "--img-size", "32", "--batch-size", "3", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "images" in text and "4" in text and "layer3" in text and str(out) in text
    res = load_features(out)
    assert res.steps.tolist() == [0, 2, 3, 4] and res["layer3"].shape == (4, 4, 512)
    assert cli_main([*argv[:3], "--layers", "layer9", *argv[7:]]) == 1
    assert "Did you mean" in capsys.readouterr().err
    assert np.isfinite(res["layer1"].numpy()).all()


def test_unreadable_image_with_workers_then_resume(model, folder, tmp_path):
    """A worker's decoding error surfaces by name, leaves a resumable file, and no worker keeps
    the HDF5 file locked."""
    good = (folder / "img2.png").read_bytes()
    (folder / "img2.png").write_bytes(b"garbage")
    out = tmp_path / "w.h5"
    kwargs = dict(layers="layer1", batch_size=2, num_workers=1, progress=False, out=out)
    with pytest.raises(UnreadableImageError, match="img2.png"):
        extract_features(model, folder, **kwargs)
    assert load_features(out).num_images == 2
    (folder / "img2.png").write_bytes(good)
    res = extract_features(model, folder, **kwargs).load()
    ref = extract_features(model, folder, layers="layer1", batch_size=2, progress=False)
    assert res.image_ids == ref.image_ids and torch.equal(res["layer1"], ref["layer1"])


def test_forward_timesteps_keeps_only_requested_steps(model, images):
    with torch.no_grad():
        full = model.forward_timesteps(images, layers=["layer1", "layer3"])
        part = model.forward_timesteps(images, layers=["layer1", "output_3"], steps=[-1, 0, 2])
        assert part.feature_steps.tolist() == [0, 2, 4]
        assert torch.equal(part.features["layer1"], full.features["layer1"][[0, 2, 4]])
        assert torch.equal(part.features["output_3"], full.features["layer3"][[0, 2, 4]])
        # Given buffers [B, S, ...] are written in place (any prior content overwritten,
        # zeros at kept steps before the layer is active).
        buf = {"layer3": torch.full((7, 3, 512, 1, 1), float("nan"))}
        out = model.forward_timesteps(images, layers=["layer3"], steps=slice(0, 5, 2), buffers=buf)
        assert out.features["layer3"].data_ptr() == buf["layer3"].data_ptr()
        assert torch.equal(buf["layer3"].transpose(0, 1), full.features["layer3"][[0, 2, 4]])
        assert torch.count_nonzero(buf["layer3"][:, :2]) == 0
        with pytest.raises(StepOutOfRangeError, match="outside the clock"):
            model.forward_timesteps(images, layers="layer0", steps=[5])
    assert model.resolve_steps(slice(None, None, -2), 5) == [0, 2, 4]
    assert model.resolve_layers(["output_1", "layer1", "layer0"]) == ["layer1", "layer0"]
    shapes = model.layer_shapes(32, 32)
    assert shapes == {"layer0": (64, 8, 8), "layer1": (128, 4, 4), "layer2": (256, 2, 2),
                      "layer3": (512, 1, 1)}  # fmt: skip
