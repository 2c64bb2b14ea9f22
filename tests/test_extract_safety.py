"""Extraction must never hand a researcher wrong data silently (issue 12, cases 1-6).

Each test tries what a careless or unlucky user does: a trained name without weights, changed
images under the same names, odd indices into a lazy file, ``overwrite`` on somebody else's
folder, a full disk, bad arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _small_models import small_blt
from hypothesis import given, settings
from hypothesis import strategies as st

import blt_models as bm
from blt_models.cli import main as cli_main
from blt_models.errors import BltModelsError
from blt_models.extract import extract_features, load_features

SAMPLES = Path(bm.__file__).parent / "samples" / "fashion_mnist"
T = 5


def small_model() -> bm.ClockedModel:
    return small_blt(T)


@pytest.fixture(scope="module")
def model() -> bm.ClockedModel:
    return small_model()


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "stimuli"
    out.mkdir()
    for i in range(5):
        shutil.copy(SAMPLES / f"test0000{i}.png", out / f"img{i}.png")
    return out


def tensors_sha256(model: torch.nn.Module) -> str:
    """The recipe of docs/extraction.md: the state dict sorted by name, a JSON line per tensor,
    then its row-major bytes."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        h.update(json.dumps([name, dtype, list(t.shape)]).encode() + b"\n")
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# ------------------------------------------------------------------ 1. a trained name, untrained
def test_name_with_tag_extracts_its_weights(folder, tmp_path):
    name = "blt_bl_tiny.fashion_mnist"
    trained = bm.create_model(name, pretrained=True).eval()
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    res = extract_features(name, x, layers="layer3", steps=[-1], progress=False)
    with torch.inference_mode():
        ref = trained.forward_timesteps(x, layers=["layer3"]).features["layer3"][-1]
    torch.testing.assert_close(res["layer3"][:, 0], ref, rtol=1e-4, atol=1e-5)
    meta = res.metadata
    assert meta["pretrained"] is True
    assert "blt_bl_tiny.fashion_mnist.safetensors" in meta["weights_source"]
    assert meta["weights_sha256"] == tensors_sha256(trained)

    # The CLI: a name with a tag means its weights, without --pretrained.
    out = tmp_path / "cli.h5"
    argv = ["extract", name, str(folder), "--layers", "layer3", "--steps", "-1", "--out",
            str(out), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    meta = load_features(out).metadata
    assert meta["pretrained"] is True and meta["weights_sha256"] == tensors_sha256(trained)


def test_architecture_of_a_tag_without_weights_claims_no_training():
    untrained = bm.create_model("blt_bl_tiny.fashion_mnist")  # the setup, not its weights
    cfg = untrained.pretrained_cfg
    assert cfg.sha256 is None and not cfg.metrics and cfg.training_data is None
    assert not cfg.has_weights
    x = torch.randn(2, 1, 32, 32)
    res = extract_features(untrained, x, layers="layer0", steps=[0], progress=False)
    meta = res.metadata
    assert meta["pretrained"] is False and meta["weights_source"] is None
    assert meta["model"]["pretrained_cfg"]["sha256"] is None
    assert meta["model"]["pretrained_cfg"]["metrics"] == {}
    assert meta["weights_sha256"] == tensors_sha256(untrained)
    # A tag whose weights cannot be had fails with the usual clear error.
    with pytest.raises(bm.WeightsUnavailableError, match="checkpoint_path="):
        extract_features("blt_bl.vggface2", torch.randn(1, 3, 64, 64), progress=False)


def test_weights_not_from_the_tag_are_not_called_pretrained(tmp_path):
    """A checkpoint file, weights loaded or edited after create_model: the file names what the
    weights are, never the tag's published file."""
    name = "blt_bl_tiny.fashion_mnist"
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))

    def provenance(model):
        meta = extract_features(model, x, layers="layer3", steps=[-1], progress=False).metadata
        assert meta["weights_sha256"] == tensors_sha256(model)
        return meta["pretrained"], meta["weights_source"]

    ck = tmp_path / "ck.pth"
    torch.save(bm.create_model(name, pretrained=False).state_dict(), ck)
    from_file = bm.create_model(name, checkpoint_path=ck)
    assert provenance(from_file) == (False, f"checkpoint_path {ck}")
    assert from_file.pretrained_cfg.sha256 is None and not from_file.pretrained_cfg.metrics

    published = bm.create_model(name, pretrained=True)
    assert provenance(published)[0] is True
    published.load_state_dict(torch.load(ck, weights_only=True))
    pretrained, source = provenance(published)
    assert pretrained is False and "then changed" in source and "safetensors" in source

    edited = bm.create_model(name, pretrained=True)
    with torch.no_grad():
        next(edited.parameters()).mul_(1.5)
    assert provenance(edited)[0] is False
    # The run's own layout and mode changes change no weights: a second run says the same.
    again = bm.create_model(name, pretrained=True)
    assert provenance(again)[0] is True
    assert provenance(again)[0] is True

    # A reference training checkpoint names its file too (not null, which means random init).
    import argparse

    small = bm.create_model("blt_bl", num_layers=4, num_classes=5, in_chans=1, timesteps=5)
    args = argparse.Namespace(model="blt_bl", num_layers=4, recurrent_steps=5, pool="max",
                              num_classes=5, img_channels=1)  # fmt: skip
    ref = tmp_path / "ref.pth"
    torch.save({"model": small.state_dict(), "args": args}, ref)
    loaded = bm.load_reference_checkpoint(ref, in_chans=1)
    assert provenance(loaded) == (False, f"checkpoint_path {ref}")


def test_pruned_published_weights_are_still_called_pretrained(tmp_path):
    """prune_intermediate_layers (and features_only, which prunes or drops the head) only removes
    weights: the file said "pretrained": false and "then changed (these weights are not the
    ones loaded from it)" about weights that were exactly the published ones."""
    from blt_models.extract.plan import weights_provenance, weights_sha256

    def provenance(model):
        return weights_provenance(model, weights_sha256(model))

    name = "blt_bl_tiny.fashion_mnist"
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    pruned = bm.create_model(name, pretrained=True)
    with torch.no_grad():
        full = pruned.forward_timesteps(x, layers="layer1").features
    assert pruned.prune_intermediate_layers([1]) == [1]
    meta = extract_features(pruned, x, layers="layer1", memory_format="contiguous",
                            progress=False)  # fmt: skip
    assert meta.metadata["pretrained"] is True
    assert "then changed" not in meta.metadata["weights_source"]
    assert meta.metadata["model"]["config"]["num_layers"] == 2  # the file says it was pruned
    torch.testing.assert_close(meta["layer1"].transpose(0, 1), full["layer1"])
    feats = bm.create_model(name, pretrained=True, features_only=True, out_indices=[2])
    assert provenance(feats.model)[0] is True
    # Weights changed before pruning stay changed.
    edited = bm.create_model(name, pretrained=True)
    with torch.no_grad():
        edited.norm_0.weight.mul_(1.5)
    edited.prune_intermediate_layers([1])
    assert provenance(edited)[0] is False
    # A model that cannot be pruned loses only its head in features_only: same record.
    small = bm.create_model("blt_bt", num_layers=4, channels=(32, 32, 32, 32),
                            sizes=(16, 8, 4, 2), nominal_size=64, num_classes=3)  # fmt: skip
    ck = tmp_path / "bt.pth"
    torch.save(small.state_dict(), ck)
    kwargs = dict(num_layers=4, channels=(32, 32, 32, 32), sizes=(16, 8, 4, 2), nominal_size=64,
                  num_classes=3, checkpoint_path=ck)  # fmt: skip
    feats = bm.create_model("blt_bt", features_only=True, out_indices=[1], **kwargs)
    assert len(feats.model.layer_names) == 4 and feats.model.num_classes == 0
    assert provenance(feats.model) == (False, f"checkpoint_path {ck}")


# ------------------------------------------------------------------ 2. stale results on resume
class FailingImages(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, fail_at: int | None) -> None:
        self.images, self.fail_at = images, fail_at

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.fail_at is not None and i >= self.fail_at:
            raise RuntimeError("disk unplugged")
        return self.images[i]


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_changed_tensor_is_not_reused(model, images, tmp_path, suffix):
    out = tmp_path / f"f{suffix}"
    kw = dict(layers="layer1", out=out, batch_size=2, progress=False)
    extract_features(model, images, **kw)
    changed = images.clone()
    changed[3, 0, 5, 5] += 1.0
    with pytest.raises(bm.OutputMismatchError, match=r"image '3'.*overwrite=True"):
        extract_features(model, changed, **kw)
    res = extract_features(model, changed, overwrite=True, **kw).load()
    fresh = extract_features(model, changed, layers="layer1", batch_size=2, progress=False)
    assert torch.equal(res["layer1"], fresh["layer1"])
    # A partial file with a changed image among those written is not continued either.
    part = tmp_path / f"p{suffix}"
    kw["out"] = part
    with pytest.raises(RuntimeError, match="disk unplugged"):
        extract_features(model, FailingImages(images, 5), **kw)
    assert load_features(part).num_images == 4
    with pytest.raises(bm.OutputMismatchError, match=r"image '3'.*overwrite=True"):
        extract_features(model, FailingImages(changed, None), **kw)


def test_replaced_png_is_not_reused(model, folder, tmp_path):
    out = tmp_path / "f.zarr"
    kw = dict(layers="layer1", out=out, batch_size=2, progress=False)
    extract_features(model, folder, **kw)
    shutil.copy(SAMPLES / "test00042.png", folder / "img1.png")  # same name, other picture
    with pytest.raises(bm.OutputMismatchError, match=r"img1\.png.*overwrite=True"):
        extract_features(model, folder, **kw)
    # Same bytes, new modification time (a copy): still the same image, resumes fine.
    shutil.copy(SAMPLES / "test00042.png", folder / "img1.png")
    extract_features(model, folder, overwrite=True, **kw)
    os.utime(folder / "img2.png", (1, 1))
    assert extract_features(model, folder, **kw).num_images == 5


class Stream(torch.utils.data.IterableDataset):
    """A source of unknown length (an IterableDataset), which no cheap fingerprint covers."""

    def __init__(self, images: torch.Tensor, fail_at: int | None = None) -> None:
        self.images, self.fail_at = images, fail_at

    def __iter__(self):
        for i, image in enumerate(self.images):
            if i == self.fail_at:
                raise RuntimeError("disk unplugged")
            yield image


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_stream_of_another_length_is_not_reused(model, images, tmp_path, suffix):
    out = tmp_path / f"s{suffix}"
    kw = dict(layers="layer1", out=out, batch_size=3, progress=False)
    extract_features(model, Stream(images), **kw)
    with pytest.raises(bm.OutputMismatchError, match=r"holds 7 images.*gives only 5"):
        extract_features(model, Stream(images[:5]), **kw)
    longer = torch.cat([images, images[:2]])
    with pytest.raises(bm.OutputMismatchError, match=r"complete with 7 images.*gives more"):
        extract_features(model, Stream(longer), **kw)
    # A partial file resumed from a stream that ends inside the rows already written.
    part = tmp_path / f"p{suffix}"
    kw["out"] = part
    with pytest.raises(RuntimeError, match="disk unplugged"):
        extract_features(model, Stream(images, fail_at=6), **kw)
    assert load_features(part).num_images == 6
    with pytest.raises(bm.OutputMismatchError, match=r"holds 6 images.*gives only 5"):
        extract_features(model, Stream(images[:5]), **kw)
    assert load_features(part).num_images == 6  # untouched, not marked complete


def test_resume_without_the_image_ids_of_the_file_is_refused(model, images, tmp_path):
    out = tmp_path / "ids.h5"
    ids = list("abcdefg")
    kw = dict(layers="layer1", out=out, batch_size=2, progress=False)
    with pytest.raises(RuntimeError, match="disk unplugged"):
        extract_features(model, FailingImages(images, 4), image_ids=ids, **kw)
    with pytest.raises(bm.OutputMismatchError, match="not the first 4 images"):
        extract_features(model, FailingImages(images, None), **kw)
    assert extract_features(model, FailingImages(images, None), image_ids=ids, **kw).image_ids == ids
    # Too few ids for a stream: named, not a shape error deep inside.
    with pytest.raises(bm.errors.InvalidArgumentError, match="2 image ids"):
        extract_features(model, Stream(images), image_ids=["a", "b"], layers="layer1",
                         progress=False)  # fmt: skip


def test_float16_overflow_is_refused_not_stored_as_inf(tmp_path):
    cornet = bm.create_model("cornet_z", num_classes=3)  # no normalisation: features scale
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(bm.errors.InvalidArgumentError, match="float16's range"):
        extract_features(cornet, x * 1e6, layers="V1", store_dtype="float16",
                         out=tmp_path / "a.h5", progress=False)  # fmt: skip
    res = extract_features(cornet, x, layers="V1", store_dtype="float16", progress=False)
    assert res["V1"].dtype == torch.float16 and torch.isfinite(res["V1"]).all()


def test_shuffling_dataloader_is_refused(model, images):
    from torch.utils.data import DataLoader, TensorDataset

    with pytest.raises(bm.errors.InvalidArgumentError, match="RandomSampler.*shuffle=False"):
        extract_features(model, DataLoader(TensorDataset(images), batch_size=2, shuffle=True),
                         layers="layer1", progress=False)  # fmt: skip
    ordered = DataLoader(TensorDataset(images), batch_size=2)
    res = extract_features(model, ordered, layers="layer1", progress=False)
    ref = extract_features(model, images, layers="layer1", batch_size=2, progress=False)
    assert res.image_ids == ref.image_ids and torch.equal(res["layer1"], ref["layer1"])


def test_second_review_cases(model, images, tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    # A batch_sampler of index lists reorders the rows: refused like shuffle=True.
    with pytest.raises(bm.errors.InvalidArgumentError, match="shuffle=False"):
        extract_features(model, DataLoader(TensorDataset(images), batch_sampler=[[3, 1], [0, 2]]),
                         layers="layer1", progress=False)  # fmt: skip
    # A BatchSampler of its own may reorder batches (bucketing): refused too.
    class Buckets(torch.utils.data.BatchSampler):
        pass

    sequential = torch.utils.data.SequentialSampler(images)
    with pytest.raises(bm.errors.InvalidArgumentError, match="Buckets"):
        extract_features(model, DataLoader(TensorDataset(images),
                                           batch_sampler=Buckets(sequential, 2, False)),
                         layers="layer1", progress=False)  # fmt: skip
    # An IterableDataset run by several workers gives each image once per worker.
    with pytest.raises(bm.errors.InvalidArgumentError, match="num_workers"):
        extract_features(model, Stream(images), layers="layer1", num_workers=2, progress=False)
    # float16 computation that overflows is refused even when stored as float32.
    cornet = bm.create_model("cornet_z", num_classes=3)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 1e6
    with pytest.raises(bm.errors.InvalidArgumentError, match="float16's range"):
        extract_features(cornet, x, layers="V1", dtype="float16", store_dtype="float32",
                         progress=False)  # fmt: skip
    # An exact cast for the run keeps published weights published.
    tiny = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True)
    meta = extract_features(tiny, torch.rand(2, 1, 32, 32), layers="layer1", dtype="float64",
                            progress=False).metadata  # fmt: skip
    assert meta["pretrained"] is True and "then changed" not in meta["weights_source"]


def test_transform_is_recorded_applied_and_checked(model, folder, tmp_path, images):
    import torchvision.transforms as T

    def tf(interpolation):
        return T.Compose([T.Grayscale(), T.Resize(32, interpolation), T.ToTensor()])

    # A folder whose first image is unaffected by the change of interpolation (already 32 px).
    from PIL import Image

    Image.open(folder / "img0.png").resize((32, 32)).save(folder / "img0.png")
    for i in range(1, 5):
        Image.open(folder / f"img{i}.png").resize((48, 48)).save(folder / f"img{i}.png")
    out = tmp_path / "t.h5"
    kw = dict(layers="layer1", out=out, batch_size=2, progress=False)
    extract_features(model, folder, transform=tf(T.InterpolationMode.BILINEAR), **kw)
    with pytest.raises(bm.OutputMismatchError, match="transform: the custom transform"):
        extract_features(model, folder, transform=tf(T.InterpolationMode.NEAREST), **kw)
    # A lambda's repr carries its address, which differs between runs; it is recorded without.
    meta = extract_features(model, images, layers="layer1", progress=False).metadata
    assert meta["transform"] is None and meta["data_config"] is None
    # Where the transform would not run, it is refused instead of recorded as applied.
    for source in (images, torch.utils.data.TensorDataset(images), Stream(images)):
        with pytest.raises(bm.errors.InvalidArgumentError, match="drop transform="):
            extract_features(model, source, transform=T.Normalize([0.5], [0.1]), progress=False)
    # A Dataset of tensors gets no record of a preprocessing it never had.
    meta = extract_features(model, torch.utils.data.TensorDataset(images), layers="layer1",
                            progress=False).metadata  # fmt: skip
    assert meta["data_config"] is None
    # Sources that name their images refuse image_ids= instead of ignoring it.
    with pytest.raises(bm.errors.InvalidArgumentError, match="drop image_ids="):
        extract_features(model, folder, image_ids=list("vwxyz"), progress=False)


def test_zarr_store_missing_a_chunk_is_refused_not_read_as_zeros(model, images, tmp_path):
    out = tmp_path / "f.zarr"
    # steps=[0]: layer3 is inactive at step 0, so its chunks are all zeros, which zarr would
    # skip writing by default; every chunk is written, so a missing one means damage.
    kw = dict(layers=["layer1", "layer3"], steps=[0], out=out, batch_size=2, progress=False)
    extract_features(model, images, **kw)
    assert torch.count_nonzero(load_features(out).load()["layer3"]) == 0
    chunk = next(p for p in sorted((out / "features" / "layer1" / "c").rglob("*")) if p.is_file())
    chunk.unlink()  # an interrupted copy or sync
    with pytest.raises(bm.OutputMismatchError, match=r"lacks the chunk file .* truncated"):
        load_features(out)
    with pytest.raises(bm.OutputMismatchError, match="overwrite=True"):
        extract_features(model, images, **kw)
    extract_features(model, images, overwrite=True, **kw)
    lazy = load_features(out, lazy=True)["layer1"]
    next(p for p in sorted((out / "features" / "layer1" / "c").rglob("*")) if p.is_file()).unlink()
    with pytest.raises(bm.OutputMismatchError, match="lost the chunk"):
        lazy[:2]
    extract_features(model, images, overwrite=True, **kw)
    (out / "image_ids" / "c" / "0").unlink()
    with pytest.raises(bm.OutputMismatchError, match=r"lacks the chunk file image_ids/c/0"):
        load_features(out, lazy=True)


# ------------------------------------------------------------------ 3. lazy indexing = numpy
@pytest.fixture(scope="module")
def lazy_file(tmp_path_factory):
    model = small_model()
    x = torch.randn(9, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    path = tmp_path_factory.mktemp("lazy") / "f.h5"
    extract_features(model, x, layers="layer2", pool="avg", out=path, batch_size=4,
                     progress=False)  # fmt: skip
    zpath = path.with_suffix(".zarr")
    extract_features(model, x, layers="layer2", pool="avg", out=zpath, batch_size=4,
                     progress=False)  # fmt: skip
    return path, zpath, load_features(path)["layer2"].numpy()


N_ROWS = 9
first_index = st.one_of(
    st.integers(-N_ROWS, N_ROWS - 1),
    st.builds(
        slice,
        st.none() | st.integers(-12, 12),
        st.none() | st.integers(-12, 12),
        st.none() | st.integers(-4, 4).filter(lambda s: s != 0),
    ),
    st.lists(st.integers(-N_ROWS, N_ROWS - 1), max_size=12).map(lambda r: np.asarray(r, np.int64)),
    st.lists(st.integers(0, N_ROWS - 1), max_size=12),
    st.lists(st.booleans(), min_size=N_ROWS, max_size=N_ROWS).map(np.asarray),
    st.lists(st.booleans(), min_size=N_ROWS, max_size=N_ROWS).map(torch.tensor),
    st.lists(st.integers(-N_ROWS, N_ROWS - 1), min_size=1, max_size=5).map(torch.tensor),
)
rest_index = st.one_of(
    st.just(()),
    st.tuples(st.integers(-T, T - 1)),
    st.tuples(st.builds(slice, st.none() | st.integers(-6, 6), st.none(), st.integers(1, 3))),
    # What the files cannot read directly (numpy semantics on the rows read): negative steps,
    # integer arrays on the step axis (combined with a row slice, e.g. lazy[::-1, [1, 2]]).
    st.tuples(st.builds(slice, st.none() | st.integers(-6, 6), st.none() | st.integers(-6, 6),
                        st.integers(-3, -1))),  # fmt: skip
    st.tuples(st.lists(st.integers(-T, T - 1), min_size=1, max_size=4).map(np.asarray)),
    st.tuples(st.integers(-T, T - 1), st.integers(-3, 2)),
)


def _as_numpy_index(index):
    return index.numpy() if isinstance(index, torch.Tensor) else index


@settings(max_examples=150, deadline=None)
@given(first=first_index, rest=rest_index)
def test_lazy_indexing_follows_numpy(lazy_file, first, rest):
    path, zpath, full = lazy_file
    try:
        expected = full[(_as_numpy_index(first), *rest)]
    except IndexError:  # numpy refuses (e.g. index arrays that do not broadcast): so do we
        for p in (path, zpath):
            with pytest.raises(bm.errors.FeatureIndexError):
                load_features(p, lazy=True)["layer2"][(first, *rest)]
        return
    for p in (path, zpath):
        lazy = load_features(p, lazy=True)["layer2"]
        got = lazy[(first, *rest)] if rest else lazy[first]
        assert tuple(got.shape) == expected.shape
        np.testing.assert_array_equal(got.numpy(), expected)


def test_lazy_indexing_edges(lazy_file):
    path, zpath, full = lazy_file
    for p in (path, zpath):
        lazy = load_features(p, lazy=True)["layer2"]
        assert lazy[0, 0, 0].shape == () and float(lazy[0, 0, 0]) == full[0, 0, 0]  # a scalar
        # One element through a negative step (numpy: "contiguous" with a negative stride).
        np.testing.assert_array_equal(lazy[0:1, ::-1][:, :1].numpy(), full[0:1, ::-1][:, :1])
        np.testing.assert_array_equal(lazy[0, -1:-2:-1, 0].numpy(), full[0, -1:-2:-1, 0])
        for bad in ((slice(None), T), (0, -T - 1), (0, 0, 0, 0)):
            with pytest.raises(bm.errors.FeatureIndexError):
                lazy[bad]


def test_lazy_indexing_refuses_what_numpy_refuses(lazy_file):
    path, _, full = lazy_file
    lazy = load_features(path, lazy=True)["layer2"]
    for bad in (1.5, np.float64(2.0), [0.5, 1.0], np.ones(3, dtype=bool), torch.ones(10) > 0):
        with pytest.raises(IndexError):
            lazy[bad]
    for bad in (9, -10, [0, 9], np.array([-10])):
        with pytest.raises(IndexError, match="out of range"):
            lazy[bad]
    np.testing.assert_array_equal(lazy[..., 0].numpy(), full[..., 0])


# ------------------------------------------------------------------ 4. overwrite deletes only ours
def test_overwrite_refuses_what_is_not_a_feature_store(model, images, tmp_path):
    mine = tmp_path / "thesis.zarr"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("three years of work")
    with pytest.raises(bm.OutputMismatchError, match=r"chapter1\.tex"):
        extract_features(model, images, layers="layer0", out=mine, overwrite=True, progress=False)
    assert (mine / "chapter1.tex").read_text() == "three years of work"
    foreign = tmp_path / "recordings.h5"
    with h5py.File(foreign, "w") as f:
        f["spikes"] = np.arange(5)
    with pytest.raises(bm.OutputMismatchError, match="spikes"):
        extract_features(model, images, layers="layer0", out=foreign, overwrite=True,
                         progress=False)  # fmt: skip
    with h5py.File(foreign, "r") as f:
        assert f["spikes"][:].tolist() == [0, 1, 2, 3, 4]
    # Our own stores are replaced.
    for out in (tmp_path / "a.zarr", tmp_path / "a.h5"):
        extract_features(model, images, layers="layer0", out=out, progress=False)
        res = extract_features(model, images[:3], layers="layer1", out=out, overwrite=True,
                               progress=False)  # fmt: skip
        assert res.layers == ["layer1"] and res.num_images == 3


# ------------------------------------------------------------------ 5. a full disk
def _whole(model, images, tmp_path, kw):
    ref = extract_features(model, images, out=tmp_path / "whole.h5", **kw)
    return ref.load()


def test_write_error_leaves_a_resumable_file(model, images, tmp_path, monkeypatch):
    kw = dict(layers=["layer0", "layer2"], batch_size=2, progress=False)
    whole = _whole(model, images, tmp_path, kw)
    out = tmp_path / "full.h5"
    real = h5py.Dataset.__setitem__
    calls = {"n": 0}

    def failing(self, key, value):
        if self.name.startswith("/features/layer2"):
            calls["n"] += 1
            if calls["n"] == 3:  # the third batch of layer2: the disk is full
                raise OSError(28, "No space left on device")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", failing)
    with pytest.raises(OSError, match=str(out)) as info:
        extract_features(model, images, out=out, **kw)
    assert isinstance(info.value, BltModelsError)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", real)
    part = load_features(out)
    assert part.num_images == 4 and not part.metadata["complete"]
    for name in part.layers:
        assert torch.equal(part[name], whole[name][:4])
    res = extract_features(model, images, out=out, **kw).load()
    for name in res.layers:
        assert torch.equal(res[name], whole[name])


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_full_disk_leaves_a_resumable_file(model, images, tmp_path, small_disk, suffix):
    """A real full disk (a 4 MiB tmpfs, filled with ballast so that about 2/3 of the output
    fits): a clear OSError naming the file, every complete batch kept, then a resume."""
    kw = dict(layers="layer0", batch_size=3, progress=False)
    whole = extract_features(model, images, out=tmp_path / f"whole{suffix}", **kw).load()
    free = shutil.disk_usage(small_disk).free
    target = _size(tmp_path / f"whole{suffix}") * 2 // 3 + (256 << 10 if suffix == ".h5" else 0)
    (small_disk / "ballast").write_bytes(b"\1" * (free - target))
    out = small_disk / f"f{suffix}"
    with pytest.raises(OSError, match=str(out)) as info:
        extract_features(model, images, out=out, **kw)
    assert isinstance(info.value, BltModelsError) and "space" in str(info.value)
    part = load_features(out)
    assert part.num_images < 7 and part.num_images % 3 == 0 and not part.metadata["complete"]
    assert torch.equal(part["layer0"], whole["layer0"][: part.num_images])
    (small_disk / "ballast").unlink()
    res = extract_features(model, images, out=out, **kw).load()
    assert torch.equal(res["layer0"], whole["layer0"])


# ------------------------------------------------------------------ 6. named errors
def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(layers=[1]), bm.UnknownLayerError, "layer names"),
        (dict(layers=3), bm.UnknownLayerError, "layer names"),
        (dict(layers=[]), bm.UnknownLayerError, "no layers"),
        (dict(steps=slice(5, 2)), bm.StepOutOfRangeError, "no steps"),
        (dict(steps=True), bm.StepOutOfRangeError, "integers"),
        (dict(steps=[1.5]), bm.StepOutOfRangeError, "integers"),
        (dict(dtype="float8"), bm.errors.InvalidArgumentError, "dtype"),
        (dict(dtype=torch.int32), bm.errors.InvalidArgumentError, "dtype"),
        (dict(batch_size=2.5), bm.errors.InvalidArgumentError, "batch_size"),
        (dict(batch_size=0), bm.errors.InvalidArgumentError, "batch_size"),
        (dict(pool=10**9), bm.errors.InvalidArgumentError, r"wider than.*layer0"),
        (dict(pool="max"), bm.errors.InvalidArgumentError, "pool"),
        (dict(timesteps=2.0), bm.TimestepsError, "timesteps"),
    ],
)
def test_bad_arguments_get_named_errors(model, images, kwargs, error, match):
    kwargs = {"layers": "layer0", **kwargs}
    with pytest.raises(error, match=match):
        extract_features(model, images, progress=False, **kwargs)


def test_zero_dimensional_steps_are_integers(model, images):
    import numpy as np

    for step in (torch.tensor(-1), np.array(T - 1), np.int64(-1)):
        assert model.resolve_steps(step, T) == [T - 1]
    res = extract_features(model, images, layers="layer1", steps=torch.tensor(-1), progress=False)
    assert res.steps.tolist() == [T - 1]
    for bad in (torch.tensor(True), torch.tensor(1.5), np.array(2.0)):
        with pytest.raises(bm.StepOutOfRangeError, match="integers"):
            model.resolve_steps(bad, T)


def test_bad_sources_and_outputs_get_named_errors(model, images, tmp_path):
    kw = dict(layers="layer0", progress=False)
    with pytest.raises(bm.errors.InvalidArgumentError, match="dict"):
        extract_features(model, {"a": images}, **kw)
    text = tmp_path / "x.h5"
    text.write_text("hello")
    with pytest.raises(bm.OutputMismatchError, match="not an HDF5 file"):
        extract_features(model, images, out=text, **kw)
    with pytest.raises(bm.OutputMismatchError, match="not an HDF5 file"):
        extract_features(model, images, out=text, overwrite=True, **kw)
    assert text.read_text() == "hello"
    folder = tmp_path / "d.h5"
    folder.mkdir()
    with pytest.raises(bm.OutputMismatchError, match="directory"):
        extract_features(model, images, out=folder, **kw)
    good = tmp_path / "t.h5"
    extract_features(model, images, out=good, **kw)
    good.write_bytes(good.read_bytes()[:3000])  # a killed copy
    with pytest.raises(bm.OutputMismatchError, match=r"truncated.*overwrite=True"):
        extract_features(model, images, out=good, **kw)
    with pytest.raises(bm.OutputMismatchError, match=r"truncated"):
        load_features(good)
    assert extract_features(model, images, out=good, overwrite=True, **kw).num_images == 7


def test_second_writer_of_an_hdf5_file_is_named(model, images, tmp_path):
    out = tmp_path / "busy.h5"
    extract_features(model, images[:2], layers="layer0", out=out, progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, time; f = h5py.File({str(out)!r}, 'a'); "
         "print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(bm.errors.OutputInUseError, match="another process"):
            extract_features(model, images, layers="layer0", out=out, progress=False)
    finally:
        holder.kill()
        holder.wait()


def test_huge_image_is_named(model, folder):
    _png_header_only(folder / "img3.png", 20000, 20000)
    with pytest.raises(bm.UnreadableImageError, match=r"img3\.png.*pixels"):
        extract_features(model, folder, layers="layer0", progress=False)


def test_forward_timesteps_unknown_layer_is_the_extraction_error(model, images):
    with pytest.raises(bm.UnknownLayerError, match="Did you mean"):
        model.forward_timesteps(images, layers=["layer9"])
    with pytest.raises(KeyError):
        model.forward_timesteps(images, layers="nope")
