"""The TensorFlow checkpoint reader (blt_models._tf_checkpoint) against files TensorFlow wrote.

The checkpoints are the ConvRNN fixtures (tests/fixtures/convrnn/, written by tf.compat.v1's
Saver, see its README.md); ``ugrnn_shallow/variables.npz`` holds every tensor of that checkpoint as
TensorFlow read it back, and ``manifest.json`` lists every checkpoint's tensors as TensorFlow lists
them. Damaged copies are made in tmp_path.
"""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from blt_models import _tf_checkpoint as tfc
from blt_models.errors import CheckpointNotFoundError, UnreadableCheckpointError

FIXTURES = Path(__file__).parent / "fixtures" / "convrnn"
SLOTS_MODEL = FIXTURES / "ugrnn_shallow"  # the checkpoint that also holds Momentum slots
MANIFEST = (
    json.loads((FIXTURES / "manifest.json").read_text())
    if (FIXTURES / "manifest.json").exists()
    else {"models": {}}
)
DATA = "model.ckpt.data-00000-of-00001"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A copy of the checkpoint with optimizer slots, to damage."""
    dst = tmp_path / "ckpt"
    shutil.copytree(SLOTS_MODEL, dst)
    return dst


def test_values_equal_what_tensorflow_reads() -> None:
    expected = np.load(SLOTS_MODEL / "variables.npz")
    got = tfc.read_tf_checkpoint(SLOTS_MODEL)
    assert list(got) == sorted(expected.files)
    for name in expected.files:
        assert got[name].dtype == expected[name].dtype, name
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert got["global_step"].dtype == np.int64 and got["global_step"].shape == ()
    assert int(got["global_step"]) == 12345
    assert got["tnn_model/conv1/pre_0/weights_basenet"].flags.writeable


@pytest.mark.parametrize("model", sorted(MANIFEST["models"]))
def test_every_fixture_lists_and_reads_as_tensorflow_lists_it(model: str) -> None:
    expected = MANIFEST["models"][model]["variables"]
    listed = tfc.list_tf_checkpoint(FIXTURES / model)
    assert {
        n: {"shape": list(i.shape), "dtype": i.dtype_name} for n, i in listed.items()
    } == expected
    tensors = tfc.read_tf_checkpoint(FIXTURES / model)  # every tensor's checksum verified
    assert {n: list(a.shape) for n, a in tensors.items()} == {
        n: v["shape"] for n, v in expected.items()
    }


def test_all_twenty_models_have_fixtures() -> None:
    assert len(MANIFEST["models"]) == 20


def test_training_state_is_flagged_and_dropped() -> None:
    tensors = tfc.read_tf_checkpoint(SLOTS_MODEL)
    slots = [n for n in tensors if n.endswith("/Momentum")]
    assert len(slots) == 4 and "global_step" in tensors
    kept = tfc.model_variables(tensors)
    assert set(tensors) - set(kept) == {*slots, "global_step"}
    assert all(not tfc.is_training_state(n) for n in kept)
    assert "tnn_model/conv1/pre_0/weights_basenet" in kept
    assert not tfc.is_training_state("tnn_model/conv1/Momentum_decay")  # only the suffix counts


def test_prefix_resolution(ckpt: Path, tmp_path: Path) -> None:
    prefix = ckpt / "model.ckpt"
    for given in (ckpt, prefix, Path(f"{prefix}.index"), ckpt / DATA, Path(f"{prefix}.meta")):
        assert tfc.resolve_tf_checkpoint_prefix(given) == prefix, given
    # the 'checkpoint' state file of a copied folder may name the original's absolute path: the
    # copy is read, never the original (which may hold other weights)
    for named in ("/home/someone/ckpts/model.ckpt", SLOTS_MODEL.resolve() / "model.ckpt"):
        (ckpt / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n')
        assert tfc.resolve_tf_checkpoint_prefix(ckpt) == prefix
    # a published folder has no state file
    (ckpt / "checkpoint").unlink()
    assert tfc.resolve_tf_checkpoint_prefix(ckpt) == prefix
    with pytest.raises(CheckpointNotFoundError, match="no TensorFlow checkpoint"):
        tfc.read_tf_checkpoint(tmp_path / "nothing" / "model.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match=r"no \*\.index"):
        tfc.read_tf_checkpoint(tmp_path / "empty")
    shutil.copy(f"{prefix}.index", ckpt / "other.ckpt.index")
    with pytest.raises(CheckpointNotFoundError, match="several"):
        tfc.read_tf_checkpoint(ckpt)


def test_missing_data_shard(ckpt: Path) -> None:
    (ckpt / DATA).unlink()
    with pytest.raises(CheckpointNotFoundError, match=f"missing its data file {DATA}"):
        tfc.read_tf_checkpoint(ckpt)


def test_truncated_data_file(ckpt: Path) -> None:
    data = (ckpt / DATA).read_bytes()
    (ckpt / DATA).write_bytes(data[: len(data) - 100])
    with pytest.raises(UnreadableCheckpointError, match=f"{DATA} is truncated: tensor 'tnn_model/"):
        tfc.read_tf_checkpoint(ckpt)


def test_corrupted_data_byte_names_the_tensor(ckpt: Path) -> None:
    info = tfc.list_tf_checkpoint(ckpt)["tnn_model/conv3/ConvUGRNNCell/weights"]
    data = bytearray((ckpt / DATA).read_bytes())
    data[info.offset + 5] ^= 0x01  # one bit of one float: still a plausible number
    (ckpt / DATA).write_bytes(bytes(data))
    with pytest.raises(
        UnreadableCheckpointError, match="corrupted.*'tnn_model/conv3/ConvUGRNNCell/weights'"
    ):
        tfc.read_tf_checkpoint(ckpt)


def test_corrupted_index_byte(ckpt: Path) -> None:
    index = ckpt / "model.ckpt.index"
    data = bytearray(index.read_bytes())
    data[40] ^= 0x10  # inside the first data block
    index.write_bytes(bytes(data))
    with pytest.raises(
        UnreadableCheckpointError, match="damaged TensorFlow checkpoint index.*checksum"
    ):
        tfc.read_tf_checkpoint(ckpt)


def test_truncated_index(ckpt: Path) -> None:
    index = ckpt / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-10])
    with pytest.raises(UnreadableCheckpointError, match="not a TensorFlow checkpoint index"):
        tfc.read_tf_checkpoint(ckpt)


@pytest.mark.parametrize(
    ("content", "described"),
    [
        (b"\x89HDF\r\n\x1a\n" + bytes(200), "HDF5"),
        (b"model_checkpoint_path: whatever\n" * 4, "text file"),
        (b"PK\x03\x04" + bytes(100), "zip"),
    ],
)
def test_foreign_file_named_as_index(tmp_path: Path, content: bytes, described: str) -> None:
    (tmp_path / "model.ckpt.index").write_bytes(content)
    with pytest.raises(
        UnreadableCheckpointError, match=f"not a TensorFlow checkpoint index: .*{described}"
    ):
        tfc.read_tf_checkpoint(tmp_path)


def _patch_entry(index: Path, name: str, old: bytes, new: bytes) -> None:
    """Rewrite the start of tensor ``name``'s index entry and re-seal its block's checksum, as a
    writer of that (unsupported) content would have."""
    data = bytearray(index.read_bytes())
    footer = bytes(data[-tfc.FOOTER_SIZE :])
    pos = 0
    handles = []
    for _ in range(4):
        value, pos = tfc._varint(footer, pos)
        handles.append(value)
    index_block = tfc._read_block(bytes(data), (handles[2], handles[3]), "index block")
    for _key, handle in tfc._block_entries(index_block):
        offset, p = tfc._varint(handle, 0)
        size, _ = tfc._varint(handle, p)
        block = bytes(data[offset : offset + size])
        for key, value in tfc._block_entries(block):
            if key == name.encode():
                at = offset + block.index(value)
                assert data[at : at + len(old)] == old
                data[at : at + len(new)] = new
                crc = tfc._masked_crc32c(bytes(data[offset : offset + size + 1]))
                data[offset + size + 1 : offset + size + 5] = crc.to_bytes(4, "little")
                index.write_bytes(bytes(data))
                return
    raise AssertionError(f"{name} not found")


def test_unsupported_dtype(ckpt: Path) -> None:
    _patch_entry(ckpt / "model.ckpt.index", "tnn_model/conv1/pre_0/bias", b"\x08\x01", b"\x08\x0e")
    assert tfc.list_tf_checkpoint(ckpt)["tnn_model/conv1/pre_0/bias"].dtype_name == "bfloat16"
    with pytest.raises(
        UnreadableCheckpointError,
        match=r"does not support: tnn_model/conv1/pre_0/bias \(bfloat16\)",
    ):
        tfc.read_tf_checkpoint(ckpt)


def test_size_that_disagrees_with_shape(ckpt: Path) -> None:
    _patch_entry(
        ckpt / "model.ckpt.index", "tnn_model/conv1/pre_0/bias", b"\x08\x01", b"\x08\x02"
    )  # float64
    with pytest.raises(UnreadableCheckpointError, match="should take .* bytes but the index says"):
        tfc.read_tf_checkpoint(ckpt)


def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_numpy_crc32c() -> None:
    assert tfc._crc32c_numpy(b"123456789") == 0xE3069283  # the CRC-32C check value
    rng = np.random.default_rng(0)
    # the blocked path starts at 8 blocks of 4096 bytes: sizes around it, with a tail
    for n in (0, 1, 4095, 4096 * 8 - 1, 4096 * 8, 4096 * 9 + 3):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert tfc._crc32c_numpy(data) == _crc32c_bitwise(data), n


def test_reads_without_google_crc32c(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_google(name, *args, **kwargs):
        if name == "google_crc32c":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_google)
    with pytest.raises(ImportError):
        import google_crc32c  # noqa: F401
    tensors = tfc.read_tf_checkpoint(SLOTS_MODEL)  # every checksum verified with the NumPy CRC
    assert int(tensors["global_step"]) == 12345
