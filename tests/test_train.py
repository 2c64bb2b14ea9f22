"""Tests of the training recipe in examples/train/ and of the model it ships (blt_bl_tiny)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "train"
sys.path.insert(0, str(RECIPE))

import data as recipe_data  # noqa: E402
import losses  # noqa: E402
import train as recipe  # noqa: E402

import blt_models as bm  # noqa: E402

TINY_RUN = ["--dataset", "synthetic", "--limit-train", "48", "--limit-val", "20", "--input-size", "32",
            "--batch-size", "8", "--workers", "0", "--no-progress", "--lr", "2e-3",
            "--model-kwargs", '{"timesteps": 5}']  # fmt: skip


# ------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("choice", ["decay", "weighted"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_loss_over_steps_matches_reference_formula(choice, gamma):
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 5)
    target = torch.randint(0, 5, (6,))
    # Reference SetCriterion: CE(last) + sum_s w_s CE(logits[-(s+1)]), divided by 1 + sum w_s.
    total, norm = F.cross_entropy(logits[-1], target), 1.0
    for s in range(1, 4):
        w = gamma**s if choice == "decay" else gamma
        total = total + w * F.cross_entropy(logits[-(s + 1)], target)
        norm += w
    expected = total / norm
    got = losses.ClassificationLoss(gamma, choice)(logits, target)
    torch.testing.assert_close(got, expected)
    w = losses.step_weights(4, gamma, choice)
    assert w[-1] == w.max() and math.isclose(w.sum().item(), 1.0, rel_tol=1e-6)


def test_label_smoothing_applies_its_value():
    torch.manual_seed(0)
    logits, target, eps = torch.randn(7, 4), torch.randint(0, 4, (7,)), 0.2
    q = torch.full((7, 4), eps / 3)
    q[torch.arange(7), target] = 1 - eps
    expected = -(q * F.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(losses.label_smoothing_ce(logits, target, eps), expected)
    plain = losses.label_smoothing_ce(logits, target, 0.0)
    torch.testing.assert_close(plain, F.cross_entropy(logits, target))
    assert not torch.allclose(plain, expected)
    got = losses.ClassificationLoss(0.0, smoothing=eps)(logits[None], target)
    torch.testing.assert_close(got, expected)


def _direct_nt_xent(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        den = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / den)
    return total / n2


def _direct_supcon(z1, z2, y, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    y = torch.cat([y, y]).tolist()
    n2, total, anchors = len(z), 0.0, 0
    for i in range(n2):
        den = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n2) if k != i)
        pos = [p for p in range(n2) if p != i and y[p] == y[i]]
        if not pos:
            continue
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / den) for p in pos) / len(pos)
        anchors += 1
    return total / anchors


def test_nt_xent_and_supcon_match_direct_computation():
    torch.manual_seed(0)
    z1, z2, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 0, 2, 1])
    assert math.isclose(losses.nt_xent(z1, z2, 0.5).item(), _direct_nt_xent(z1, z2, 0.5), rel_tol=1e-5)
    assert math.isclose(losses.supcon(z1, z2, y, 0.5).item(), _direct_supcon(z1, z2, y, 0.5), rel_tol=1e-5)
    # Over steps: the same weights as the classification loss.
    proj = torch.randn(3, 10, 3)
    w = losses.step_weights(3, 0.5, "decay")
    expected = sum(w[r] * losses.nt_xent(proj[r, :5], proj[r, 5:], 0.1) for r in range(3))
    got = losses.ContrastiveLoss("simclr", 0.1, "all", 0.5, "decay")(proj, y)
    torch.testing.assert_close(got, expected)
    last = losses.ContrastiveLoss("supcon", 0.1, "last")(proj, y)
    torch.testing.assert_close(last, losses.supcon(proj[-1, :5], proj[-1, 5:], y, 0.1))


# ------------------------------------------------------------------------------- model pieces
@pytest.mark.parametrize("unroll", ["biological", "standard"])
def test_grad_checkpoint_equals_plain_unrolling(unroll):
    torch.manual_seed(0)
    model = bm.create_model("blt_blt", num_layers=4, channels=(32, 32, 32, 32), sizes=(8, 8, 4, 2),
                            nominal_size=32, num_classes=3, in_chans=1, timesteps=6, unroll=unroll)  # fmt: skip
    x = torch.randn(2, 1, 32, 32)
    ref = model.forward_timesteps(x).logits
    ref.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    got = model.forward_timesteps(x).logits
    torch.testing.assert_close(got, ref)
    got.square().sum().backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], msg=n)


def test_readout_features_feed_the_projection_head():
    model = bm.create_model("blt_bl_tiny", num_classes=4)
    head = losses.ProjectionHead(64, 32, 16)
    out = recipe.StepsWrapper(model, None, head)(torch.randn(4, 1, 32, 32))
    assert out["logits"].shape == (5, 4, 4) and out["proj"].shape == (5, 4, 16)
    torch.testing.assert_close(out["probe"], out["logits"])


# ------------------------------------------------------------------------------- data
def test_vggface2_identity_split_dedupe_and_hybrid_offsets(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (40, 40), (120, 80, 60))
    for ident, n in (("n002", 10), ("n001", 20), ("n003", 5)):
        d = tmp_path / "vgg" / "train" / ident
        d.mkdir(parents=True)
        for i in range(n):
            img.save(d / f"{i:04d}_01.jpg")
        (d / "._0000_01.jpg").write_bytes(b"resource fork")
    for split in ("train", "val"):
        for c in ("a", "b", "c"):
            d = tmp_path / "imnet" / split / c
            d.mkdir(parents=True)
            img.save(d / "x.jpg")
    train = recipe_data.VGGFace2(str(tmp_path / "vgg"), "train", num_cats=2, image_size=28)
    val = recipe_data.VGGFace2(str(tmp_path / "vgg"), "val", num_cats=2, image_size=28)
    assert train.identities == ["n001", "n002"]
    assert [lab for _, lab in train.samples].count(0) == 18 and len(train) == 18 + 9
    assert len(val) == 2 + 1 and not any("._" in p for p, _ in train.samples + val.samples)
    x, _ = val[0]
    assert x.shape == (3, 28, 28)
    tr, va, info = recipe_data.build_datasets(
        "imagenet_face", data_path=str(tmp_path / "imnet"), vggface2_path=str(tmp_path / "vgg"), input_size=28
    )
    assert info.num_classes == 1000 and len(tr) == 3 + 18 + 9 + 4  # 3 ImageNet images + 3 identities (90%)
    assert {tr[i][1] for i in range(len(tr))} == {0, 1, 2, 999}


@pytest.mark.skipif(not Path(recipe_data.FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_reader():
    ds = recipe_data.FashionMNIST(train=False, input_size=32, limit=100)
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and y == 9 and len(ds) == 100  # first test image: ankle boot


# ------------------------------------------------------------------------------- runs
def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    recipe.main([*TINY_RUN, "--epochs", "2", "--output-dir", str(full), "--loss-gamma", "0.5", "--label-smoothing", "0.1"])
    part = tmp_path / "part"
    common = [*TINY_RUN, "--epochs", "2", "--output-dir", str(part), "--loss-gamma", "0.5", "--label-smoothing", "0.1"]
    out = recipe.main([*common, "--stop-after-steps", "8"])  # 6 steps per epoch: stops mid-epoch 1
    assert out["stopped"] and out["step"] == 8
    recipe.main([*common, "--resume", "auto"])
    a, b = _weights(full / "last" / "model.safetensors"), _weights(part / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The published-format checkpoint loads through create_model.
    cfg = json.loads((full / "best" / "config.json").read_text())
    model = bm.create_model(cfg["architecture"], checkpoint_path=full / "best" / "model.safetensors", **cfg["model_args"])
    assert model.num_classes == 4 and len(cfg["pretrained_cfg"]["metrics"]["top1_per_step"]) == 2
    rows = (full / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "top1_step4" in rows[0]


def test_resumed_epoch_reports_the_loss_of_all_its_batches(tmp_path, capsys):
    args = [*TINY_RUN, "--epochs", "1", "--loss-gamma", "0.5"]
    full = recipe.main([*args, "--output-dir", str(tmp_path / "full")])
    part = [*args, "--output-dir", str(tmp_path / "part")]
    stopped = recipe.main([*part, "--stop-after-steps", "3"])  # 6 steps per epoch: mid-epoch 0
    assert stopped["stopped"] and stopped["best_top1"] is None
    log = capsys.readouterr()
    assert "-1.00" not in log.out + log.err and "no best top-1 yet" in log.out + log.err
    resumed = recipe.main([*part, "--resume", "auto"])
    # The mean over all 6 batches of epoch 0, not over the 3 after the resume.
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-9)
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["train_loss"] == pytest.approx(full["train_loss"], rel=1e-9)
    # No float noise in metrics and configs (40.400000000000006): percentages to 4 decimals.
    assert "top5_per_step" not in rows[0] and "top5" not in rows[0]  # 4 classes: top-5 is always 100%
    for value in rows[0]["top1_per_step"]:
        assert value == round(value, 4)
    cfg = json.loads((tmp_path / "part" / "best" / "config.json").read_text())
    assert all(v == round(v, 4) for v in cfg["pretrained_cfg"]["metrics"]["top1_per_step"])
    # The one load recipe of both READMEs (examples/train/README.md, docs/training.md).
    model = bm.create_model(f"local-dir:{tmp_path / 'part' / 'best'}")
    assert model.pretrained_cfg.metrics["top1"] == rows[0]["top1"]
    for doc in (RECIPE / "README.md", RECIPE.parent.parent / "docs" / "training.md"):
        assert 'create_model("local-dir:<output-dir>/best")' in doc.read_text(), doc
    # The model card carries a per-step accuracy table.
    card = (tmp_path / "part" / "best" / "README.md").read_text()
    assert "top1 (%)" in card and card.count("\n| ") >= 1 + len(rows[0]["readout_steps"])


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(RECIPE / "train.py"), *TINY_RUN, "--epochs", "1", "--device", "cpu",
           "--output-dir", str(tmp_path), "--save-all-ranks", "--objective", "contrastive",
           "--contrastive-loss", "supcon"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = _weights(tmp_path / "final_rank0.safetensors"), _weights(tmp_path / "final_rank1.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    start = bm.create_model("blt_bl_tiny", num_classes=4, timesteps=5)
    assert any(not torch.equal(r0[k], v) for k, v in start.state_dict().items())  # it trained
    config = json.loads((tmp_path / "run_config.json").read_text())
    assert config["world_size"] == 2 and config["batch_per_process"] == 4


# ------------------------------------------------------------------------------- packaged model
def test_packaged_fashion_mnist_model_loads_and_hash_matches():
    from blt_models._hub import PACKAGE_WEIGHTS, sha256_file

    cfg = bm.get_pretrained_cfg("blt_bl_tiny", "fashion_mnist")
    path = PACKAGE_WEIGHTS / cfg.file
    assert path.is_file() and path.stat().st_size < 5_000_000
    assert cfg.sha256 and sha256_file(path) == cfg.sha256
    assert (PACKAGE_WEIGHTS / "blt_bl_tiny.fashion_mnist.md").is_file()
    assert "blt_bl_tiny.fashion_mnist" in bm.list_pretrained()
    model = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True).eval()
    assert model.pretrained_cfg.input_size == (1, 32, 32) and model.pretrained_cfg.class_names[9] == "Ankle boot"
    assert cfg.metrics["top1_per_step"][-1] >= 90.0

    # The shipped sample images, preprocessed as the config says.
    import csv

    from PIL import Image

    samples = Path(bm.__file__).parent / "samples" / "fashion_mnist"
    rows = list(csv.DictReader(open(samples / "labels.csv")))
    images = torch.stack([
        torch.from_numpy(__import__("numpy").array(Image.open(samples / r["file"]))).float()[None] / 255
        for r in rows
    ])  # fmt: skip
    x = F.interpolate(images, size=cfg.input_size[1:], mode="bilinear", align_corners=False)
    x = (x - cfg.mean[0]) / cfg.std[0]
    labels = torch.tensor([int(r["label"]) for r in rows])
    with torch.no_grad():
        logits = model.forward_timesteps(x).logits
    acc = (logits.argmax(-1) == labels).float().mean(1)
    assert acc[-1] >= 0.85 and acc[-1] >= acc[0]


@pytest.mark.slow
@pytest.mark.skipif(not Path(recipe_data.FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed")
def test_packaged_model_reaches_its_recorded_test_accuracy():
    cfg = bm.get_pretrained_cfg("blt_bl_tiny", "fashion_mnist")
    model = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True).eval()
    ds = recipe_data.FashionMNIST(train=False, input_size=32, mean=cfg.mean, std=cfg.std)
    correct = torch.zeros(5)
    with torch.no_grad():
        for i in range(0, len(ds), 500):
            x = (ds.images[i : i + 500].float() / 255 - cfg.mean[0]) / cfg.std[0]
            logits = model.forward_timesteps(x).logits
            correct += (logits.argmax(-1) == ds.labels[i : i + 500]).sum(1)
    acc = (correct / len(ds) * 100).tolist()
    assert acc[-1] >= 90.0 and acc[-1] > acc[0]
    for got, recorded in zip(acc, cfg.metrics["top1_per_step"], strict=True):
        assert abs(got - recorded) < 0.02


@pytest.mark.slow
def test_two_process_resume_gives_the_same_weights(tmp_path):
    def torchrun(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(RECIPE / "train.py"), *TINY_RUN, "--epochs", "2", "--device", "cpu",
               "--output-dir", str(out), "--loss-gamma", "0.5", *extra]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    torchrun(tmp_path / "full")
    torchrun(tmp_path / "part", "--stop-after-steps", "8")  # 6 steps per epoch: mid-epoch 1
    torchrun(tmp_path / "part", "--resume", "auto")
    a = _weights(tmp_path / "full" / "last" / "model.safetensors")
    b = _weights(tmp_path / "part" / "last" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------- own folder
def _image_folder(root: Path, classes=("cat", "dog"), n=6, size=40) -> None:
    """``root/<class>/<i>.png``: a class-coloured square on noise, so the classes are learnable."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            x = torch.rand(size, size, 3, generator=rng) * 0.3
            x[8:32, 8:32, c % 3] += 0.7
            Image.fromarray((x.clamp(0, 1) * 255).byte().numpy()).save(root / name / f"{i}.png")


FOLDER_RUN = ["--dataset", "folder", "--input-size", "32", "--batch-size", "4", "--workers", "0",
              "--no-progress", "--epochs", "1", "--model-kwargs", '{"timesteps": 4}']  # fmt: skip


def test_own_folder_train_val_end_to_end(tmp_path, capsys):
    _image_folder(tmp_path / "data" / "train", n=6)
    _image_folder(tmp_path / "data" / "val", n=2)
    out = tmp_path / "run"
    result = recipe.main([*FOLDER_RUN, "--data-path", str(tmp_path / "data"), "--output-dir", str(out)])
    log = capsys.readouterr().out
    assert "2 classes: cat, dog" in log and "top-5" not in log and "CPU threads per process" in log
    assert "top5" not in result and result["val_images"] == 4
    model = bm.create_model(f"local-dir:{out / 'best'}")
    assert model.num_classes == 2 and model.pretrained_cfg.class_names == ("cat", "dog")
    assert model.pretrained_cfg.crop_pct == pytest.approx(0.875)  # the validation resize + crop
    assert "top5" not in model.pretrained_cfg.metrics


def test_own_folder_split_by_seed_is_per_class_and_reproducible(tmp_path):
    _image_folder(tmp_path / "data", classes=("a", "b", "c"), n=10)
    split = [recipe_data.own_folder(str(tmp_path / "data"), 32, val_fraction=0.2, seed=s) for s in (0, 0, 1)]
    train, val, info = split[0]
    assert info.class_names == ("a", "b", "c") and info.num_classes == 3
    assert len(train) == 24 and len(val) == 6
    assert sorted(val.dataset.targets[i] for i in val.indices) == [0, 0, 1, 1, 2, 2]  # 2 per class
    assert not set(train.indices) & set(val.indices)
    assert val.indices == split[1][1].indices and val.indices != split[2][1].indices


def test_class_count_mismatch_is_an_error_never_a_silent_head(tmp_path):
    _image_folder(tmp_path / "data" / "train", n=4)
    _image_folder(tmp_path / "data" / "val", n=2)
    data = ["--data-path", str(tmp_path / "data"), "--output-dir", str(tmp_path / "run")]
    with pytest.raises(ValueError, match="num_classes=1000, but the data has 2 classes"):
        recipe.main([*FOLDER_RUN[:-2], "--model-kwargs", '{"num_classes": 1000}', *data])
    with pytest.raises(ValueError, match="--num-cats 1000, but .* has 2 classes"):
        recipe_data.build_datasets("imagenet", data_path=str(tmp_path / "data"), num_cats=1000)
    # The ImageNet layout on a two-class folder gives a two-way head, not 1000.
    _, _, info = recipe_data.build_datasets("imagenet", data_path=str(tmp_path / "data"), input_size=32)
    assert info.num_classes == 2 and info.class_names == ("cat", "dog")
    (tmp_path / "data" / "val" / "bird").mkdir()
    (tmp_path / "data" / "val" / "cat" / "0.png").rename(tmp_path / "data" / "val" / "bird" / "0.png")
    with pytest.raises(ValueError, match="train/ has the classes .* but val/ has"):
        recipe_data.own_folder(str(tmp_path / "data"), 32)
    # The ImageNet layout too: val/ without "dog" numbered "emu" 1, the training's "dog".
    _image_folder(tmp_path / "inet" / "train", classes=("cat", "dog", "emu"), n=2)
    _image_folder(tmp_path / "inet" / "val", classes=("cat", "emu"), n=2)
    with pytest.raises(ValueError, match=r"train/ has the classes \['cat', 'dog', 'emu'\] but val/ has"):
        recipe_data.build_datasets("imagenet", data_path=str(tmp_path / "inet"), input_size=32)
    # And the ImageNet part of the mixed datasets (it was not checked there).
    for mixed in ("imagenet_vggface2", "imagenet_face"):
        with pytest.raises(ValueError, match=r"train/ has the classes .* but val/ has"):
            recipe_data.build_datasets(mixed, data_path=str(tmp_path / "inet"),
                                       vggface2_path=str(tmp_path / "faces"), input_size=32)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="one subfolder per class"):
        recipe_data.own_folder(str(tmp_path / "data" / "val" / "cat"), 32)


def test_cpu_threads_default_to_cores_per_process(monkeypatch):
    monkeypatch.setattr(recipe, "available_cpus", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert recipe.default_threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert recipe.default_threads() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert recipe.default_threads() == 16


def test_recipe_sets_passive_openmp_waiting_before_torch_loads():
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); import train; "
            "print(os.environ['OMP_WAIT_POLICY'])")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code, str(RECIPE)], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "PASSIVE", out.stderr[-2000:]
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # an explicit choice wins
    out = subprocess.run([sys.executable, "-c", code, str(RECIPE)], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "ACTIVE", out.stderr[-2000:]
