"""Reading TensorFlow checkpoints (``model.ckpt.index`` + ``model.ckpt.data-*``) without TensorFlow.

The files a ``tf.train.Saver`` (TF 1.x) or ``tf.train.Checkpoint`` (TF 2.x) writes are a *tensor
bundle*: the ``.index`` file is a table in the LevelDB SSTable format (data blocks of
prefix-compressed ``key -> value`` entries, an index block pointing at them, a 48-byte footer ending
in a fixed magic number; every block followed by a 1-byte compression type and the masked CRC-32C of
block + type). The entry with the empty key is a ``BundleHeaderProto`` (number of data shards,
endianness); every other key is a tensor name whose value is a ``BundleEntryProto`` (dtype, shape,
shard, offset, size and masked CRC-32C of the tensor's bytes). The ``.data-SSSSS-of-NNNNN`` shards
hold the raw tensor bytes. No maintained reader of this format exists outside TensorFlow, so this
module decodes it directly: the few protobuf fields are read by hand (varint wire format), so that
neither TensorFlow nor protobuf is needed; CRC-32C (Castagnoli) uses ``google-crc32c`` when it is
installed, else a NumPy implementation (about as fast for large tensors, slower for many tiny ones).

Every CRC the format stores is checked, so a truncated or corrupted file is refused with an error
that names the file and the tensor, never read half-way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CheckpointNotFoundError, UnreadableCheckpointError

__all__ = [
    "TFTensorInfo",
    "is_training_state",
    "list_tf_checkpoint",
    "model_variables",
    "read_tf_checkpoint",
    "resolve_tf_checkpoint_prefix",
]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked crc32c (4 bytes)
CRC_MASK_DELTA = 0xA282EAD8

# TensorFlow's DataType enum (types.proto) -> NumPy dtype (little endian); the others are refused
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    8: np.dtype("<c8"),  # DT_COMPLEX64
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    18: np.dtype("<c16"),  # DT_COMPLEX128
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
_DTYPE_NAMES = {
    7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
    16: "quint16", 20: "resource", 21: "variant",
}  # fmt: skip

#: Tensors a training run saves next to the model's variables: optimizer slots and the step
#: counter. The ConvRNN reference loader skips exactly these (names ending in ``/Momentum``, and
#: ``global_step``).
TRAINING_STATE_SUFFIXES = ("/Momentum",)
TRAINING_STATE_NAMES = ("global_step",)


@dataclass(frozen=True)
class TFTensorInfo:
    """What the index says about one tensor (no data read).

    Attributes:
        dtype: NumPy dtype the tensor is read as, or ``None`` if the format's dtype is not
            supported (``dtype_name`` says which).
        dtype_name: TensorFlow's name of the dtype (``"float32"``, ``"int64"``, ``"bfloat16"``...).
        shape: the tensor's shape.
        shard: index of the data shard holding it.
        offset: byte offset in that shard.
        size: number of bytes.
        crc32c: the masked CRC-32C the index stores for these bytes.
    """

    dtype: np.dtype | None
    dtype_name: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int


# ------------------------------------------------------------------------------------ crc32c
def _crc32c_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
    return table.astype(np.uint32)


_TABLE = _crc32c_table()
_BLOCK = 4096
_ZERO_SHIFT: list[np.ndarray] = []  # 4 byte tables of "advance the register over _BLOCK zeros"


def _zero_shift_tables() -> list[np.ndarray]:
    if not _ZERO_SHIFT:
        reg = np.uint32(1) << np.arange(32, dtype=np.uint32)  # one register per basis bit
        for _ in range(_BLOCK):
            reg = _TABLE[reg & 0xFF] ^ (reg >> 8)
        for k in range(4):
            byte = np.arange(256, dtype=np.uint32)
            out = np.zeros(256, dtype=np.uint32)
            for bit in range(8):
                out ^= np.where((byte >> bit) & 1, reg[8 * k + bit], np.uint32(0))
            _ZERO_SHIFT.append(out)
    return _ZERO_SHIFT


def _crc32c_numpy(data: bytes | memoryview) -> int:
    """CRC-32C of ``data``. Blocks of 4096 bytes are processed side by side (one table step per
    byte position for all blocks at once), then folded in order: since the CRC register update is
    linear, reg(r, A + B) = shift_len(B)(reg(r, A)) ^ reg(0, B)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    reg = 0xFFFFFFFF
    n_blocks = len(buf) // _BLOCK
    if n_blocks >= 8:
        shift = _zero_shift_tables()
        for start in range(0, n_blocks, 16384):  # 64 MiB at a time
            stop = min(n_blocks, start + 16384)
            blocks = buf[start * _BLOCK : stop * _BLOCK].reshape(stop - start, _BLOCK).T.copy()
            regs = np.zeros(stop - start, dtype=np.uint32)
            for column in blocks:
                regs = _TABLE[(regs ^ column) & 0xFF] ^ (regs >> 8)
            s0, s1, s2, s3 = (t.tolist() for t in shift)
            for value in regs.tolist():
                reg = (
                    s0[reg & 0xFF] ^ s1[(reg >> 8) & 0xFF] ^ s2[(reg >> 16) & 0xFF] ^ s3[reg >> 24]
                ) ^ value
        tail = buf[n_blocks * _BLOCK :]
    else:
        tail = buf
    table = _TABLE.tolist()
    for byte in tail.tolist():
        reg = table[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def _crc32c(data: bytes | memoryview) -> int:
    try:
        import google_crc32c
    except ImportError:
        return _crc32c_numpy(data)
    return int(google_crc32c.value(bytes(data)))


def _masked_crc32c(data: bytes | memoryview) -> int:
    crc = _crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + CRC_MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- wire decoding
class _Corrupt(Exception):
    """Internal: bytes that do not decode; turned into UnreadableCheckpointError with context."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Corrupt("a number runs past the end of its record")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("a number is longer than 10 bytes")


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Decode a protobuf message into (field number, wire type, value) triples: ints for varint
    and fixed fields, bytes for length-delimited ones."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise _Corrupt(f"unknown protobuf wire type {wire}")
        if pos > len(buf):
            raise _Corrupt("a field runs past the end of its record")
        fields.append((number, wire, value))
    return fields


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_entry(value: bytes) -> tuple[int, tuple[int, ...], int, int, int, int, bool]:
    """BundleEntryProto -> (dtype, shape, shard_id, offset, size, crc32c, has_slices)."""
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, 0, False
    for number, _wire, field in _proto_fields(value):
        if number == 1:
            dtype = int(field)  # type: ignore[arg-type]
        elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}
            dims = []
            for dim_number, _, dim in _proto_fields(field):  # type: ignore[arg-type]
                if dim_number == 2:
                    size_fields = [v for n, _, v in _proto_fields(dim) if n == 1]  # type: ignore[arg-type]
                    dims.append(_signed64(int(size_fields[0])) if size_fields else 0)
                elif dim_number == 3 and dim:
                    raise _Corrupt("a tensor of unknown rank")
            shape = tuple(dims)
        elif number == 3:
            shard = int(field)  # type: ignore[arg-type]
        elif number == 4:
            offset = _signed64(int(field))  # type: ignore[arg-type]
        elif number == 5:
            size = _signed64(int(field))  # type: ignore[arg-type]
        elif number == 6:
            crc = int(field)  # type: ignore[arg-type]
        elif number == 7:
            sliced = True
    return dtype, shape, shard, offset, size, crc, sliced


def _decode_header(value: bytes) -> tuple[int, int]:
    """BundleHeaderProto -> (num_shards, endianness: 0 little, 1 big)."""
    num_shards, endianness = 1, 0
    for number, _wire, field in _proto_fields(value):
        if number == 1:
            num_shards = int(field)  # type: ignore[arg-type]
        elif number == 2:
            endianness = int(field)  # type: ignore[arg-type]
    return num_shards, endianness


def _read_block(data: bytes, handle: tuple[int, int], what: str) -> bytes:
    offset, size = handle
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data):
        raise _Corrupt(f"its {what} ends at byte {end} but the file has {len(data)} bytes")
    contents = data[offset : offset + size]
    compression = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1 : end], "little")
    if _masked_crc32c(data[offset : offset + size + 1]) != stored:
        raise _Corrupt(f"the checksum of its {what} does not match (bytes changed)")
    if compression != 0:
        raise _Corrupt(
            f"its {what} is compressed (type {compression}); TensorFlow writes checkpoint "
            "indexes uncompressed"
        )
    return contents


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Corrupt("a table block is shorter than its restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Corrupt("a table block's restart array does not fit in it")
    entries, pos, key = [], 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_length > limit:
            raise _Corrupt("a table entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_length]))
        pos += value_length
    return entries


def _describe_foreign(head: bytes) -> str:
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "it is an HDF5 file (a Keras weight file?)"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive (a PyTorch .pt/.pth file?)"
    if head[:1] == b"\x80":
        return "it looks like a Python pickle"
    if len(head) >= 8 and head[8:9] == b"{":
        return "it looks like a safetensors file"
    try:
        head.decode("utf-8")
        return "it is a text file"
    except UnicodeDecodeError:
        return "its last 8 bytes are not the TensorFlow table magic number"


# --------------------------------------------------------------------------------- public
_SHARD_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def resolve_tf_checkpoint_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix (``.../model.ckpt``) that ``path`` designates.

    Args:
        path: a folder holding one checkpoint (``model.ckpt.index`` + ``.data-*`` files; a
            ``checkpoint`` state file, if present, says which), a prefix (``.../model.ckpt``), or one
            of the checkpoint's files (``.index``, ``.data-00000-of-00001``, ``.meta``).

    Raises:
        CheckpointNotFoundError: nothing there, or a folder with no (or several) checkpoints.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            match = re.search(
                r'^model_checkpoint_path:\s*"(.*)"\s*$', state.read_text(errors="replace"), re.M
            )
            if match:  # only inside this folder: a copied folder's state file may name the
                # absolute path of the original, which must not be read instead
                candidate = p / Path(match.group(1)).name
                if Path(str(candidate) + ".index").is_file():
                    return candidate
        indexes = sorted(p.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise CheckpointNotFoundError(
                f"{p} holds no TensorFlow checkpoint (no *.index file); give the folder that holds "
                "model.ckpt.index and model.ckpt.data-00000-of-00001, or their prefix."
            )
        raise CheckpointNotFoundError(
            f"{p} holds several TensorFlow checkpoints ({', '.join(i.name for i in indexes)}); "
            "give the prefix of the one to read (e.g. " + str(indexes[-1].with_suffix("")) + ")."
        )
    name = p.name
    if name.endswith(".index") or name.endswith(".meta"):
        p = p.with_suffix("")
    elif _SHARD_SUFFIX.search(name):
        p = p.with_name(_SHARD_SUFFIX.sub("", name))
    if not Path(str(p) + ".index").is_file():
        raise CheckpointNotFoundError(
            f"no TensorFlow checkpoint at {path}: {p}.index does not exist. Give a folder holding "
            "model.ckpt.index and model.ckpt.data-00000-of-00001, or their prefix "
            "(.../model.ckpt)."
        )
    return p


def _index_entries(prefix: Path) -> tuple[int, int, dict[str, TFTensorInfo]]:
    index = Path(str(prefix) + ".index")
    try:
        data = index.read_bytes()
    except PermissionError as err:
        raise UnreadableCheckpointError(
            f"no permission to read {index} ({err.strerror}); make it readable (chmod a+r)."
        ) from err
    if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise UnreadableCheckpointError(
            f"{index} is not a TensorFlow checkpoint index: {_describe_foreign(data[:64])} "
            f"({len(data)} bytes). Give the .index file TensorFlow wrote next to the "
            ".data-00000-of-00001 file; if it was downloaded, download it again."
        )
    try:
        footer = data[-FOOTER_SIZE:]
        meta_offset, pos = _varint(footer, 0)
        meta_size, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
        entries: list[tuple[bytes, bytes]] = []
        for _key, handle in _block_entries(
            _read_block(data, (index_offset, index_size), "index block")
        ):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            entries.extend(_block_entries(_read_block(data, (offset, size), "data block")))
        num_shards, endianness, tensors = 1, 0, {}
        for key, value in entries:
            if key == b"":
                num_shards, endianness = _decode_header(value)
                continue
            name = key.decode("utf-8")
            dtype_code, shape, shard, offset, size, crc, sliced = _decode_entry(value)
            if sliced:
                raise UnreadableCheckpointError(
                    f"{index}: tensor {name!r} is saved as slices of a partitioned variable, which "
                    "this reader does not support; re-save the checkpoint without partitioning."
                )
            dtype = _DTYPES.get(dtype_code)
            dtype_name = (
                dtype.name
                if dtype is not None
                else _DTYPE_NAMES.get(dtype_code, f"code {dtype_code}")
            )
            tensors[name] = TFTensorInfo(dtype, dtype_name, shape, shard, offset, size, crc)
    except (_Corrupt, UnicodeDecodeError, IndexError) as err:
        raise UnreadableCheckpointError(
            f"{index} is a damaged TensorFlow checkpoint index: {err}. It may be truncated or "
            "corrupted: download or write it again."
        ) from err
    return num_shards, endianness, tensors


def list_tf_checkpoint(path_or_prefix: str | os.PathLike) -> dict[str, TFTensorInfo]:
    """Names, dtypes and shapes of the tensors of a TensorFlow checkpoint (reads only the index).

    Args:
        path_or_prefix: as for [`read_tf_checkpoint`][blt_models._tf_checkpoint.read_tf_checkpoint].

    Returns:
        ``{name: TFTensorInfo}`` in the index's (sorted) order.
    """
    return _index_entries(resolve_tf_checkpoint_prefix(path_or_prefix))[2]


def read_tf_checkpoint(path_or_prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a TensorFlow (tensor bundle) checkpoint into NumPy arrays.

    Optimizer slots and the step counter are returned too; drop them with
    [`model_variables`][blt_models._tf_checkpoint.model_variables].

    Args:
        path_or_prefix: a folder holding the checkpoint, its prefix (``.../model.ckpt``) or one of
            its files (see
            [`resolve_tf_checkpoint_prefix`][blt_models._tf_checkpoint.resolve_tf_checkpoint_prefix]).

    Returns:
        ``{name: array}`` with TensorFlow's names (``"tnn_model/conv1/pre_0/weights_basenet"``) and
        layouts unchanged (convolution kernels ``[kh, kw, in, out]``), native byte order, writable.

    Raises:
        CheckpointNotFoundError: no checkpoint there, or a data shard is missing.
        UnreadableCheckpointError: a file that is not a TensorFlow checkpoint, truncated or
            corrupted (a checksum does not match), or a tensor of a dtype NumPy cannot hold
            (bfloat16, string...). The message names the file and the tensor.
    """
    prefix = resolve_tf_checkpoint_prefix(path_or_prefix)
    num_shards, endianness, infos = _index_entries(prefix)
    index = Path(str(prefix) + ".index")
    unsupported = {n: i.dtype_name for n, i in infos.items() if i.dtype is None}
    if unsupported:
        listed = ", ".join(f"{n} ({d})" for n, d in list(unsupported.items())[:5])
        raise UnreadableCheckpointError(
            f"{index} holds tensors of a dtype this reader does not support: {listed}"
            f"{' ...' if len(unsupported) > 5 else ''}. Supported: "
            + ", ".join(sorted({d.name for d in _DTYPES.values()}))
            + ". Convert them with TensorFlow (e.g. cast to float32) and save again."
        )
    shards: dict[int, Path] = {}
    for info in infos.values():
        if info.shard >= num_shards or info.shard < 0:
            raise UnreadableCheckpointError(
                f"{index} is damaged: a tensor names data shard {info.shard} of {num_shards}."
            )
        shards[info.shard] = Path(f"{prefix}.data-{info.shard:05d}-of-{num_shards:05d}")
    for shard_path in shards.values():
        if not shard_path.is_file():
            raise CheckpointNotFoundError(
                f"the TensorFlow checkpoint {prefix} is missing its data file {shard_path.name} "
                f"(the index lists {num_shards} shard(s)); download or copy it next to "
                f"{index.name}."
            )
    out: dict[str, np.ndarray] = {}
    order = "<" if endianness == 0 else ">"
    for shard_id, shard_path in shards.items():
        size_on_disk = shard_path.stat().st_size
        with open(shard_path, "rb") as f:
            for name, info in infos.items():
                if info.shard != shard_id:
                    continue
                assert info.dtype is not None
                dtype = info.dtype.newbyteorder(order) if info.dtype.itemsize > 1 else info.dtype
                expected = int(np.prod(info.shape, dtype=np.int64)) * dtype.itemsize
                if info.size != expected or info.offset < 0:
                    raise UnreadableCheckpointError(
                        f"{index} is damaged: tensor {name!r} {info.dtype_name}{list(info.shape)} "
                        f"should take {expected} bytes but the index says {info.size}."
                    )
                if info.offset + info.size > size_on_disk:
                    raise UnreadableCheckpointError(
                        f"{shard_path} is truncated: tensor {name!r} ends at byte "
                        f"{info.offset + info.size} but the file has {size_on_disk} bytes. "
                        "Download or copy it again."
                    )
                f.seek(info.offset)
                raw = f.read(info.size)
                if _masked_crc32c(raw) != info.crc32c:
                    raise UnreadableCheckpointError(
                        f"{shard_path} is corrupted: the bytes of tensor {name!r} do not match the "
                        "checksum stored in the index. Download or copy the checkpoint again."
                    )
                array = np.frombuffer(raw, dtype=dtype).reshape(info.shape)
                out[name] = array.astype(info.dtype.newbyteorder("="), copy=True)
    return {name: out[name] for name in infos}


def is_training_state(name: str) -> bool:
    """Whether a checkpoint tensor is training state rather than a model variable: an optimizer
    slot (name ending in ``/Momentum``) or the step counter ``global_step``."""
    return name in TRAINING_STATE_NAMES or name.endswith(TRAINING_STATE_SUFFIXES)


def model_variables(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``tensors`` without the training state ([`is_training_state`][blt_models._tf_checkpoint.is_training_state])."""
    return {name: value for name, value in tensors.items() if not is_training_state(name)}
