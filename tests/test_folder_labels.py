"""Class labels from subfolders: extraction results carry them (``result.labels``) and the
analyses use them when no labels are given (issue 25)."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch

import blt_models as bm
from blt_models.demo import SAMPLES
from blt_models.errors import InputError

MODEL = "blt_bl_tiny.fashion_mnist"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``my_images/{Bag,Trouser}/testNNNNN.png``: 8 sample images of each of two classes."""
    root = tmp_path_factory.mktemp("labels") / "my_images"
    with open(SAMPLES / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name in ("Trouser", "Bag"):
        (root / name).mkdir(parents=True)
        for row in [r for r in rows if r["class_name"] == name][:8]:
            shutil.copy(SAMPLES / row["file"], root / name / row["file"])
    return root


@pytest.fixture(scope="module")
def feats(folder):
    return bm.extract_features(MODEL, folder, layers=["layer1", "layer3"], pool="avg",
                               progress=False)  # fmt: skip


def test_labels_are_the_subfolders_of_a_folder_source(feats):
    assert feats.labels == [i.split("/")[0] for i in feats.image_ids]
    assert feats.labels[:8] == ["Bag"] * 8 and feats.labels[8:] == ["Trouser"] * 8


def test_labels_survive_a_feature_file(folder, tmp_path, feats):
    pytest.importorskip("h5py")
    written = bm.extract_features(MODEL, folder, layers=["layer1"], pool="avg", progress=False,
                                  out=tmp_path / "f.h5")  # fmt: skip
    assert written.labels == feats.labels
    assert bm.load_features(tmp_path / "f.h5").labels == feats.labels


def test_no_labels_without_class_subfolders(folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for png in sorted(folder.rglob("*.png"))[:3]:
        shutil.copy(png, flat / png.name)
    assert bm.extract_features(MODEL, flat, layers=["layer1"], pool="avg", progress=False).labels is None
    images = torch.randn(3, 1, 32, 32)
    assert bm.extract_features(MODEL, images, layers=["layer1"], pool="avg", progress=False).labels is None


def test_analyses_use_the_subfolder_labels(feats, tmp_path):
    pytest.importorskip("rsatoolbox")
    pytest.importorskip("sklearn")
    from blt_models import analysis as ba

    own = ba.decode_over_time(feats, cv=4)
    given = ba.decode_over_time(feats, feats.labels, cv=4)
    for layer in own.accuracy:
        np.testing.assert_array_equal(own.accuracy[layer], given.accuracy[layer])
    assert own.accuracy["layer3"].max() > 0.9  # trousers and bags are easy to tell apart
    mixed = ba.decode_over_time(feats, ["Bag", "Trouser"] * 8, cv=4)  # given labels win
    assert mixed.accuracy["layer3"].max() < 0.9
    rdms = ba.compute_rdms(feats)
    assert list(rdms.pattern_descriptors["label"]) == feats.labels
    ba.plot_rdm_frames(rdms, tmp_path / "frames.png")  # class blocks from the descriptor
    sel = ba.face_selectivity(feats, "Bag")
    np.testing.assert_array_equal(
        sel.dprime["layer3"], ba.face_selectivity(feats, np.array(feats.labels) == "Bag").dprime["layer3"]
    )
    with pytest.raises(InputError, match="not one of the classes"):
        ba.face_selectivity(feats, "Faces")


def test_analyses_without_labels_say_how_to_give_them():
    pytest.importorskip("sklearn")
    from blt_models import analysis as ba

    plain = {"layer1": np.random.default_rng(0).standard_normal((8, 3, 5))}
    with pytest.raises(InputError, match=r"pass labels=\[...\].*one subfolder per class"):
        ba.decode_over_time(plain)
    with pytest.raises(InputError, match="3 labels for 8 images"):
        ba.decode_over_time(plain, [0, 1, 0])


def test_the_labels_an_analysis_used_are_shown(folder, tmp_path):
    # The recipe's training layout (my_images/train/<class>/, my_images/val/<class>/) extracted
    # whole gives each image its top folder, "train" or "val", as its class: decoding then runs
    # without an error on the wrong labels. The result and its analyses name the classes used.
    pytest.importorskip("sklearn")
    from blt_models import analysis as ba

    root = tmp_path / "runs_data"
    for split, part in (("train", slice(0, 4)), ("val", slice(4, 8))):
        for cls in ("Bag", "Trouser"):
            (root / split / cls).mkdir(parents=True)
            for png in sorted((folder / cls).glob("*.png"))[part]:
                shutil.copy(png, root / split / cls / png.name)
    whole = bm.extract_features(MODEL, root, layers=["layer3"], pool="avg", progress=False)
    assert "labels=2 classes (train 8, val 8) from subfolders" in repr(whole)
    decoded = ba.decode_over_time(whole, cv=2)
    assert decoded.classes == {"train": 8, "val": 8}
    assert repr(decoded).startswith("DecodingResult(2-fold CV, 2 classes (train 8, val 8), chance")
    val = bm.extract_features(MODEL, root / "val", layers=["layer3"], pool="avg", progress=False)
    assert "labels=2 classes (Bag 4, Trouser 4)" in repr(val)
    assert "2 classes (Bag 4, Trouser 4)" in repr(ba.decode_over_time(val, cv=2))
    tuning = ba.temporal_tuning(val, n_bootstrap=5)
    assert repr(tuning).startswith("TemporalTuning(2 categories (Bag, Trouser), threshold")


def test_decoding_a_folder_with_one_class_names_it(folder):
    pytest.importorskip("sklearn")
    from blt_models import analysis as ba

    one = bm.extract_features(MODEL, folder, layers=["layer1"], pool="avg", progress=False)
    one.image_ids = [f"Bag/{i}" for i in range(one.num_images)]
    with pytest.raises(InputError, match=r"at least two classes; the labels have 1 class \(Bag 16\)"):
        ba.decode_over_time(one)
