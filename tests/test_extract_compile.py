"""``extract_features(..., compile=...)``: the clock through ``torch.compile`` (issue 17)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import blt_models as bm
from blt_models.errors import InvalidArgumentError
from blt_models.extract import extract_features

T = 5


@pytest.fixture(scope="module")
def model() -> bm.ClockedModel:
    torch.manual_seed(0)
    return bm.create_model("blt_bl", num_layers=4, in_chans=1, timesteps=T).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(5, 1, 32, 32, generator=torch.Generator().manual_seed(2))


def test_compiled_capture_is_one_graph_per_batch_size_and_equal(model, images, tmp_path) -> None:
    """dynamo's capture (the eager backend: no code generation, the same kernels) writes the same
    rows, in memory and to a file, with one graph for full batches and one for the last."""
    torch._dynamo.reset()
    counters.clear()
    eager = extract_features(model, images, batch_size=2, progress=False)
    compiled = extract_features(
        model, images, batch_size=2, progress=False, compile={"backend": "eager"}
    )
    assert counters["stats"]["unique_graphs"] == 2  # batches of 2, then the last one of 1
    assert compiled.metadata["compile"] == {"dynamic": False, "backend": "eager"}
    assert eager.metadata["compile"] is None
    for name in eager.features:
        assert torch.equal(eager.features[name], compiled.features[name]), name
    on_disk = extract_features(
        model, images, batch_size=2, progress=False, out=tmp_path / "f.h5",
        compile={"backend": "eager"}, steps=[1, -1], layers=["layer1", "layer3"],
    )  # fmt: skip
    for name in on_disk.features:
        assert torch.equal(on_disk.features[name][:], eager.features[name][:, [1, -1]]), name


def test_compile_arguments_are_checked(model, images) -> None:
    with pytest.raises(InvalidArgumentError, match="no argument 'fullgrph'"):
        extract_features(model, images, progress=False, compile={"fullgrph": True})
    with pytest.raises(InvalidArgumentError, match="True, False or a dict"):
        extract_features(model, images, progress=False, compile="yes")


@pytest.mark.slow
def test_inductor_extraction_matches_eager(model, images) -> None:
    torch._dynamo.reset()
    eager = extract_features(model, images, batch_size=5, progress=False)
    compiled = extract_features(model, images, batch_size=5, progress=False, compile=True)
    for name in eager.features:
        ref, got = eager.features[name], compiled.features[name]
        rel = (got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)
        assert rel < 1e-4, (name, rel.item())
