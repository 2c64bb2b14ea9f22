"""Extraction across processes (issue 17): shards per rank joined by HDF5 virtual datasets, equal
byte for byte to a one-process run, resumable per rank, and never silently incomplete."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _small_models import small_blt
from hypothesis import given, settings
from hypothesis import strategies as st

import blt_models as bm
from blt_models.errors import InvalidArgumentError, OutputMismatchError
from blt_models.extract import extract_features, load_features
from blt_models.extract.shards import split_rows
from blt_models.extract.stores import FileStore
from blt_models.stimuli import BackwardMask

SAMPLES = Path(bm.__file__).parent / "samples" / "fashion_mnist"
T = 5


def small_model(seed: int = 0) -> bm.ClockedModel:
    return small_blt(T, seed=seed)


@pytest.fixture(scope="module")
def model() -> bm.ClockedModel:
    return small_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(11, 1, 32, 32, generator=torch.Generator().manual_seed(3))


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a feature file as plain h5py reads it (virtual datasets included)."""
    with h5py.File(path, "r") as f:
        out = {f"features/{k}": f["features"][k][:] for k in f["features"]}
        for key in ("image_ids", "fingerprints", "steps"):
            out[key] = f[key][:]
    return out


def assert_same_arrays(a: Path, b: Path) -> None:
    left, right = arrays(a), arrays(b)
    assert left.keys() == right.keys()
    for key in left:
        assert left[key].dtype == right[key].dtype, key
        if left[key].dtype == object:  # strings
            assert left[key].tolist() == right[key].tolist(), key
        else:
            assert left[key].tobytes() == right[key].tobytes(), key


def run_ranks(model, x, out: Path, world: int, **kw):
    return [
        extract_features(
            model, x, out=out, batch_size=2, progress=False, rank=r, world_size=world, **kw
        )  # fmt: skip
        for r in range(world)
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(1, 64), st.integers(1, 16))
def test_split_rows_cover_the_source_in_whole_batches(n: int, batch: int, world: int) -> None:
    ranges = split_rows(n, batch, world)
    assert len(ranges) == world and ranges[0][0] == 0 and ranges[-1][1] == n
    for (a, b), (c, _) in zip(ranges, ranges[1:], strict=False):
        assert b == c and a <= b
    for a, b in ranges:
        assert a % batch == 0 and (b % batch == 0 or b == n)
    sizes = [-(-(b - a) // batch) for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1  # whole batches, as even as possible


def test_ranks_join_byte_for_byte_equal_to_one_process(model, images, tmp_path: Path) -> None:
    one = extract_features(model, images, out=tmp_path / "one.h5", batch_size=2, progress=False)
    first, joined = run_ranks(model, images, tmp_path / "two.h5", 2)
    assert first.metadata["shard"]["rows"] == [0, 6] and first.num_images == 6
    assert joined.num_images == 11 and joined.image_ids == one.image_ids
    assert joined.metadata["complete"] and joined.metadata["shards"]["world_size"] == 2
    assert_same_arrays(tmp_path / "one.h5", tmp_path / "two.h5")
    with h5py.File(tmp_path / "two.h5", "r") as f:
        assert f["features/layer0"].is_virtual  # no copy of the data
        assert f["features/layer2"].attrs["first_step"] == 2
    for name, lazy in load_features(tmp_path / "two.h5", lazy=True).features.items():
        assert torch.equal(lazy[[10, 0, 5]], one.features[name][[10, 0, 5]])


def test_three_ranks(model, images, tmp_path: Path) -> None:
    results = run_ranks(model, images, tmp_path / "three.h5", 3)
    assert [r.num_images for r in results] == [4, 4, 11]  # the last rank to finish joins
    assert results[1].metadata["shard"]["rows"] == [4, 8]


def test_more_ranks_than_batches(model, images, tmp_path: Path) -> None:
    x = images[:3]  # 2 batches of 2, 4 ranks: two ranks have nothing to do
    one = extract_features(model, x, out=tmp_path / "one.h5", batch_size=2, progress=False)
    results = run_ranks(model, x, tmp_path / "four.h5", 4)
    assert results[0].num_images == 0 and results[0].metadata["shard"]["rows"] == [0, 0]
    assert results[-1].num_images == 3
    assert sorted(p.name for p in (tmp_path / "four.h5.shards").iterdir()) == [
        "rank-00001-of-00004.h5", "rank-00003-of-00004.h5",
    ]  # fmt: skip
    assert_same_arrays(tmp_path / "one.h5", tmp_path / "four.h5")
    assert one.num_images == 3


def test_stimulus_noise_follows_the_image_not_the_rank(model, images, tmp_path: Path) -> None:
    """Mask noise is seeded by an image's position in the whole source, not in its shard."""
    protocol = BackwardMask(timesteps=T, soa=2, duration=1, mask="noise", seed=4)
    extract_features(model, images, out=tmp_path / "one.h5", batch_size=2, progress=False,
                     stimulus=protocol)  # fmt: skip
    run_ranks(model, images, tmp_path / "two.h5", 2, stimulus=protocol)
    assert_same_arrays(tmp_path / "one.h5", tmp_path / "two.h5")


def test_a_rank_that_dies_leaves_the_others_valid_and_resumes(
    model, images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "feats.h5"
    extract_features(model, images, out=tmp_path / "one.h5", batch_size=2, progress=False)
    extract_features(model, images, out=out, batch_size=2, progress=False, rank=0, world_size=2)

    real = FileStore.commit
    calls: list[int] = []

    def dies_after_one_batch(self, start, ids, fps, rows=None):
        calls.append(start)
        if len(calls) > 1:
            raise KeyboardInterrupt("killed")
        return real(self, start, ids, fps, rows)

    monkeypatch.setattr(FileStore, "commit", dies_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_features(model, images, out=out, batch_size=2, progress=False, rank=1,
                         world_size=2)  # fmt: skip
    monkeypatch.setattr(FileStore, "commit", real)
    assert not out.exists()  # no join while a shard is incomplete
    done = load_features(out.with_name("feats.h5.shards") / "rank-00000-of-00002.h5")
    assert done.num_images == 6 and done.metadata["complete"]  # rank 0's rows are intact
    part = load_features(out.with_name("feats.h5.shards") / "rank-00001-of-00002.h5")
    assert part.num_images == 2 and not part.metadata["complete"]

    resumed: list[int] = []
    monkeypatch.setattr(FileStore, "commit", lambda self, s, i, f, r=None: (
        resumed.append(s), real(self, s, i, f, r))[1])  # fmt: skip
    res = extract_features(model, images, out=out, batch_size=2, progress=False, rank=1,
                           world_size=2)  # fmt: skip
    assert resumed == [2, 4]  # rank 1's rows 6..10 resume after its first batch (local rows)
    assert res.num_images == 11
    assert_same_arrays(tmp_path / "one.h5", out)


def test_join_refuses_missing_or_replaced_shards(model, images, tmp_path: Path) -> None:
    out = tmp_path / "feats.h5"
    run_ranks(model, images, out, 2)

    # Moved without its shards: HDF5 itself reads zeros; we refuse, naming the shard.
    moved = tmp_path / "elsewhere" / "feats.h5"
    moved.parent.mkdir()
    shutil.copy(out, moved)
    with h5py.File(moved, "r") as f:
        assert not f["features/layer0"][:].any()  # what plain HDF5 silently gives
    with pytest.raises(OutputMismatchError, match=r"rank 0 .*is missing.*\.shards folder"):
        load_features(moved)


def test_join_checks_the_images_of_the_other_ranks(model, images, tmp_path: Path) -> None:
    """Image 8 (rank 1's rows) changes, and only rank 0 runs again: its join must not take rank
    1's old features of it."""
    out = tmp_path / "feats.h5"
    run_ranks(model, images, out, 2)
    changed = images.clone()
    changed[8] += 1
    out.unlink()  # as if the join had not been written yet
    with pytest.raises(OutputMismatchError, match=r"image '8' \(row 8\).*changed"):
        extract_features(model, changed, out=out, batch_size=2, progress=False, rank=0,
                         world_size=2)  # fmt: skip
    assert not out.exists()


class Images(torch.utils.data.Dataset):
    """A Dataset of tensors: no cheap fingerprints, so its rows are checked by reading them."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


@pytest.mark.parametrize("overwrite", [False, True])
def test_join_reads_again_the_other_ranks_dataset_images(model, images, tmp_path, overwrite):
    """A job array given another Dataset on one task (or re-run with overwrite=True on one task
    after the data changed) must not join the other task's features of the old images."""
    out = tmp_path / "feats.h5"
    kw = dict(out=out, batch_size=2, progress=False, world_size=2)
    changed = images.clone()
    changed[1:] = torch.randn(len(images) - 1, 1, 32, 32, generator=torch.Generator().manual_seed(9))
    if overwrite:  # both tasks done on the old data; only rank 0 runs again on the new
        for r in range(2):
            extract_features(model, Images(images), rank=r, **kw)
        out.unlink(missing_ok=True)
    else:  # the two tasks were given different data
        extract_features(model, Images(images), rank=1, **kw)
    with pytest.raises(OutputMismatchError, match=r"changed since rank 1"):
        extract_features(model, Images(changed), rank=0, overwrite=overwrite, **kw)
    assert not out.exists()
    # The same data on both tasks joins, byte for byte as one process.
    out2 = tmp_path / "same.h5"
    for r in range(2):
        extract_features(model, Images(images), rank=r, **dict(kw, out=out2))
    one = tmp_path / "one.h5"
    extract_features(model, Images(images), out=one, batch_size=2, progress=False)
    assert_same_arrays(out2, one)


def test_stale_join_refused_when_a_shard_changed_under_it(model, images, tmp_path) -> None:
    out = tmp_path / "feats.h5"
    run_ranks(model, images, out, 2)
    shard1 = tmp_path / "feats.h5.shards" / "rank-00001-of-00002.h5"
    with h5py.File(shard1, "a") as f:  # another run's rows under the same name
        f["fingerprints"][0] = "tensor:0000"
    with pytest.raises(OutputMismatchError, match="rank 1 .*other images"):
        load_features(out)


def test_ranks_with_different_weights_are_refused(images, tmp_path: Path) -> None:
    out = tmp_path / "feats.h5"
    extract_features(small_model(0), images, out=out, batch_size=2, progress=False, rank=0,
                     world_size=2)  # fmt: skip
    with pytest.raises(OutputMismatchError, match=r"weights_sha256.*manual_seed"):
        extract_features(small_model(1), images, out=out, batch_size=2, progress=False, rank=1,
                         world_size=2)  # fmt: skip
    assert not out.exists()


def test_existing_outputs_are_checked(model, images, tmp_path: Path) -> None:
    one = tmp_path / "one.h5"
    extract_features(model, images, out=one, batch_size=2, progress=False)
    with pytest.raises(OutputMismatchError, match="written by one process"):
        extract_features(model, images, out=one, batch_size=2, progress=False, rank=0,
                         world_size=2)  # fmt: skip
    joined = tmp_path / "two.h5"
    run_ranks(model, images, joined, 2)
    with pytest.raises(OutputMismatchError, match="written by 2 processes.*this run has 3"):
        extract_features(model, images, out=joined, batch_size=2, progress=False, rank=0,
                         world_size=3)  # fmt: skip
    with pytest.raises(OutputMismatchError, match="layers"):
        extract_features(model, images, out=joined, batch_size=2, progress=False, rank=0,
                         world_size=2, layers=["layer0"])  # fmt: skip
    # A one-process run with the same settings reads the join back (and checks its shards).
    again = extract_features(model, images, out=joined, batch_size=2, progress=False)
    assert again.num_images == 11 and again.metadata["shards"]["world_size"] == 2
    # overwrite replaces the join (ours) but nothing else
    (tmp_path / "notes.h5").write_text("mine")
    with pytest.raises(OutputMismatchError, match="not an HDF5 file"):
        extract_features(model, images, out=tmp_path / "notes.h5", batch_size=2,
                         progress=False, rank=0, world_size=2, overwrite=True)  # fmt: skip
    assert (tmp_path / "notes.h5").read_text() == "mine"


def test_bad_arguments_across_ranks(model, images, tmp_path: Path) -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=2)
    cases = [
        (dict(out=tmp_path / "f.zarr", rank=0, world_size=2), InvalidArgumentError, "HDF5"),
        (dict(out=None, rank=0, world_size=2), InvalidArgumentError, "needs out="),
        (dict(out=tmp_path / "f.h5", rank=2, world_size=2), InvalidArgumentError, "0 .. world"),
        (dict(out=tmp_path / "f.h5", rank=0), InvalidArgumentError, "both"),
        (dict(out=tmp_path / "f.h5", rank=True, world_size=2), InvalidArgumentError, "integer"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            extract_features(model, images, batch_size=2, progress=False, **kwargs)
    with pytest.raises(InvalidArgumentError, match="DataLoader"):
        extract_features(model, loader, out=tmp_path / "f.h5", progress=False, rank=0,
                         world_size=2)  # fmt: skip


def test_torchrun_environment_is_used(model, images, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = extract_features(model, images, out=tmp_path / "f.h5", batch_size=2, progress=False)
    assert res.metadata["shard"] == {"rank": 1, "world_size": 2, "rows": [6, 11], "of": "f.h5"}
    # in memory, a process under torchrun computes everything (never a silent part)
    assert extract_features(model, images, batch_size=2, progress=False).num_images == 11
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InvalidArgumentError, match="RANK"):
        extract_features(model, images, out=tmp_path / "g.h5", progress=False)


def test_torchrun_two_gloo_processes_cli(tmp_path: Path) -> None:
    """The real thing: ``torchrun --nproc_per_node 2 -m blt_models extract`` (gloo group), byte
    for byte equal to one process, every rank waiting for the join."""
    folder = tmp_path / "stimuli"
    folder.mkdir()
    for i in range(9):
        shutil.copy(SAMPLES / f"test0000{i}.png", folder / f"img{i}.png")
    common = [
        "-m", "blt_models", "extract", "blt_bl", str(folder), "--model-arg", "num_layers=4",
        "--in-chans", "1", "--img-size", "32", "--timesteps", "5", "--batch-size", "2",
        "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one.h5")], check=True,
                   env=env, capture_output=True, timeout=300)  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *common, "--out", str(tmp_path / "two.h5")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "images    9" in run.stdout and run.stdout.count("model ") == 1  # rank 0 reports
    assert_same_arrays(tmp_path / "one.h5", tmp_path / "two.h5")
    assert load_features(tmp_path / "two.h5").metadata["shards"]["world_size"] == 2


# ------------------------------------------------------------------ found by review (issue 17)
def test_ranks_with_other_dtypes_or_preprocessing_are_refused(model, images, tmp_path) -> None:
    """Settings that change the features but not the file layout: the compute dtype, and a custom
    transform (recorded through the first image as the model sees it)."""
    out = tmp_path / "feats.h5"
    kw = dict(out=out, batch_size=2, progress=False, world_size=2)
    extract_features(model, images, rank=0, dtype=torch.bfloat16, store_dtype="float32", **kw)
    with pytest.raises(OutputMismatchError, match="compute_dtype"):
        extract_features(model, images, rank=1, **kw)

    folder = tmp_path / "stimuli"
    folder.mkdir()
    for i in range(4):
        shutil.copy(SAMPLES / f"test0000{i}.png", folder / f"img{i}.png")
    import torchvision.transforms as T

    plain = T.Compose([T.Grayscale(), T.Resize(32), T.ToTensor()])
    normed = T.Compose([*plain.transforms, T.Normalize([0.5], [0.5])])
    out2 = tmp_path / "pre.h5"
    extract_features(model, folder, out=out2, batch_size=2, progress=False, rank=0,
                     world_size=2, transform=plain)  # fmt: skip
    with pytest.raises(OutputMismatchError, match="first_input: the first image as the model"):
        extract_features(model, folder, out=out2, batch_size=2, progress=False, rank=1,
                         world_size=2, transform=normed)  # fmt: skip
    # one process: resuming or reusing with another transform is refused the same way
    one = tmp_path / "one.h5"
    extract_features(model, folder, out=one, progress=False, transform=plain)
    with pytest.raises(OutputMismatchError, match="first_input"):
        extract_features(model, folder, out=one, progress=False, transform=normed)


def test_lazy_reads_refuse_moved_shards_and_follow_the_file(model, images, tmp_path,
                                                           monkeypatch) -> None:  # fmt: skip
    out = tmp_path / "a" / "feats.h5"
    run_ranks(model, images, out, 2)
    ref = load_features(out).features["layer1"]
    monkeypatch.chdir(tmp_path / "a")
    lazy = load_features("feats.h5", lazy=True).features["layer1"]
    other = tmp_path / "b"
    other.mkdir()
    monkeypatch.chdir(other)  # another feats.h5 here must not be read instead
    extract_features(model, images[:4] * 0, out=other / "feats.h5", progress=False)
    assert torch.equal(lazy[8:11], ref[8:11])
    (tmp_path / "a" / "feats.h5.shards").rename(tmp_path / "a" / "moved")
    with pytest.raises(OutputMismatchError, match="changed since"):
        lazy[8:11]  # HDF5 alone would give zeros here


def test_a_symlink_to_a_join_reads_its_shards(model, images, tmp_path) -> None:
    out = tmp_path / "a" / "feats.h5"
    run_ranks(model, images, out, 2)
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.h5"
    link.symlink_to(out)
    assert torch.equal(
        load_features(link).features["layer0"], load_features(out).features["layer0"]
    )


def test_overwrite_one_rank_at_a_time(model, images, tmp_path) -> None:
    """A job array re-run with new settings and overwrite: the first rank to finish waits for
    the others instead of failing on their old shards; the last one joins."""
    out = tmp_path / "feats.h5"
    run_ranks(model, images, out, 2)
    kw = dict(out=out, batch_size=2, progress=False, world_size=2, overwrite=True, pool="avg")
    first = extract_features(model, images, rank=1, **kw)
    assert first.metadata["shard"]["rank"] == 1 and not out.exists()
    joined = extract_features(model, images, rank=0, **kw)
    assert joined.metadata["pool"]["kind"] == "avg" and joined.num_images == 11
    ref = extract_features(model, images, batch_size=2, progress=False, pool="avg")
    assert torch.equal(joined.load().features["layer3"], ref.features["layer3"])


def test_another_batch_size_is_refused_before_any_work(model, images, tmp_path) -> None:
    out = tmp_path / "feats.h5"
    extract_features(model, images, out=out, batch_size=4, progress=False, rank=0, world_size=2)
    shard0 = tmp_path / "feats.h5.shards" / "rank-00000-of-00002.h5"
    before = shard0.stat().st_mtime_ns
    with pytest.raises(OutputMismatchError, match=r"batch_size=4 \(this run: batch_size=2"):
        extract_features(model, images, out=out, batch_size=2, progress=False, rank=1,
                         world_size=2)  # fmt: skip
    assert not (tmp_path / "feats.h5.shards" / "rank-00001-of-00002.h5").exists()
    assert shard0.stat().st_mtime_ns == before


def test_another_order_names_the_rank_to_run_again(model, tmp_path) -> None:
    folder = tmp_path / "stimuli"
    folder.mkdir()
    for i in range(6):
        shutil.copy(SAMPLES / f"test0000{i}.png", folder / f"img{i}.png")
    paths = sorted(str(p) for p in folder.iterdir())
    out = tmp_path / "feats.h5"
    kw = dict(out=out, batch_size=2, progress=False, world_size=3)
    extract_features(model, paths, rank=0, **kw)
    extract_features(model, paths, rank=1, **kw)  # rows 2, 3
    swapped = [*paths[:2], paths[3], paths[2], *paths[4:]]
    with pytest.raises(OutputMismatchError, match=r"\(rank 1\).*another order.*run rank 1 again"):
        extract_features(model, swapped, rank=2, **kw)
    assert not out.exists()


def test_one_process_overwrite_of_a_join_removes_its_shards(model, images, tmp_path) -> None:
    out = tmp_path / "feats.h5"
    run_ranks(model, images, out, 2)
    (tmp_path / "feats.h5.shards" / "mine.txt").write_text("keep")
    extract_features(model, images, out=out, batch_size=2, progress=False, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "feats.h5.shards").iterdir()) == ["mine.txt"]
    assert "shards" not in load_features(out).metadata
