"""Extraction memory (issue 12, item 8): what held memory beyond one batch's features and the
model, each tested by its mechanism (RSS figures are in benchmarks/RESULTS.md).

- ``weights_sha256`` streams the state dict tensor by tensor (no serialised copy of the model),
  equals the documented recipe, and a file hashed the old way is refused, not resumed;
- HDF5 feature datasets have no chunk cache (one per dataset: it held up to 8 MiB per layer);
- zarr encodes at most ``ZARR_BYTES_IN_FLIGHT`` of chunks at once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _small_models import small_blt

import blt_models as bm
from blt_models.errors import OutputMismatchError
from blt_models.extract import extract_features, load_features
from blt_models.extract import stores as stores_mod
from blt_models.extract.plan import weights_sha256

T = 4


def small_model() -> bm.ClockedModel:
    return small_blt(T)


def documented_sha256(model: torch.nn.Module) -> str:
    """The recipe of docs/extraction.md, written out independently."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        h.update(json.dumps([name, dtype, list(t.shape)]).encode() + b"\n")
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def format2_sha256(model: torch.nn.Module) -> str:
    """``weights_sha256`` of feature-file format 2: a hash of the whole serialised state dict."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


# ------------------------------------------------------------------ the weights hash
def test_weights_hash_is_the_documented_recipe_without_serialising(monkeypatch):
    model = small_model()
    expected = documented_sha256(model)

    def no_full_copy(*args, **kwargs):
        raise AssertionError("weights_sha256 serialised the whole state dict")

    monkeypatch.setattr("safetensors.torch.save", no_full_copy)
    assert weights_sha256(model) == expected
    # The layout extraction picks (channels_last) and 16-bit / 64-bit weights hash their values.
    model.to(memory_format=torch.channels_last)
    assert weights_sha256(model) == expected
    half = small_model().to(torch.float16)
    assert weights_sha256(half) == documented_sha256(half) != expected


def test_weights_hash_copies_rows_not_tensors(monkeypatch):
    """A channels_last model (as extraction runs it) is hashed one row ``t[i]`` at a time: no
    copy of a whole weight tensor, let alone of the model."""
    model = small_model().to(memory_format=torch.channels_last)
    expected = documented_sha256(model)
    copies: list[int] = []
    contiguous = torch.Tensor.contiguous

    def spy(self, *args, **kwargs):
        out = contiguous(self, *args, **kwargs)
        if out.data_ptr() != self.data_ptr():
            copies.append(out.numel())
        return out

    monkeypatch.setattr(torch.Tensor, "contiguous", spy)
    assert weights_sha256(model) == expected
    monkeypatch.undo()
    largest_row = max(t.numel() // t.shape[0] for t in model.state_dict().values() if t.ndim)
    assert copies and max(copies) <= largest_row


def test_weights_hash_sees_every_value_name_and_shape():
    model = small_model()
    base = weights_sha256(model)
    with torch.no_grad():
        last = sorted(model.state_dict())[-1]
        model.state_dict()[last].view(-1)[-1] += 1e-6  # one value of the last tensor
    assert weights_sha256(model) != base
    # Same bytes under another shape, or another name, is other weights.
    a, b = torch.nn.Module(), torch.nn.Module()
    a.w = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    b.w = torch.nn.Parameter(torch.arange(6.0).reshape(3, 2))
    c = torch.nn.Module()
    c.v = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    assert len({weights_sha256(a), weights_sha256(b), weights_sha256(c)}) == 3
    # Tied tensors (one storage under two names) and buffers of any dtype are hashed as well.
    tied = torch.nn.Module()
    tied.p = torch.nn.Parameter(torch.ones(3))
    tied.register_buffer("q", tied.p.detach())  # shares p's memory
    tied.register_buffer("flag", torch.tensor([True, False]))
    assert weights_sha256(tied) == documented_sha256(tied)


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_file_with_the_format2_hash_is_refused(tmp_path, suffix):
    """A file written before the hash changed has the old value: refused with the usual error
    naming what differs, never resumed as if the weights had changed or were the same."""
    model = small_model()
    x = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = tmp_path / f"old{suffix}"
    kwargs = dict(layers="all", batch_size=2, progress=False)
    extract_features(model, x, out=out, **kwargs)
    meta = load_features(out).metadata
    meta = {k: v for k, v in meta.items() if k not in ("n_done", "complete")}
    meta["format_version"], meta["weights_sha256"] = 2, format2_sha256(model)
    if suffix == ".h5":
        with h5py.File(out, "a") as f:
            f.attrs["metadata"] = json.dumps(meta)
            f.attrs["n_done"], f.attrs["complete"] = 2, False
    else:
        import zarr

        g = zarr.open_group(str(out), mode="a")
        g.attrs.update({"metadata": meta, "n_done": 2, "complete": False})
    with pytest.raises(OutputMismatchError, match=r"format_version; .*weights_sha256"):
        extract_features(model, x, out=out, **kwargs)
    res = extract_features(model, x, out=out, overwrite=True, **kwargs)
    assert res.metadata["weights_sha256"] == documented_sha256(model)
    assert res.metadata["format_version"] == stores_mod.FORMAT_VERSION == 4


# ------------------------------------------------------------------ HDF5 chunk cache
def test_hdf5_feature_datasets_have_no_chunk_cache(tmp_path, monkeypatch):
    model = small_model()
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    seen: dict[str, int] = {}
    commit = stores_mod.FileStore.commit

    def spy(self, *args, **kwargs):
        commit(self, *args, **kwargs)
        for name in self.root["features"]:
            plist = self.root[f"features/{name}"].id.get_access_plist()
            seen[name] = plist.get_chunk_cache()[1]  # (slots, bytes, w0)

    monkeypatch.setattr(stores_mod.FileStore, "commit", spy)
    res = extract_features(model, x, layers="all", out=tmp_path / "f.h5", batch_size=4,
                           progress=False)  # fmt: skip
    assert seen and set(seen.values()) == {0}
    ref = extract_features(model, x, layers="all", batch_size=4, progress=False)
    for name in ref.layers:  # whole chunks written straight to the file: the same data
        torch.testing.assert_close(res[name][:], ref[name], rtol=0, atol=0)


# ------------------------------------------------------------------ zarr chunks in flight
def test_zarr_concurrency_bound():
    cap = stores_mod.ZARR_BYTES_IN_FLIGHT
    assert stores_mod.zarr_concurrency(cap // 4, 10) == 4
    assert stores_mod.zarr_concurrency(cap // 100, 10) == 10  # zarr's own limit
    assert stores_mod.zarr_concurrency(cap * 3, 10) == 1  # one chunk at least
    assert stores_mod.zarr_concurrency(0, 10) == 10


def test_zarr_writes_bound_chunks_in_flight(tmp_path, monkeypatch):
    import zarr

    model = small_model()
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(stores_mod, "ZARR_BYTES_IN_FLIGHT", 1)  # every chunk is over it
    seen: list[tuple[str, int]] = []
    setitem = zarr.Array.__setitem__

    def spy(self, key, value):
        seen.append((self.path, int(zarr.config.get("async.concurrency"))))
        return setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", spy)
    before = zarr.config.get("async.concurrency")
    res = extract_features(model, x, layers="all", out=tmp_path / "f.zarr", batch_size=4,
                           progress=False)  # fmt: skip
    features = [c for path, c in seen if path.startswith("features/")]
    assert len(features) == 2 * len(res.layers) and set(features) == {1}
    assert zarr.config.get("async.concurrency") == before  # restored after each write
    ref = extract_features(model, x, layers="all", batch_size=4, progress=False)
    for name in ref.layers:
        np.testing.assert_array_equal(res[name][:].numpy(), ref[name].numpy())


def test_docs_recipe_gives_the_recorded_hash():
    """The recomputation printed in docs/extraction.md, run as written."""
    import contextlib
    import io
    import re

    docs = (Path(__file__).parents[1] / "docs" / "extraction.md").read_text()
    after = docs.split("`weights_sha256` of a model, recomputed", 1)[1]
    code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    model = small_model().to(memory_format=torch.channels_last)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {"model": model})
    x = torch.randn(2, 1, 32, 32)
    meta = extract_features(model, x, layers="layer0", steps=[0], progress=False).metadata
    assert printed.getvalue().strip() == meta["weights_sha256"] == documented_sha256(model)
