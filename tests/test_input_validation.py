"""Issue 23 (items 4, 5, 7, 8) and issue 25 (item 7): bad inputs on the newer surfaces get named
errors, never a raw exception or a silently wrong result; the CLI takes a stimulus protocol."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _small_models import small_blt

import blt_models as bm
from blt_models.cli import main
from blt_models.errors import (
    CheckpointNotFoundError,
    ConfigValueError,
    InputError,
    InvalidArgumentError,
    InvalidWeightsError,
    KerasWeightsError,
    OutputMismatchError,
    SaveTargetError,
    StimulusError,
    TimestepsError,
    UnknownLayerError,
)
from blt_models.extract import extract_features, list_images, load_features
from blt_models.stimuli import RSVP, BackwardMask, Presentation, protocol_from_dict

SAMPLES = Path(bm.__file__).parent / "samples" / "fashion_mnist"
T = 5


@pytest.fixture(scope="module")
def model() -> bm.ClockedModel:
    return small_blt(T)


@pytest.fixture
def stimuli(tmp_path) -> Path:
    """A folder of 4 sample PNGs."""
    folder = tmp_path / "stimuli"
    folder.mkdir()
    for i in range(4):
        shutil.copy(SAMPLES / f"test0000{i}.png", folder / f"img{i}.png")
    return folder


def images(b: int = 3) -> torch.Tensor:
    return torch.randn(b, 1, 8, 8, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------- item 4: stimulus folders
def test_folder_scan_takes_image_formats_only(stimuli) -> None:
    with h5py.File(stimuli / "old_features.h5", "w") as f:  # PIL registers .h5 (a stub format)
        f["x"] = np.zeros(3)
    (stimuli / "notes.txt").write_text("not an image")
    (stimuli / "table.hdf").write_bytes(b"\x0e\x03\x13\x01")  # HDF4 magic: a PIL stub format
    names = [p.name for p in list_images(stimuli)]
    assert names == ["img0.png", "img1.png", "img2.png", "img3.png"]


def test_output_inside_the_stimulus_folder_is_never_an_input(model, stimuli) -> None:
    out = stimuli / "feats.h5"
    first = extract_features(model, stimuli, out=out, batch_size=2, progress=False)
    assert first.num_images == 4
    # The second run finds the complete file and reads it back: the file itself is no image.
    again = extract_features(model, stimuli, out=out, batch_size=2, progress=False)
    assert again.image_ids == first.image_ids
    assert [p.name for p in list_images(stimuli, exclude=[out])] == [
        f"img{i}.png" for i in range(4)
    ]
    # Outputs of any extension and their companions (OUT.shards/...) are excluded by name.
    (stimuli / "feats.png.shards").mkdir()
    shutil.copy(SAMPLES / "test00000.png", stimuli / "feats.png.shards" / "x.png")
    shutil.copy(SAMPLES / "test00000.png", stimuli / "feats.png")
    kept = [p.name for p in list_images(stimuli, exclude=[stimuli / "feats.png"])]
    assert kept == [f"img{i}.png" for i in range(4)]


def test_empty_string_source_is_refused_not_the_current_folder(model, stimuli, monkeypatch):
    monkeypatch.chdir(stimuli)  # a folder of images: reading "" as "." would succeed
    for source in ("", "  "):
        with pytest.raises(InvalidArgumentError, match="empty string"):
            extract_features(model, source, progress=False)


# --------------------------------------------------------------------------- item 5: stimuli
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Presentation(timesteps=10**9), r"timesteps must be an integer between 1 and 10,000"),
        (lambda: Presentation(timesteps=4, off=10**6), r"off must be an integer between"),
        (lambda: BackwardMask(timesteps=4, soa=2**40), r"soa must be an integer between"),
        (lambda: Presentation(timesteps=2, contrast=["1", "2"]), r"contrast\[0\] must be a number"),
        (lambda: Presentation(timesteps=2, contrast="2"), r"contrast must be a number"),
        (lambda: Presentation(timesteps=2, blank=["a"]), r"blank\[0\] must be a number"),
        (lambda: Presentation(timesteps=2, blank=[[0.1, 0.2]]), r"blank\[0\] must be a number"),
        (lambda: Presentation(timesteps=2, noise_std=[True, 0.1]), r"noise_std\[0\] must be"),
        (lambda: Presentation(timesteps=2, seed=2**64), r"seed must be an integer between"),
    ],
)
def test_protocol_fields_are_checked_where_they_enter(build, match) -> None:
    with pytest.raises(StimulusError, match=match):
        build()


def test_protocol_numbers_of_numpy_and_torch_are_numbers() -> None:
    p = Presentation(timesteps=2, contrast=[np.float32(0.5), torch.tensor(2.0)], blank=np.float64(1))
    assert p.contrast == (0.5, 2.0) and p.blank == 1.0
    assert json.dumps(p.to_dict())


@pytest.mark.parametrize(
    "record",
    [
        ["Presentation", 4],
        {"protocol": ["Presentation"], "timesteps": 4},
        {"protocol": {"name": "Presentation"}, "timesteps": 4},
        {"protocol": "Presentation", "timesteps": [4]},
        {"protocol": "Presentation", "timesteps": 4, 1: 2},
        {"protocol": "Presentation", "timesteps": 4, "contrast": {"a": 1}},
    ],
)
def test_protocol_from_dict_refuses_bad_records(record) -> None:
    with pytest.raises(StimulusError):
        protocol_from_dict(record)


@pytest.mark.parametrize(
    ("images_in", "match"),
    [
        (None, r"expected an image tensor \[B, C, H, W\]; got NoneType"),
        ([images(), images()], r"expected an image tensor \[B, C, H, W\]; got list"),
        (images().unsqueeze(0), r"5-D tensor is a sequence already"),
        (images().expand(2, -1, -1, -1, -1), r"5-D tensor is a sequence already"),
        (images()[0], r"Add a batch dimension"),
        ((images() * 100).to(torch.uint8), r"floating-point image batch"),
    ],
)
def test_apply_takes_an_image_batch(images_in, match) -> None:
    with pytest.raises(StimulusError, match=match):
        Presentation(timesteps=3).apply(images_in)


def test_rsvp_apply_refuses_an_empty_list_and_foreign_items() -> None:
    with pytest.raises(StimulusError, match="empty list"):
        RSVP(timesteps=4, items=2).apply([])
    with pytest.raises(StimulusError, match="item 1 must be a tensor"):
        RSVP(timesteps=4, items=2).apply([images(), None])
    seq = RSVP(timesteps=4, items=2).apply(torch.stack([images(), images() + 1]))
    assert seq.shape == (4, 3, 1, 8, 8)


@pytest.mark.parametrize(
    ("index", "match"),
    [
        ([0.5, 1.5, 2.5], r"index\[0\] = 0.5 \(float\): image indices must be integers"),
        ([0, 1, 2.0], r"index\[2\] = 2.0"),
        (torch.tensor([0.0, 1.0, 2.0]), r"index must be one integer per image"),
        (torch.tensor([[0, 1, 2]]), r"index must be one integer per image"),
        ("012", r"index must be one integer per image"),
        (3, r"index must be one integer per image"),
        ([True, False, True], r"image indices must be integers"),
    ],
)
def test_fractional_or_odd_indices_are_refused(index, match) -> None:
    with pytest.raises(StimulusError, match=match):
        BackwardMask(timesteps=4, soa=2).apply(images(), index=index)


def test_integer_indices_of_any_kind_give_the_same_noise() -> None:
    p = BackwardMask(timesteps=4, soa=2, seed=3)
    want = p.apply(images(), index=[5, 6, 7])
    for index in (range(5, 8), torch.tensor([5, 6, 7]), np.array([5, 6, 7]), (5, 6, 7)):
        assert torch.equal(p.apply(images(), index=index), want)


def test_mask_images_must_be_normalised_floats() -> None:
    raw = (images() * 50 + 100).clamp(0, 255).to(torch.uint8)
    with pytest.raises(StimulusError, match=r"mask has dtype torch.uint8"):
        BackwardMask(timesteps=4, soa=2, mask="image").apply(images(), mask=raw)


# ----------------------------------------------------------- item 7: save_pretrained, converters
@pytest.mark.parametrize(
    ("timesteps", "match"),
    [
        (None, r"timesteps = None .*recurrent model needs its number of clock steps"),
        (3, r"timesteps = 3 .*needs timesteps >= 4 for a readout"),
        (2.5, r"must be an integer"),
    ],
)
def test_save_pretrained_refuses_an_invalid_timesteps_attribute(tmp_path, timesteps, match):
    model = small_blt(T)
    model.timesteps = timesteps
    with pytest.raises(ConfigValueError, match=match):
        bm.save_pretrained(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"class_names": ["a", "b"]}, r"2 names for a model of 1000 classes"),
        ({"class_names": list(range(1000))}, r"class_names .*must be a list of strings"),
        ({"class_names": [f"c{i}" for i in range(999)] + [None]}, r"must be a list of strings"),
        (
            {"metrics": {"per_step": {"step": [3, 4], "top1": [0.5]}}},
            r"columns of unequal length \{'step': 2, 'top1': 1\}",
        ),
        ({"metrics": {"per_step": {"top1": 0.5}}}, r"metrics.per_step .*must be an object of lists"),
        ({"metrics": {"per_step": {}}}, r"must be an object of lists"),
    ],
)
def test_save_pretrained_refuses_what_it_cannot_write_back(model, tmp_path, fields, match):
    with pytest.raises(ConfigValueError, match=match):
        bm.save_pretrained(model, tmp_path / "m", **fields)
    assert not (tmp_path / "m").exists()


def test_save_pretrained_keeps_valid_class_names_and_metrics(model, tmp_path):
    names = [f"class {i}" for i in range(1000)]
    per_step = {"step": [3, 4], "top1": [0.5, float("nan")]}
    out = bm.save_pretrained(model, tmp_path / "m", class_names=names,
                             metrics={"top1": 0.7, "per_step": per_step})  # fmt: skip
    loaded = bm.create_model(f"local-dir:{out}", pretrained=True)
    assert list(loaded.pretrained_cfg.class_names) == names
    assert loaded.pretrained_cfg.metrics["per_step"]["top1"] == [0.5, None]


def test_a_config_json_whose_class_names_miss_classes_is_refused(model, tmp_path):
    out = bm.save_pretrained(model, tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    config["pretrained_cfg"]["class_names"] = ["a", "b", "c"]  # the model has 1000 outputs
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigValueError, match=r"3 names for a model of 1000 classes"):
        bm.create_model(f"local-dir:{out}", pretrained=True)


@pytest.mark.parametrize("repo_id", [None, "", "no-slash", "a/b/c", 5, "org/na me"])
def test_push_to_hub_refuses_a_bad_repo_id_before_anything(model, repo_id, monkeypatch):
    def no_upload(*args, **kwargs):
        raise AssertionError("nothing may be uploaded")

    monkeypatch.setattr("blt_models._published.upload_folder", no_upload)
    with pytest.raises(ConfigValueError, match=r"repo_id = .*must name a Hub repo as 'org/name'"):
        bm.push_to_hub(model, repo_id)


def test_repeated_model_arg_is_refused(stimuli, tmp_path, capsys) -> None:
    rc = main(["extract", "blt_bl", str(stimuli), "--out", str(tmp_path / "f.h5"),
               "--model-arg", "num_layers=4", "--model-arg", "num_layers=5", "--no-progress"])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "--model-arg num_layers is given twice" in err
    assert not (tmp_path / "f.h5").exists()


@pytest.fixture(scope="module")
def keras_bl(tmp_path_factory) -> Path:
    from _rcnn_fixtures import load, write_keras_file

    return write_keras_file(load("bl"), "save_weights", tmp_path_factory.mktemp("keras") / "bl.h5")


def test_keras_converter_refuses_a_negative_batchnorm_variance(keras_bl, tmp_path) -> None:
    bad = shutil.copy(keras_bl, tmp_path / "bad.h5")
    with h5py.File(bad, "r+") as f:
        names = []
        f.visit(names.append)
        var = next(n for n in names if n.endswith("moving_variance:0"))
        values = f[var][()]
        values[0] = -0.5
        f[var][...] = values
    with pytest.raises(InvalidWeightsError, match=r"running_var: 1 negative of \d+ values"):
        bm.convert_rcnn_sat_h5(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["no", 1, 0.0, np.bool_(True)])
def test_keras_converter_refuses_non_boolean_flags(keras_bl, tmp_path, flag) -> None:
    with pytest.raises(ConfigValueError, match=r"cumulative_readout = .*must be True or False"):
        bm.convert_rcnn_sat_h5(keras_bl, tmp_path / "out", cumulative_readout=flag)


def test_keras_converter_refuses_non_string_class_names(keras_bl, tmp_path) -> None:
    from blt_models._convert_rcnn_sat import load_rcnn_sat_h5

    classes = load_rcnn_sat_h5(keras_bl)[0].num_classes
    with pytest.raises(ConfigValueError, match=r"class_names = .*must be a list of strings"):
        load_rcnn_sat_h5(keras_bl, class_names=list(range(classes)))
    with pytest.raises(ConfigValueError, match=r"class_names has 2 names"):
        load_rcnn_sat_h5(keras_bl, class_names=["a", "b"])


# ------------------------------------------------------------- item 8: raw errors, poor messages
@pytest.mark.parametrize("indices", ["a", 2.0, [0, "1"], [0.5], True, {"a": 1}, [], (), 0, -1])
def test_forward_intermediates_indices_are_checked(model, indices) -> None:
    with pytest.raises(InvalidArgumentError, match=r"indices must be None .* 0: layer0, 1: layer1"):
        model.forward_intermediates(torch.randn(1, 1, 32, 32), indices=indices)
    with pytest.raises(InvalidArgumentError, match=r"indices must be None"):
        model.prune_intermediate_layers(indices)  # timm's bare ValueError for [] / 0 before


def test_forward_intermediates_takes_numpy_integers(model) -> None:
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=2, intermediates_only=True)
        got = model.forward_intermediates(x, indices=np.int64(2), intermediates_only=True)
        pair = model.forward_intermediates(x, indices=(np.int64(0), -1), intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True)) and len(pair) == 2


@pytest.mark.parametrize("layers", [3, 2.5, {"layer0"}, torch.tensor(1)])
def test_forward_timesteps_layers_of_the_wrong_type(model, layers) -> None:
    with pytest.raises(UnknownLayerError, match=r"layers must be layer names .* layer0, layer1"):
        model.forward_timesteps(torch.randn(1, 1, 32, 32), layers=layers)


def test_meta_device_input_is_named(model) -> None:
    with pytest.raises(InputError, match=r"input is on the meta device .* weights are on cpu"):
        model(torch.empty(2, 1, 32, 32, device="meta"))
    with torch.device("meta"):
        on_meta = bm.create_model("blt_bl", num_layers=4, in_chans=1, timesteps=T)
    with pytest.raises(InputError, match=r"model is on the meta device .* input on cpu"):
        on_meta(torch.randn(2, 1, 32, 32))
    # A model built on the meta device infers shapes from meta inputs (docs/gen_zoo.py).
    assert on_meta(torch.empty(2, 1, 32, 32, device="meta")).shape == (2, 1000)


def test_batch_major_5d_input_says_how_it_was_read(model) -> None:
    x = torch.randn(2, T, 1, 32, 32)  # [B, T, ...]: read as 2 frames of 5 images
    with pytest.raises(
        TimestepsError,
        match=r"\(2, 5, 1, 32, 32\) was read as time-major \[T, B, C, H, W\]: T=2 frames of "
        r"B=5 images.*x.transpose\(0, 1\)",
    ):
        model.forward_timesteps(x)


def test_save_pretrained_of_a_compiled_model_points_at_orig_mod(model, tmp_path) -> None:
    with pytest.raises(ConfigValueError, match=r"torch.compile wrapper.*model._orig_mod"):
        bm.save_pretrained(torch.compile(model), tmp_path / "m")


def test_save_target_in_a_file_or_over_odd_entries(model, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SaveTargetError, match=r"lies inside .*file., which is a file"):
        bm.save_pretrained(model, tmp_path / "file" / "m")
    with pytest.raises(SaveTargetError, match=r"lies inside"):
        bm.save_pretrained(model, tmp_path / "file" / "a" / "b")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(SaveTargetError, match="cannot be resolved"):
        bm.save_pretrained(model, tmp_path / "loop")
    # A folder whose model.safetensors is a folder (or a symlink loop) is not ours to replace.
    target = tmp_path / "target"
    (target / "model.safetensors").mkdir(parents=True)
    (target / "model.safetensors" / "precious.txt").write_text("keep me")
    with pytest.raises(SaveTargetError, match=r"holds model.safetensors that is not a plain file"):
        bm.save_pretrained(model, target)
    assert (target / "model.safetensors" / "precious.txt").read_text() == "keep me"
    looped = tmp_path / "looped"
    looped.mkdir()
    os.symlink(looped / "model.safetensors", looped / "model.safetensors")
    with pytest.raises(SaveTargetError, match=r"not a plain file"):
        bm.save_pretrained(model, looped)
    assert (looped / "model.safetensors").is_symlink()


def test_extraction_output_inside_a_file_or_a_symlink_loop(model, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "loop.h5", tmp_path / "loop.h5")
    x = torch.randn(2, 1, 32, 32)
    for out, match in (
        (tmp_path / "file" / "feats.h5", r"lies inside .*file., which is a file"),
        (tmp_path / "file" / "feats.zarr", r"lies inside"),
        (tmp_path / "loop.h5", r"cannot be resolved"),
    ):
        with pytest.raises(InvalidArgumentError, match=match):
            extract_features(model, x, layers="layer3", out=out, progress=False)
    assert (tmp_path / "file").read_text() == "x"


def test_config_json_without_mean_is_blamed_on_config_json(model, tmp_path) -> None:
    out = bm.save_pretrained(model, tmp_path / "m")  # 1 input channel
    config = json.loads((out / "config.json").read_text())
    del config["pretrained_cfg"]["mean"]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConfigValueError, match=r"config.json has no pretrained_cfg.mean.*add \"mean\""
    ):
        bm.create_model(f"local-dir:{out}", pretrained=True)


@pytest.mark.parametrize("size", ["0", "-5", "ten"])
def test_cli_img_size_must_be_positive(stimuli, tmp_path, capsys, size) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["extract", "blt_bl_tiny", str(stimuli), "--out", str(tmp_path / "f.h5"),
              "--img-size", size])  # fmt: skip
    assert exit_info.value.code == 2
    assert "argument --img-size:" in capsys.readouterr().err


def test_cli_steps_range_backwards(stimuli, tmp_path, capsys) -> None:
    rc = main(["extract", "blt_bl_tiny", str(stimuli), "--out", str(tmp_path / "f.h5"),
               "--steps", "5-2", "--no-progress"])  # fmt: skip
    assert rc == 1
    assert "the range '5-2' runs backwards; write it from the first step to the last, '2-5'" in (
        capsys.readouterr().err
    )


def test_demo_checks_its_output_before_running(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    import blt_models.demo as demo

    def no_run(*args, **kwargs):
        raise AssertionError("the demo ran before checking its output")

    monkeypatch.setattr(demo, "load_samples", no_run)
    (tmp_path / "exists.txt").write_text("x")
    for out in (tmp_path / "exists.txt", tmp_path / "exists.txt" / "sub"):
        with pytest.raises(SaveTargetError, match="is \\(or lies in\\) a file"):
            demo.run_demo(out_dir=out)
        assert main(["demo", "--out", str(out)]) == 1
        assert "a file, not a folder" in capsys.readouterr().err
    (tmp_path / "d" / "activity.png").mkdir(parents=True)
    with pytest.raises(SaveTargetError, match="exists and is not a file"):
        demo.run_demo(out_dir=tmp_path / "d")


def test_text_file_named_h5_is_refused_as_not_hdf5(tmp_path, capsys) -> None:
    fake = tmp_path / "weights.h5"
    fake.write_text("hello, not hdf5\n")
    assert main(["convert", str(fake), str(tmp_path / "out")]) == 1
    assert "is not an HDF5 file (no HDF5 signature)" in capsys.readouterr().err
    with pytest.raises(KerasWeightsError, match="not an HDF5 file"):
        bm.create_model("rcnn_bl", checkpoint_path=fake)
    from blt_models._convert import convert_checkpoint

    with pytest.raises(CheckpointNotFoundError, match="not found"):
        convert_checkpoint(tmp_path / "missing.h5")


def test_job_array_rank_with_another_batch_size_is_refused(model, tmp_path) -> None:
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    out = tmp_path / "feats.h5"
    # 8 images, 2 ranks: batch_size 2 and 4 give both ranks the same rows (0-3, 4-7).
    extract_features(model, x, out=out, batch_size=2, progress=False, rank=0, world_size=2)
    with pytest.raises(OutputMismatchError, match=r"\(rank 0\) holds the same images, but batch "
                       r"by batch of another size.*batch_size=2 \(this run: batch_size=4"):  # fmt: skip
        extract_features(model, x, out=out, batch_size=4, progress=False, rank=1, world_size=2)
    assert not (tmp_path / "feats.h5.shards" / "rank-00001-of-00002.h5").exists()
    assert not out.exists()


# ------------------------------------------------------------------ issue 25 item 7: --stimulus
def test_cli_extract_takes_a_stimulus_protocol(stimuli, tmp_path, capsys) -> None:
    protocol = BackwardMask(timesteps=6, soa=2, mask_std=0.5, seed=4)
    spec = tmp_path / "mask.json"
    spec.write_text(json.dumps(protocol.to_dict()))
    out = tmp_path / "cli.h5"
    rc = main(["extract", "blt_bl", str(stimuli), "--model-arg", "num_layers=4", "--in-chans",
               "1", "--img-size", "32", "--layers", "layer3", "--stimulus", str(spec),
               "--out", str(out), "--batch-size", "3", "--no-progress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    got = load_features(out)
    assert bm.stimuli.protocol_of(got.metadata) == protocol
    torch.manual_seed(0)  # the CLI's default --seed
    same = bm.create_model("blt_bl", num_layers=4, in_chans=1)
    same.pretrained_cfg = same.pretrained_cfg.replace(input_size=(1, 32, 32))
    want = extract_features(same, stimuli, layers="layer3", stimulus=protocol, batch_size=3,
                            progress=False)  # fmt: skip
    assert got.steps.tolist() == list(range(6))
    assert torch.equal(got.features["layer3"], want.features["layer3"])
    static = extract_features(same, stimuli, layers="layer3", timesteps=6, batch_size=3,
                              progress=False)  # fmt: skip
    assert not torch.equal(got.features["layer3"], static.features["layer3"])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, r"--stimulus: cannot read"),
        ("{not json", r"is not a JSON file"),
        ('{"protocol": "Flash", "timesteps": 4}', r"unknown protocol 'Flash'"),
        ('{"protocol": "BackwardMask", "timesteps": 4, "soa": 2.5}', r"soa must be an integer"),
        ('["BackwardMask"]', r"not a protocol record"),
    ],
)
def test_cli_stimulus_file_errors(stimuli, tmp_path, capsys, content, match) -> None:
    spec = tmp_path / "p.json"
    if content is not None:
        spec.write_text(content)
    rc = main(["extract", "blt_bl_tiny", str(stimuli), "--stimulus", str(spec), "--out",
               str(tmp_path / "f.h5"), "--no-progress"])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "error:" in err and re.search(match, err), err
    assert not (tmp_path / "f.h5").exists()
