"""extract_features(..., stimulus=protocol): the protocol's sequences, recorded and resumable."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

import blt_models as bm
from blt_models.extract import OutputMismatchError, extract_features, load_features
from blt_models.stimuli import (
    RSVP,
    BackwardMask,
    Presentation,
    StimulusError,
    protocol_of,
)

T = 6


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = bm.create_model("blt_bl", num_layers=4, in_chans=1, timesteps=T, num_classes=3).eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(input_size=(1, 32, 32))
    return m


@pytest.fixture(scope="module")
def images():
    return torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(0))


class Images(Dataset):
    """Tensor images; raises at index ``fail`` (a killed run)."""

    def __init__(self, images, fail=None):
        self.images, self.fail = images, fail

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if i == self.fail:
            raise RuntimeError("killed")
        return self.images[i]


def test_extraction_equals_forward_timesteps_on_the_protocol_sequence(model, images):
    protocol = BackwardMask(timesteps=T, soa=2, noise_std=0.1, seed=3)
    feats = extract_features(
        model, images, layers="all", stimulus=protocol, batch_size=3, progress=False,
        memory_format="contiguous",  # bit-equal to forward_timesteps in the model's own layout
    )
    with torch.no_grad():  # the same batches (convolutions may round differently per batch size)
        refs = [
            model.forward_timesteps(protocol.apply(images[i : i + 3], index=range(i, min(i + 3, 7))),
                                    layers="all")
            for i in (0, 3, 6)
        ]  # fmt: skip
    for name in model.layer_names:
        ref = torch.cat([r.features[name].transpose(0, 1) for r in refs])
        assert torch.equal(feats[name], ref), name
    # Noise is seeded by the image's position in the set: one batch gives the same sequence.
    whole = protocol.apply(images)
    assert torch.equal(whole[:, 3:6], protocol.apply(images[3:6], index=[3, 4, 5]))
    assert feats.metadata["stimulus"] == protocol.to_dict()
    assert protocol_of(feats.metadata) == protocol
    # Without the per-step noise: the static image until the mask arrives at step 2.
    masked = extract_features(
        model, images, layers=["layer0"], stimulus=BackwardMask(timesteps=T, soa=2),
        batch_size=3, progress=False,
    )  # fmt: skip
    static = extract_features(model, images, layers=["layer0"], batch_size=3, progress=False)
    assert torch.equal(static["layer0"][:, :2], masked["layer0"][:, :2])
    assert not torch.equal(static["layer0"][:, 2:], masked["layer0"][:, 2:])
    assert protocol_of(static.metadata) is None


def test_file_records_protocol_and_resume_checks_it(model, images, tmp_path):
    protocol = Presentation(timesteps=T, on=0, off=2, noise_std=0.2, seed=1)
    kwargs = dict(layers=["layer1", "layer3"], batch_size=2, progress=False)
    whole = extract_features(model, images, stimulus=protocol, **kwargs)

    out = tmp_path / "flash.h5"
    with pytest.raises(RuntimeError, match="killed"):
        extract_features(model, Images(images, fail=5), out=out, stimulus=protocol, **kwargs)
    assert load_features(out).num_images == 4
    # Resuming with another protocol, or with none, is refused; the same one completes the file.
    other = Presentation(timesteps=T, on=0, off=3, noise_std=0.2, seed=1)
    for wrong in (other, None):
        with pytest.raises(OutputMismatchError, match="stimulus"):
            extract_features(model, Images(images), out=out, stimulus=wrong, **kwargs)
    done = extract_features(model, Images(images), out=out, stimulus=protocol, **kwargs)
    assert done.metadata["complete"] and protocol_of(done.metadata) == protocol
    for name in kwargs["layers"]:
        # Noise is seeded per image position: batching and resuming give the same features.
        assert torch.equal(done[name][:], whole[name]), name


def test_extraction_protocol_errors(model, images):
    with pytest.raises(StimulusError, match="timesteps=8 but the stimulus runs 6"):
        extract_features(model, images, stimulus=Presentation(timesteps=T), timesteps=8)
    with pytest.raises(StimulusError, match="needs mask"):
        extract_features(model, images, stimulus=BackwardMask(timesteps=T, soa=2, mask="image"))
    with pytest.raises(StimulusError, match="needs items"):
        extract_features(model, images, stimulus=RSVP(timesteps=T, items=2))
    with pytest.raises(bm.TimestepsError, match="needs timesteps >= 4"):
        extract_features(model, images, stimulus=Presentation(timesteps=3))
    with pytest.raises(StimulusError, match="must be a blt_models.stimuli protocol"):
        extract_features(model, images, stimulus={"protocol": "Presentation"})
    cornet_s = bm.create_model("cornet_s", num_classes=3)
    with pytest.raises(StimulusError, match="does not take input sequences"):
        extract_features(cornet_s, torch.randn(1, 3, 32, 32), stimulus=Presentation(timesteps=9))


def test_feedforward_model_extracts_one_sweep_per_frame(images):
    model = bm.create_model("cornet_z", num_classes=3, in_chans=1).eval()
    protocol = Presentation(timesteps=3, on=1, off=2)
    feats = extract_features(
        model, images[:2], layers=["IT"], stimulus=protocol, progress=False,
        memory_format="contiguous",
    )
    assert feats["IT"].shape[:2] == (2, 3)
    with torch.no_grad():
        one = model.forward_timesteps(images[:2], layers=["IT"]).features["IT"][0]
        blank = model.forward_timesteps(torch.zeros_like(images[:2]), layers=["IT"])
    assert torch.equal(feats["IT"][:, 1], one)
    assert torch.equal(feats["IT"][:, 0], blank.features["IT"][0])
