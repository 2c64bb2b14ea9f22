"""The ConvRNNs of Nayebi et al. 2022: parity with the TensorFlow reference, conversion, tags.

Parity fixtures (``tests/fixtures/convrnn``, see its README) were made with the real reference
code under TensorFlow: seeded random weights saved as TF checkpoints with the reference's
variable names (reduced widths, 10 classes, 96 px), and the reference's outputs of every layer at
every step for the ``default``, ``constant`` and ``neural`` presentations. The port reads the
checkpoints without TensorFlow (``blt-models convert``'s path) and must match every layer, step
and presentation, and the decoded logits, to a relative error < 1e-4.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

import blt_models as bm
from blt_models._checkpoint import load_state_dict_strict
from blt_models._convert import convert_checkpoint, load_convrnn_checkpoint
from blt_models._convert_convrnn import inspect_convrnn_variables
from blt_models.errors import PartialHookWarning
from blt_models.models.convrnn import CONVRNN_MODELS, ConvRNN, convrnn_spec, tf_to_state_dict
from blt_models.stimuli import Presentation, convrnn_protocol, protocol_of

FIXTURES = Path(__file__).parent / "fixtures" / "convrnn"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
MODELS = sorted(MANIFEST["models"])
MODES = ("default", "constant", "neural")
TOL = 1e-4
# The slowest fixtures (intermediate, 26-30 steps) run every mode in the slow target only.
SLOW = {"ugrnn_intermediate_t30", "ugrnn_intermediate_t30_tmaxconf",
        "ugrnn_intermediate_t30_dthresh", "lstm_intermediate", "intersectionrnn_intermediate"}  # fmt: skip


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


@cache
def _images() -> torch.Tensor:
    """The fixtures' normalised inputs, NCHW ``[2, 3, 96, 96]``."""
    inputs = np.load(FIXTURES / "images.npz")["inputs_96"]
    return torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())


@cache
def _model(name: str) -> ConvRNN:
    model, _ = load_convrnn_checkpoint(FIXTURES / name / "model.ckpt")
    return model.eval()


def _errors(model: ConvRNN, name: str, mode: str) -> dict[str, float]:
    info = MANIFEST["models"][name]["modes"][mode]
    ref = np.load(FIXTURES / name / "outputs.npz")
    protocol = convrnn_protocol(f"convrnn_{name}", mode, timesteps=info["steps"])
    assert (protocol.timesteps, protocol.off) == (info["steps"], info["image_off"])
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        out = model.forward_timesteps(protocol.apply(_images().to(dtype)), layers="all")
        decoded = model.decode(out.logits, out.steps)
    errors = {}
    for layer in model.layer_names:
        f = out.features[layer].numpy()  # [T, B, C, H, W]
        h, w = f.shape[-2:]
        probe = np.stack([f[..., 0, 0], f[..., h - 1, w - 1], f[..., h // 2, w // 2]], 2)
        errors[layer] = max(
            _rel(f.mean((3, 4)), ref[f"{mode}/{layer}/mean"]),
            _rel(probe, ref[f"{mode}/{layer}/probe"]),
            _rel(f[info["full_steps"]].transpose(0, 1, 3, 4, 2), ref[f"{mode}/{layer}/full"]),
        )
    errors["logits"] = _rel(out.logits.numpy(), ref[f"{mode}/logits"])
    errors["decoded"] = _rel(decoded.numpy(), ref[f"{mode}/decoded"])
    # The decoded answer is the logits of the reference's chosen step, for each image.
    steps = ref[f"{mode}/decoded_step"]
    for b, t in enumerate(steps):
        assert _rel(decoded[b].numpy(), ref[f"{mode}/logits"][t, b]) < TOL
    return errors


# --------------------------------------------------------------------------- parity
def test_fixtures_cover_every_model():
    assert set(MODELS) == set(CONVRNN_MODELS)


def _parity_cases():
    cases = []
    for name in MODELS:
        for dtype in ("float64", "float32"):
            slow = name in SLOW or (dtype == "float32" and name not in F32_DEFAULT)
            cases.append(
                pytest.param(name, dtype, marks=pytest.mark.slow) if slow else (name, dtype)
            )
    return cases


F32_DEFAULT = {"rgc_shallow", "rgc_intermediate_dthresh"}


@pytest.mark.parametrize(("name", "dtype"), _parity_cases())
def test_parity_every_layer_step_and_presentation(name, dtype):
    """In float64 the port is within 1e-4 of the float32 reference everywhere (what remains is
    the reference's own float32 rounding, which the recurrent dynamics amplify over the 26
    neural steps); the float32 port within 3e-4 (its rounding and the reference's add up)."""
    tol = TOL if dtype == "float64" else 3 * TOL
    model = copy.deepcopy(_model(name)).to(getattr(torch, dtype))
    worst = {}
    for mode in MODES:
        errors = _errors(model, name, mode)
        bad = {k: v for k, v in errors.items() if not v < tol}
        assert not bad, f"{name} {mode} {dtype}: relative errors {bad}"
        worst[mode] = f"{max(errors.values()):.1e}"
    print(f"{name} {dtype}: max rel err {worst}")


@pytest.mark.parametrize("name", [n for n in ("rgc_shallow", "ugrnn_shallow") if n in MODELS])
def test_static_image_is_the_constant_presentation(name):
    """A static image [B, C, H, W] is shown at every step, as for every other family."""
    model = _model(name)
    info = MANIFEST["models"][name]["modes"]["constant"]
    ref = np.load(FIXTURES / name / "outputs.npz")
    with torch.no_grad():
        out = model.forward_timesteps(_images(), timesteps=info["steps"], layers="all")
    assert _rel(out.logits.numpy(), ref["constant/logits"]) < TOL
    for layer in model.layer_names:
        assert _rel(out.features[layer].numpy().mean((3, 4)), ref[f"constant/{layer}/mean"]) < TOL


def test_model_output_is_the_decoded_answer():
    names = [n for n in MODELS if convrnn_spec(n).decoder != "last"] or pytest.skip("no decoder")
    name = names[0]
    model = _model(name)
    ref = np.load(FIXTURES / name / "outputs.npz")
    seq = convrnn_protocol(f"convrnn_{name}", "default").apply(_images())
    with torch.no_grad():
        assert _rel(model(seq).numpy(), ref["default/decoded"]) < TOL


# --------------------------------------------------------------------------- decoders
def _decoder_model(decoder: str, timesteps: int = 14) -> ConvRNN:
    return ConvRNN(cell="ugrnn", depth="shallow", decoder=decoder, timesteps=timesteps,
                   num_classes=3, channels=[2] * 5)  # fmt: skip


def test_decoders_pick_the_reference_step():
    logits = torch.zeros(10, 2, 3)
    steps = torch.arange(10)
    logits[4, :, 0] = 50.0  # before the window [6, 10): ignored
    logits[7, 0, 1], logits[8, 0, 1] = 3.0, 3.0  # a tie: the first step wins
    logits[9, 1, 2] = 5.0
    logits[6, 1, 2] = 4.0  # reaches 0.9 first: the threshold decoder stops here
    conf = _decoder_model("max_conf")
    got = conf.decode(logits, steps)
    torch.testing.assert_close(got, torch.stack([logits[7, 0], logits[9, 1]]))
    thresh = _decoder_model("thresh")
    got = thresh.decode(logits, steps)
    # softmax([0, 3, 0]) peaks at 0.909 >= 0.9: step 7; image 1 reaches 0.965 at step 6.
    torch.testing.assert_close(got[0], logits[7, 0])
    torch.testing.assert_close(got[1], logits[6, 1])
    torch.testing.assert_close(_decoder_model("last").decode(logits, steps), logits[-1])


def test_decoder_models_need_a_window():
    with pytest.raises(bm.TimestepsError, match="timesteps > 6"):
        _decoder_model("max_conf", timesteps=6)
    _decoder_model("last", timesteps=6)
    with pytest.raises(bm.TimestepsError, match=">= 2"):
        _decoder_model("last", timesteps=1)


# --------------------------------------------------------------------------- registry
def test_twenty_models_with_imagenet_tags_and_protocols():
    names = bm.list_models("convrnn*")
    assert names == sorted(f"convrnn_{n}" for n in CONVRNN_MODELS) and len(names) == 20
    assert bm.list_pretrained("convrnn*") == [f"{n}.imagenet" for n in names]
    for name in names:
        spec = convrnn_spec(name)
        cfg = bm.get_pretrained_cfg(name, "imagenet")
        assert cfg.url == (
            f"https://convrnnckpts.s3-us-west-1.amazonaws.com/{spec.name}/model.ckpt.index"
        )
        assert cfg.sha256 is None and "no SHA-256" in cfg.source
        protocol = protocol_of(cfg)
        assert protocol == convrnn_protocol(name, "default")
        assert protocol.blank == 0.5 and protocol.timesteps == cfg.timesteps == spec.timesteps
        constant = "_t30" in name or "_t22" in name
        assert protocol.off == (None if constant else 12)
        assert cfg.timesteps == (30 if "_t30" in name else 22 if "_t22" in name
                                 else 16 if "shallow" in name else 17)  # fmt: skip


def test_protocols():
    neural = convrnn_protocol("convrnn_rgc_intermediate", "neural")
    assert (neural.timesteps, neural.off, neural.blank) == (26, 10, 0.5)
    assert convrnn_protocol("convrnn_ugrnn_shallow", "constant", timesteps=5).off is None
    custom = convrnn_protocol("convrnn_ugrnn_shallow", "custom", timesteps=20, image_off=3)
    assert (custom.timesteps, custom.off) == (20, 3)
    seq = convrnn_protocol("convrnn_gru_shallow").apply(torch.zeros(2, 3, 8, 8))
    assert seq.shape == (16, 2, 3, 8, 8) and (seq[12:] == 0.5).all() and (seq[:12] == 0).all()
    with pytest.raises(bm.StimulusError, match="26 steps"):
        convrnn_protocol("convrnn_gru_shallow", "neural", timesteps=10)
    with pytest.raises(bm.StimulusError, match="ConvRNN"):
        convrnn_protocol("blt_bl")
    with pytest.raises(bm.StimulusError, match="mode"):
        convrnn_protocol("convrnn_gru_shallow", "flash")
    # An untrained architecture claims no training protocol; other families record none.
    assert protocol_of(bm.create_model("convrnn_timedecay_shallow")) is None
    assert protocol_of(bm.create_model("blt_bl_tiny")) is None


@pytest.mark.slow
def test_published_architectures_have_the_authors_parameter_counts():
    """Counts of the reference graphs' variables (memory_decay scalars included), millions."""
    counts = {"timedecay_shallow": 4.20, "simplernn_shallow": 6.27, "gru_shallow": 25.43,
              "lstm_shallow": 21.13, "intersectionrnn_shallow": 32.51, "ugrnn_shallow": 18.36,
              "rgc_shallow": 23.96, "timedecay_intermediate": 16.40,
              "simplernn_intermediate": 33.51, "gru_intermediate": 67.73,
              "lstm_intermediate": 84.83, "intersectionrnn_intermediate": 84.83,
              "ugrnn_intermediate": 50.62, "rgc_intermediate": 15.45}  # fmt: skip
    for name, millions in counts.items():
        model = bm.create_model(f"convrnn_{name}")
        n = sum(p.numel() for p in model.parameters())
        # memoryless nodes hold a memory_decay scalar too (0, not a parameter here)
        n += sum(m.cell is None for m in model._layers()) + 1  # + imnetds'
        assert abs(n / 1e6 - millions) < 0.006 + 0.0005 * millions, (name, n)


# --------------------------------------------------------------------------- conversion
def _fixture_with_slots() -> str:
    return next(n for n in MODELS if MANIFEST["models"][n]["has_optimizer_slots"])


def test_convert_cli_writes_a_folder_that_loads_with_local_dir(tmp_path, capsys):
    name = _fixture_with_slots()  # with Momentum slots and global_step: both ignored
    out = tmp_path / "converted"
    from blt_models.cli import main

    assert main(["convert", str(FIXTURES / name), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"convrnn_{name}" in printed and "verified" in printed
    loaded = bm.create_model(f"local-dir:{out}").eval()
    reference = _model(name)
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=0)
    assert protocol_of(loaded) == convrnn_protocol(f"convrnn_{name}")
    assert loaded.pretrained_cfg.architecture == f"convrnn_{name}"


def test_python_converter_and_prefix_forms(tmp_path):
    name = MODELS[0]
    for form in (FIXTURES / name, FIXTURES / name / "model.ckpt",
                 FIXTURES / name / "model.ckpt.index"):  # fmt: skip
        model, how = convert_checkpoint(form)
        assert model.pretrained_cfg.architecture == f"convrnn_{name}" and "variables" not in how
    out = bm.convert_convrnn_checkpoint(FIXTURES / name, tmp_path / "x")
    assert (out / "model.safetensors").is_file()


def _shapes(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v["shape"]) for k, v in MANIFEST["models"][name]["variables"].items()}


def test_foreign_and_damaged_checkpoints_are_refused_with_a_report():
    with pytest.raises(bm.ConvRNNCheckpointError, match="Found: 2 variables.*dense/kernel"):
        inspect_convrnn_variables({"dense/kernel": (3, 4), "dense/bias": (4,)})
    name = next(n for n in MODELS if convrnn_spec(n).cell not in ("timedecay",))
    shapes = _shapes(name)
    with pytest.raises(bm.ConvRNNCheckpointError, match="missing in"):
        inspect_convrnn_variables(
            {
                k: v
                for k, v in shapes.items()
                if not (k.startswith("tnn_model/conv5/") and "Cell" in k)
            }
        )
    no_top = {k: v for k, v in shapes.items() if "/conv5/" not in k}
    with pytest.raises(bm.ConvRNNCheckpointError, match="nodes"):
        inspect_convrnn_variables(no_top)
    with pytest.raises(bm.ConvRNNCheckpointError, match="not convrnn_rgc_shallow"):
        inspect_convrnn_variables(shapes, arch="convrnn_rgc_shallow" if "rgc" not in name
                                  else "convrnn_gru_shallow")  # fmt: skip


def test_look_alike_models_need_the_folder_name_or_arch(tmp_path):
    base = "ugrnn_intermediate" if "ugrnn_intermediate" in MODELS else None
    name = base or next(n for n in MODELS if convrnn_spec(n).depth == "intermediate")
    spec = convrnn_spec(name)
    twins = [n for n, s in CONVRNN_MODELS.items()
             if (s.cell, s.depth, s.decoder) == (spec.cell, spec.depth, spec.decoder)]  # fmt: skip
    shapes = _shapes(name)
    if len(twins) == 1:
        assert inspect_convrnn_variables(shapes).arch == f"convrnn_{name}"
        return
    with pytest.raises(bm.ConvRNNCheckpointError, match="pass arch="):
        inspect_convrnn_variables(shapes, name_hint="/tmp/somewhere/model.ckpt")
    for twin in twins:
        assert inspect_convrnn_variables(shapes, arch=f"convrnn_{twin}").arch == f"convrnn_{twin}"
        hinted = inspect_convrnn_variables(shapes, name_hint=f"/ckpts/{twin}/model.ckpt")
        assert hinted.arch == f"convrnn_{twin}"
        # Only the checkpoint's own folder counts: a look-alike's folder further up, or a folder
        # that merely contains a name, must not choose the clock silently.
        for elsewhere in (
            f"/ckpts/{twin}/variant/model.ckpt",
            f"/ckpts/{twin}/{twin}_x/model.ckpt",
        ):
            with pytest.raises(bm.ConvRNNCheckpointError, match="pass arch="):
                inspect_convrnn_variables(shapes, name_hint=elsewhere)


def test_relative_checkpoint_path_names_its_folder(monkeypatch):
    twin = "ugrnn_intermediate_t30"
    if twin not in MODELS:
        pytest.skip("no t30 fixture")
    monkeypatch.chdir(FIXTURES / twin)
    model, how = load_convrnn_checkpoint("model.ckpt")
    assert model.pretrained_cfg.architecture == f"convrnn_{twin}" and "folder name" in how
    assert model.timesteps == 30 and protocol_of(model).off is None


def test_memory_of_a_memoryless_layer_must_be_zero():
    name = next(n for n in MODELS if convrnn_spec(n).cell != "timedecay")
    from blt_models._tf_checkpoint import read_tf_checkpoint

    variables = read_tf_checkpoint(FIXTURES / name / "model.ckpt")
    variables["tnn_model/conv2/memory_decay"] = np.array([0.5], np.float32)
    with pytest.raises(bm.InvalidWeightsError, match="conv2/memory_decay"):
        tf_to_state_dict(variables, _model(name))


def test_unknown_variable_fails_the_strict_load(tmp_path):
    name = MODELS[0]
    from blt_models._tf_checkpoint import read_tf_checkpoint

    variables = read_tf_checkpoint(FIXTURES / name / "model.ckpt")
    variables["tnn_model/conv2/extra/weights"] = np.zeros((1,), np.float32)
    model = _model(name)
    with pytest.raises(bm.CheckpointMismatchError):
        load_state_dict_strict(model, tf_to_state_dict(variables, model), what="test")


# --------------------------------------------------------------------------- pretrained tags
@pytest.fixture
def served_tag(tmp_path, monkeypatch):
    """``convrnn_<name>.imagenet`` pointed at a fixture folder (file:// URL), a fresh torch.hub
    dir; returns (arch, tag name)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
    name = _fixture_with_slots()
    served = tmp_path / "bucket" / name
    served.mkdir(parents=True)
    for f in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        shutil.copy(FIXTURES / name / f, served / f)
    arch = f"convrnn_{name}"
    cfg = bm.get_pretrained_cfg(arch, "imagenet")
    spec = inspect_convrnn_variables(_shapes(name))
    kwargs = dict(spec.kwargs)
    monkeypatch.setattr(cfg, "url", (served / "model.ckpt.index").as_uri())
    monkeypatch.setattr(cfg, "num_classes", kwargs.pop("num_classes"))
    monkeypatch.setattr(cfg, "class_names", None)
    monkeypatch.setattr(cfg, "model_args", kwargs)
    return arch, served


def test_imagenet_tag_downloads_converts_once_and_warns_unverified(served_tag):
    arch, served = served_tag
    with pytest.warns(bm.UnverifiedWeightsWarning, match="pins no SHA-256"):
        model = bm.create_model(f"{arch}.imagenet", pretrained=True).eval()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), _model(arch.removeprefix("convrnn_"))(x))
    assert "_prelude_cache" in model.__dict__  # a tag's settings (its config) do not stop it
    folder = Path(torch.hub.get_dir()) / "checkpoints" / f"convrnn-{served.name}"
    assert (folder / "model.safetensors").is_file()
    shutil.rmtree(served)  # the converted file is used from now on: no download, no TF files
    (folder / "model.ckpt.index").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.UnverifiedWeightsWarning)
        again = bm.create_model(f"{arch}.imagenet", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert protocol_of(again) is not None and again.pretrained_cfg.tag == "imagenet"


def test_imagenet_tag_cache_from_an_older_converter_is_made_again(served_tag):
    """A cached conversion without this converter's version (an older blt-models, which may have
    mapped the variables differently) must not be loaded as it is: it is converted again."""
    from safetensors.torch import load_file, save_file

    arch, served = served_tag
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.UnverifiedWeightsWarning)
        bm.create_model(f"{arch}.imagenet", pretrained=True)
        converted = Path(torch.hub.get_dir()) / "checkpoints" / f"convrnn-{served.name}"
        converted = converted / "model.safetensors"
        stale = {k: torch.zeros_like(v) for k, v in load_file(converted).items()}
        save_file(stale, str(converted), metadata={"format": "pt"})  # what an old cache holds
        model = bm.create_model(f"{arch}.imagenet", pretrained=True).eval()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), _model(arch.removeprefix("convrnn_"))(x))


def test_imagenet_tag_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
    cfg = bm.get_pretrained_cfg("convrnn_rgc_intermediate", "imagenet")
    monkeypatch.setattr(cfg, "url", "http://127.0.0.1:9/rgc_intermediate/model.ckpt.index")
    with pytest.raises(bm.WeightsUnavailableError, match="127.0.0.1:9.*prefetch"):
        bm.create_model("convrnn_rgc_intermediate.imagenet", pretrained=True)


def test_wrong_weights_for_a_tag_are_refused(served_tag, monkeypatch):
    """The cached conversion must fit the tag's architecture strictly (not silently half-load)."""
    arch, _ = served_tag
    cfg = bm.get_pretrained_cfg(arch, "imagenet")
    monkeypatch.setattr(cfg, "model_args", {})  # the published widths: the small file must fail
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bm.UnverifiedWeightsWarning)
        with pytest.raises(bm.CheckpointMismatchError):
            bm.create_model(f"{arch}.imagenet", pretrained=True)


def test_sequence_and_presentation_protocol_run_on_the_model():
    model = _decoder_model("last", timesteps=8).eval()
    x = torch.randn(2, 3, 80, 80)
    seq = Presentation(timesteps=8, off=4, blank=0.5).apply(x)
    with torch.no_grad():
        out = model.forward_timesteps(seq, layers="all")
        static = model.forward_timesteps(x, layers="all")
    assert out.first_step == {f"conv{k}": k - 1 for k in range(1, 6)}
    # Frames differ from step 4: conv1 at step 4 differs, conv2 only from step 5.
    assert torch.equal(out.features["conv2"][:5], static.features["conv2"][:5])
    assert not torch.equal(out.features["conv2"][5], static.features["conv2"][5])
    assert not torch.equal(out.features["conv1"][4], static.features["conv1"][4])


def test_layer_steps_before_the_image_arrives_run_once_for_the_batch(monkeypatch):
    """Layer n has seen no frame before step n, so it runs on one sample for the whole batch
    (the feedback model included): the batch gives what each image gives alone, and what the
    model hands out has B rows of its own memory."""
    from blt_models.models import convrnn

    torch.manual_seed(0)
    model = bm.create_model("convrnn_rgc_intermediate", channels=[4] * 10,
                            cell_channels=[4] * 7, num_classes=5, timesteps=14).eval()  # fmt: skip
    x = torch.randn(3, 3, 64, 64)
    rows: dict[str, list[int]] = {name: [] for name in model.layer_names}
    layer_forward = convrnn.ConvRNNLayer.forward
    fresh = copy.deepcopy(model)  # keeps no prelude: it computes one on its first call
    names = {id(getattr(fresh, name)): name for name in model.layer_names}

    def counting(self, r, f, state):
        rows[names[id(self)]].append(int(r.shape[0]))
        return layer_forward(self, r, f, state)

    with torch.no_grad():
        alone = [model.forward_timesteps(x[i : i + 1], layers="all") for i in range(3)]
        monkeypatch.setattr(convrnn.ConvRNNLayer, "forward", counting)
        batch = fresh.forward_timesteps(x, layers="all")
        monkeypatch.undo()
        model.timesteps = 4  # the readout at step 3 reads conv10 at step 2: before the image
        early = model(x)
    for n, name in enumerate(model.layer_names[1:], 1):  # conv1 runs once on the image
        assert rows[name] == [1] * n + [3] * (14 - n), name
    for name, value in batch.features.items():
        want = torch.cat([a.features[name] for a in alone], 1)
        torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-6)
        n = int(name[4:]) - 1
        assert not torch.equal(value[n:, 0], value[n:, 2])
    torch.testing.assert_close(batch.logits, torch.cat([a.logits for a in alone], 1))
    assert early.shape == (3, 5) and torch.equal(early[0], early[2])
    early.add_(1)  # writable: an expanded view of one sample would refuse the write


def _small_rgc(**kwargs) -> ConvRNN:
    torch.manual_seed(0)
    kwargs = {"timesteps": 12, **kwargs}
    return bm.create_model("convrnn_rgc_intermediate", channels=[4] * 10, cell_channels=[4] * 7,
                           num_classes=5, **kwargs).eval()  # fmt: skip


def _layer_calls(monkeypatch) -> list[int]:
    """Counts ConvRNNLayer calls (their batch rows) from now on."""
    from blt_models.models import convrnn

    calls: list[int] = []
    layer_forward = convrnn.ConvRNNLayer.forward

    def counting(self, r, f, state):
        calls.append(int(r.shape[0]))
        return layer_forward(self, r, f, state)

    monkeypatch.setattr(convrnn.ConvRNNLayer, "forward", counting)
    return calls


def _fresh(model: ConvRNN, x: torch.Tensor):
    """What the model gives without a kept prelude (a deep copy keeps none)."""
    twin = copy.deepcopy(model)
    assert "_prelude_cache" not in twin.__dict__
    with torch.no_grad():
        return twin.forward_timesteps(x, layers="all")


def _assert_same(a, b) -> None:
    assert torch.equal(a.logits, b.logits)
    for name in a.features:
        assert torch.equal(a.features[name], b.features[name]), name


def test_prelude_is_kept_between_calls_and_gives_the_same_values(monkeypatch):
    """Layer-steps before the image reaches a layer are computed once per weights and size and
    reused; every value is bit for bit what recomputing gives."""
    model = _small_rgc()
    x = torch.randn(2, 3, 112, 112)
    first = _fresh(model, x)
    calls = _layer_calls(monkeypatch)
    with torch.inference_mode():
        a = model.forward_timesteps(x, layers="all")
    assert calls.count(1) == sum(range(1, 10))  # layer n at steps 0 .. n-1, n = 1 .. 9
    calls.clear()
    with torch.no_grad():  # kept under inference_mode, read under no_grad
        b = model.forward_timesteps(x, layers="all")
        y = model(x)
    assert calls and 1 not in calls  # only conv2..conv10 on the batch, at their image steps
    _assert_same(a, first)
    _assert_same(b, first)
    assert torch.equal(y, first.logits[-1])
    # What the caller gets is the caller's: writing into it changes no later result.
    with torch.no_grad():
        model.timesteps = 4  # logits of step 3 read conv10 at step 2, a kept value
        model(x[:1]).add_(100)
        model.timesteps = 12
        model.forward_timesteps(x[:1], layers="all").features["conv9"].add_(100)
        again = model.forward_timesteps(x[:1], layers="all")
    _assert_same(again, _fresh(model, x[:1]))


def _swap_channels(model: ConvRNN) -> None:
    w = model.conv6.cell.out_tau.pointwise.weight
    w.data[[0, 1]] = w.data[[1, 0]].clone()  # same values, new order; no version change


@pytest.mark.parametrize(
    ("change", "changes_values"),
    [
        (lambda m: m.conv7.conv.weight.data.mul_(1.5), True),  # .data: no autograd version
        (_swap_channels, True),
        (lambda m: m.conv9.cell.cell_tau.depthwise.weight.detach().numpy().__setitem__(0, 0.3),
         True),
        (lambda m: m.load_state_dict(_small_rgc().apply(_reseed).state_dict()), True),
        (lambda m: setattr(m.conv5.cell, "tau_offset", 0.5), True),  # a setting, no tensor
        (lambda m: m.double(), False),
        (lambda m: m.to(memory_format=torch.channels_last), False),
    ],
    ids=["data_mul", "swapped_channels", "numpy_write", "load_state_dict", "setting", "double",
         "channels_last"],
)  # fmt: skip
def test_prelude_is_recomputed_after_any_change_to_the_model(change, changes_values):
    model = _small_rgc()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = model.forward_timesteps(x, layers="all")
    change(model)
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad():
        after = model.forward_timesteps(x, layers="all")
    _assert_same(after, _fresh(model, x))
    assert after.features["conv10"].dtype == x.dtype
    if changes_values:  # the kept steps themselves changed (conv10 before the image)
        assert not torch.equal(after.features["conv10"][:9], before.features["conv10"][:9])


def _reseed(module: torch.nn.Module) -> None:
    for p in module.parameters(recurse=False):
        torch.nn.init.normal_(p, std=0.2)


def test_prelude_follows_size_autocast_hooks_and_autograd(monkeypatch):
    model = _small_rgc()
    big, small = torch.randn(2, 3, 128, 128), torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        for x in (big, small, big):  # each size its own prelude
            _assert_same(model.forward_timesteps(x, layers="all"), _fresh(model, x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.forward_timesteps(big, layers="all")
    twin = copy.deepcopy(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _assert_same(mixed, twin.forward_timesteps(big, layers="all"))
    with torch.no_grad():  # keeps the float32 prelude of this size again
        kept = model.forward_timesteps(big, layers="all")
    # A hook sees every call it would see without the kept prelude.
    seen: list[int] = []
    handle = model.conv8.cell.register_forward_hook(lambda m, i, o: seen.append(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialHookWarning)
        model.forward_timesteps(big, layers="all")
    handle.remove()
    assert len(seen) == 12  # conv8's cell at every step: 7 before the image, 5 after
    # With autograd the prelude is computed in the graph: gradients reach the weights that only
    # the image-independent steps use as they do without a kept prelude.
    grads = []
    for m in (model, copy.deepcopy(model)):
        m.zero_grad()
        out = m.forward_timesteps(big, layers="all")
        out.features["conv10"][:9].sum().backward()
        grads.append(m.conv10.conv.bias.grad.clone())
        _assert_same(out, kept)
    assert grads[0].abs().sum() > 0 and torch.equal(grads[0], grads[1])


def test_hooks_keep_what_the_submodule_returned():
    """A hook that keeps a submodule's output without copying (Brain-Score's PytorchWrapper
    does) keeps that output: nothing later writes into it."""
    model = _small_rgc()
    x = torch.randn(2, 3, 112, 112)
    kept: dict[str, tuple] = {}
    names = ["conv2.conv", "conv4.conv", "conv5.cell.out_input_to_out", "conv5.cell.cell_tau",
             "conv6.cell.out_gate", "conv7.cell.out_feedback_to_out"]  # fmt: skip

    def keep(name: str):  # the first call: step 0 (or the first step the module runs)
        return lambda module, inputs, output: kept.setdefault(name, (inputs[0], output)) and None

    for name in names:
        model.get_submodule(name).register_forward_hook(keep(name))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialHookWarning)
        model.forward_timesteps(x, layers="all")
        for name, (inputs, output) in kept.items():
            module = model.get_submodule(name)
            assert torch.equal(type(module).forward(module, inputs), output), name


def _identity_conv(conv: torch.nn.Conv2d) -> None:
    """Weights that make ``conv`` (c -> c, odd kernel, stride 1) return its input exactly."""
    with torch.no_grad():
        conv.weight.zero_()
        k = conv.kernel_size[0] // 2
        conv.weight[range(conv.out_channels), range(conv.in_channels), k, k] = 1.0
        conv.bias.zero_()


@pytest.mark.parametrize(
    ("arch", "path"), [("convrnn_rgc_intermediate", "conv2.conv"),
                       ("convrnn_ugrnn_intermediate", "conv5.post_conv")],
)  # fmt: skip
def test_a_lesioned_submodule_changes_only_what_it_computes(arch, path):
    """``nn.Identity()`` in place of a convolution (a lesion) gives what a convolution that
    returns its input gives: the layers' in-place updates never write into a map they do not
    own (conv1's map of a static image, a cell's state)."""
    torch.manual_seed(0)
    widths = {"convrnn_rgc_intermediate": {"cell_channels": [4] * 7}}.get(arch, {})
    model = bm.create_model(arch, channels=[4] * 10, num_classes=5, timesteps=12, **widths).eval()
    identity = copy.deepcopy(model)
    _identity_conv(identity.get_submodule(path))
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent), leaf, torch.nn.Identity())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for _ in range(2):  # computed, then kept
            got, want = (m.forward_timesteps(x, layers="all") for m in (model, identity))
            for name in want.features:
                torch.testing.assert_close(got.features[name], want.features[name], rtol=1e-6,
                                           atol=1e-6, msg=name)  # fmt: skip
    assert torch.equal(got.features["conv1"][0], got.features["conv1"][5])


def test_traced_models_compute_their_prelude():
    """``torch.jit.trace`` of a model that has kept a prelude records the computation, not the
    kept values: other weights loaded into the trace give their own features."""
    model, other = _small_rgc(), _small_rgc().apply(_reseed)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(x)
        traced = torch.jit.trace(model, x)
        traced.load_state_dict(other.state_dict())
        torch.testing.assert_close(traced(x), other(x))


def _instance_forward(m: ConvRNN, scale: float) -> None:
    cell = m.conv6.cell
    plain = type(cell).forward
    cell.forward = lambda x, state, r, f: plain(cell, x, state, r, f * scale)


@pytest.mark.parametrize(
    "change",
    [lambda m, v: setattr(m.conv5.cell, "tau_offset", np.float32(v)),
     lambda m, v: setattr(m.conv5.cell, "tau_offset", torch.tensor(v)),
     _instance_forward],
    ids=["numpy_scalar", "tensor_scalar", "instance_forward"],
)  # fmt: skip
def test_prelude_follows_settings_of_any_type(change):
    """A setting swept through values of one type (NumPy or tensor scalars, a replaced
    ``forward``) gives at each value what a model built with it gives."""
    model = _small_rgc()
    x = torch.randn(2, 3, 112, 112)
    for value in (0.9, 0.3):
        change(model, value)
        twin = _small_rgc()
        change(twin, value)
        with torch.no_grad():
            _assert_same(model.forward_timesteps(x, layers="all"), twin.forward_timesteps(x, layers="all"))  # fmt: skip  # noqa: E501


def test_prelude_follows_patched_helpers_and_global_numerics(monkeypatch):
    from blt_models.models import convrnn

    model = _small_rgc()
    x = torch.randn(2, 3, 112, 112)
    plain = convrnn._decay_and_drive
    with torch.no_grad():
        model.forward_timesteps(x, layers="all")
        monkeypatch.setattr(convrnn, "_decay_and_drive", lambda a, s, t, b, d, g: plain(a, s, t, b, d, g) * 0.5)  # fmt: skip  # noqa: E501
        _assert_same(model.forward_timesteps(x, layers="all"), _fresh(model, x))
        monkeypatch.undo()
        torch.set_float32_matmul_precision("medium")  # bfloat16 matrix products on this CPU
        try:
            medium = model.forward_timesteps(x, layers="all")
        finally:
            torch.set_float32_matmul_precision("highest")
        highest = model.forward_timesteps(x, layers="all")
        _assert_same(highest, _fresh(model, x))
    assert not torch.equal(medium.features["conv10"][:9], highest.features["conv10"][:9])


def test_meta_models_and_vmap_run_as_before():
    meta = bm.create_model("convrnn_rgc_intermediate", device="meta")
    with torch.no_grad():
        assert meta.feature_info[-1]["num_chs"] == 512
        out = meta.forward_timesteps(torch.empty(1, 3, 64, 64, device="meta"), layers="conv10")
    assert out.features["conv10"].device.type == "meta"
    model = _small_rgc()
    x = torch.randn(3, 1, 3, 64, 64)
    with torch.no_grad():
        batched = torch.func.vmap(model)(x)
        torch.testing.assert_close(batched, torch.stack([model(xi) for xi in x]))


def test_prelude_stays_out_of_pickles_and_copies():
    model = _small_rgc()
    with torch.no_grad():
        model(torch.randn(1, 3, 112, 112))
    assert "_prelude_cache" in model.__dict__
    assert "_prelude_cache" not in model.__getstate__()  # what pickle and deepcopy take
    assert "_prelude_cache" not in copy.deepcopy(model).__dict__


# --------------------------------------------------------------------------- integrations
def test_brainscore_default_region_map_for_convrnns():
    """The authors' V4 / IT layers as the default region map (steps are 10 ms by default)."""
    from blt_models.integrations.brainscore_plugin import default_region_layer_map

    model = bm.create_model("convrnn_rgc_intermediate", channels=[2] * 10,
                            cell_channels=[2] * 7, num_classes=3)  # fmt: skip
    assert default_region_layer_map(model.layer_names) == {"V4": "conv5", "IT": "conv9"}
    shallow = _decoder_model("last")
    assert default_region_layer_map(shallow.layer_names) == {"V4": "conv3", "IT": "conv5"}


def test_thingsvision_addresses_see_every_step():
    """The thingsvision adapter's hooks see a ConvRNN layer at a step, as forward_timesteps."""
    from blt_models.integrations.thingsvision import TimeAddressable

    model = _decoder_model("max_conf", timesteps=8).eval()
    wrapped = TimeAddressable(model)
    seen = {}
    module = dict(wrapped.named_modules())["conv3@t4"]
    module.register_forward_hook(lambda m, i, o: seen.setdefault("v", o.detach().clone()))
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        wrapped(x)
        want = model.forward_timesteps(x, layers=["conv3"]).features["conv3"][4]
    torch.testing.assert_close(seen["v"], want)


@pytest.mark.parametrize("bad", [[2] * 4, "abcde", [2, 2, 2, 2, 2.5], [2, 2, 2, 2, True]])
def test_widths_must_be_one_positive_integer_per_layer(bad):
    with pytest.raises(bm.errors.ConfigValueError, match="takes 5 positive integers"):
        bm.create_model("convrnn_gru_shallow", channels=bad)
