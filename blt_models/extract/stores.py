"""Where features go: memory, an HDF5 file or a zarr store, behind one writer interface; and
reading files back ([`load_features`][blt_models.load_features], [`LazyFeatures`][blt_models.extract.LazyFeatures]).

A store hands the run the rows a batch's features go to (``Store.rows``, ``{layer: Tensor
[b, S, ...]}``), then commits them with their ids and fingerprints (``Store.commit``). A
file commits a batch by writing and flushing its rows first and only then advancing the
``n_done`` attribute, so a crash or a full disk leaves every complete batch readable and
resumable.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._optional import require
from ..errors import (
    BltModelsError,
    CorruptFeatureFileError,
    ExtractionError,
    FeatureIndexError,
    FeatureWriteError,
    OutputInUseError,
    OutputMismatchError,
    UncheckedFeaturesWarning,
    UnknownLayerError,
)
from .integrity import (
    CHECKSUMS,
    FORMAT_NAME,
    FORMAT_VERSION,
    FileState,
    checksum_columns,
    library_error,
    metadata_checksum,
    read_state,
    remove_stale_temporaries,
    row_checksums,
    string_checksums,
    temporary_path,
    verify_rows,
    write_new_file,
)
from .result import ExtractedFeatures

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Store",
    "MemoryStore",
    "FileStore",
    "LazyFeatures",
    "load_features",
    "backend_of",
]

H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
ZARR_SUFFIXES = (".zarr",)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def backend_of(out: str | os.PathLike[str]) -> str:
    path = Path(out)
    if path.suffix.lower() in H5_SUFFIXES:
        return "h5"
    if path.suffix.lower() in ZARR_SUFFIXES or (path.is_dir() and (path / "zarr.json").exists()):
        return "zarr"
    raise ExtractionError(
        f"cannot tell the output format of {str(out)!r}: use a name ending in .h5 / .hdf5 "
        "(HDF5) or .zarr (zarr store)"
    )


def to_json(value: Any) -> Any:
    """JSON-compatible copy (tuples to lists, unknown objects to str)."""
    return json.loads(json.dumps(value, default=str))


def _to_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------ what is there
def _contains_marker(path: Path) -> bool:
    """Whether the raw bytes of ``path`` contain our format name (attributes are stored
    uncompressed, so even a truncated feature file of ours still carries it)."""
    marker = FORMAT_NAME.encode()
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if marker in tail + block:
                return True
            tail = block[-len(marker) :]
    return False


def _is_hdf5(path: Path) -> bool:
    """The HDF5 signature at offset 0, 512, 1024, 2048... (after a user block)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            if f.read(8) == _HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _describe_dir(path: Path) -> str:
    entries = sorted(p.name for p in path.iterdir())
    shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
    return f"a directory holding {shown}"


def _in_use(path: Path) -> OutputInUseError:
    return OutputInUseError(
        f"{str(path)!r} is open in another process (HDF5 file lock): another extraction or "
        "program is writing it. Wait for it to finish, or write to another output"
    )


def inspect_output(path: Path, backend: str) -> str:
    """``"absent"``, ``"ours"`` (a readable feature store) or ``"broken"`` (ours, but truncated
    or corrupt). Anything else at ``path`` raises [`OutputMismatchError`][blt_models.errors.OutputMismatchError] naming it."""
    if not path.exists():
        return "absent"
    not_ours = "it is not a blt-models feature store, so it is neither resumed nor replaced: "
    fix = "choose another output, or move it away yourself"
    if backend == "h5":
        if path.is_dir():
            raise OutputMismatchError(f"{str(path)!r} is {_describe_dir(path)}; {not_ours}{fix}")
        if not _is_hdf5(path):
            head = path.read_bytes()[:40]
            raise OutputMismatchError(
                f"{str(path)!r} is not an HDF5 file (it starts with {head!r}); {not_ours}{fix}"
            )
        h5py = require("h5py", "reading HDF5 features")

        try:
            with h5py.File(path, "r") as f:
                meta = f.attrs.get("metadata")
                keys = sorted(f.keys())
        except BlockingIOError:
            raise _in_use(path) from None
        except Exception:  # noqa: BLE001 - OSError, or RuntimeError / KeyError of damaged HDF5
            if _contains_marker(path):
                return "broken"
            raise OutputMismatchError(
                f"{str(path)!r} is an HDF5 file that cannot be read and is not a blt-models "
                f"feature file; {fix}"
            ) from None
        if meta is not None and FORMAT_NAME in _to_str(meta):
            return "ours"
        raise OutputMismatchError(
            f"{str(path)!r} is an HDF5 file holding {', '.join(keys) or 'nothing'}; {not_ours}{fix}"
        )
    if not path.is_dir():
        raise OutputMismatchError(f"{str(path)!r} is a file, not a zarr store; {not_ours}{fix}")
    if not any(path.iterdir()):
        return "absent"
    root_json = path / "zarr.json"
    if not root_json.is_file():
        raise OutputMismatchError(f"{str(path)!r} is {_describe_dir(path)}; {not_ours}{fix}")
    text = root_json.read_text(errors="replace")
    try:
        attrs = json.loads(text).get("attributes", {})
    except (json.JSONDecodeError, AttributeError):
        if FORMAT_NAME in text:
            return "broken"
        raise OutputMismatchError(f"{str(path)!r} has an unreadable zarr.json; {fix}") from None
    meta = attrs.get("metadata")
    if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME:
        return "ours"  # whether it agrees with itself: read_state, check_zarr_chunks
    raise OutputMismatchError(f"{str(path)!r} is a zarr store of another kind; {not_ours}{fix}")


def missing_zarr_chunk(store: Path, arr: Any, rows: np.ndarray) -> str | None:
    """The first chunk file of the zarr array ``arr`` (of the store at ``store``) that holds
    any of ``rows`` and is missing, as a path in the store; or None.

    zarr reads a missing chunk as its fill value, so a store copied or synced only in part, or a
    chunk removed after loading, would read as zeros and empty ids. Keys come from zarr's own
    chunk key encoding; only the chunks of ``rows`` are looked up (a lazy read of one row
    checks one chunk, not all of them).
    """
    row_chunks = np.unique(rows // arr.chunks[0]).tolist()
    grid = [row_chunks, *(range(n) for n in arr.cdata_shape[1:])]
    for index in itertools.product(*grid):
        key = arr.metadata.encode_chunk_key(index)
        if not (store / arr.path / key).is_file():
            return f"{arr.path}/{key}"
    return None


def check_zarr_chunks(path: Path, root: Any, state: FileState) -> None:
    """Refuse a zarr feature store written with every chunk that lacks a chunk file of its
    first ``n_done`` rows: a copy or sync cut short (zarr would read the fill value)."""
    if not root.attrs.get("every_chunk_written"):
        return
    names = [f"features/{name}" for name in state.metadata["layers"]]
    names += ["image_ids", "fingerprints"] + ([CHECKSUMS] if state.checksummed else [])
    for name in names:
        arr = root[name]
        missing = missing_zarr_chunk(path, arr, np.arange(state.n_done, dtype=np.int64))
        if missing is not None:
            raise CorruptFeatureFileError(
                f"{str(path)!r} lacks the chunk file {missing} of its first {state.n_done} "
                "images: the store is truncated (a copy or sync cut short, a clean-up); "
                "extract it again with overwrite=True (CLI: --overwrite)"
            )


def remove_store(path: Path, with_shards: bool = False) -> None:
    """Remove a feature store of ours (checked by ``inspect_output``); ``with_shards``: also
    the shard files a join lists, and their folder once empty (a one-process overwrite)."""
    shards: list[Path] = []
    if with_shards and path.is_file():
        try:
            meta = read_metadata(path, "h5")
        except Exception:  # noqa: BLE001 - truncated: nothing listed to remove
            meta = {}
        shards = [path.parent / f["path"] for f in (meta.get("shards") or {}).get("files", [])]
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    for shard in shards:
        shard.unlink(missing_ok=True)
    if shards and shards[0].parent.is_dir() and not any(shards[0].parent.iterdir()):
        shards[0].parent.rmdir()


# ------------------------------------------------------------------------------ writers


class Store:
    """The writer interface of the run: rows to fill, then a commit per batch."""

    def rows(self, start: int, b: int) -> dict[str, Tensor]:
        """``{layer: Tensor [b, S, ...]}`` (CPU, the store's dtype) for images ``start ..``."""
        raise NotImplementedError

    def commit(
        self, start: int, ids: list[str], fingerprints: list[str],
        rows: dict[str, Tensor] | None = None,
    ) -> None:  # fmt: skip
        """Store the batch written into ``rows`` (as ``rows`` returned them)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files; safe to call twice and after an error."""


class MemoryStore(Store):
    """Result tensors ``[N, S, ...]`` preallocated once; a batch's features land in its rows.

    With ``channels_last``, unpooled maps ``[N, S, C, H, W]`` are stored channels-last (memory
    ordered ``N, S, H, W, C``): the layout the convolutions produce on CPU, so that writing a
    layer's output into its slot is a plain copy instead of a transposition (about a tenth of
    the extraction time at 224 px). Shapes and values are the same either way.
    """

    def __init__(
        self, n: int | None, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype,
        channels_last: bool = False,
    ) -> None:  # fmt: skip
        self.n, self.shapes, self.dtype = n, shapes, dtype
        self.channels_last = channels_last
        self.arrays: dict[str, Tensor] = {}
        self.parts: dict[str, list[Tensor]] = {name: [] for name in shapes}
        if n is not None:
            self.arrays = {k: self._empty(n, s) for k, s in shapes.items()}
        self.ids: list[str] = []

    def _empty(self, n: int, shape: tuple[int, ...]) -> Tensor:
        if self.channels_last and len(shape) == 4:  # [S, C, H, W] maps
            S, C, H, W = shape
            return torch.empty((n, S, H, W, C), dtype=self.dtype).permute(0, 1, 4, 2, 3)
        return torch.empty((n, *shape), dtype=self.dtype)

    def rows(self, start: int, b: int) -> dict[str, Tensor]:
        if self.n is None:  # unknown length (an iterable dataset): one tensor per batch
            return {k: self._empty(b, s) for k, s in self.shapes.items()}
        return {k: a[start : start + b] for k, a in self.arrays.items()}

    def commit(
        self, start: int, ids: list[str], fingerprints: list[str],
        rows: dict[str, Tensor] | None = None,
    ) -> None:  # fmt: skip
        if self.n is None and rows is not None:
            for name, value in rows.items():
                self.parts[name].append(value)
        self.ids += ids

    def features(self) -> dict[str, Tensor]:
        if self.n is None:
            return {k: torch.cat(v) for k, v in self.parts.items()}
        return {k: a[: len(self.ids)] for k, a in self.arrays.items()}


#: Bytes of feature chunks zarr may encode at once while a batch is written.
ZARR_BYTES_IN_FLIGHT = 32 << 20


def zarr_concurrency(chunk_bytes: int, limit: int) -> int:
    """Chunks zarr may encode at once: as many as fit in ``ZARR_BYTES_IN_FLIGHT`` (at least
    one), at most ``limit`` (zarr's own ``async.concurrency``)."""
    return max(1, min(limit, ZARR_BYTES_IN_FLIGHT // max(chunk_bytes, 1)))


def _rows_per_chunk(bytes_per_image: int, batch_size: int, target: int) -> int:
    """The largest divisor of ``batch_size`` whose chunk stays within ``target`` bytes (>= 1),
    so that every batch writes whole chunks."""
    best = 1
    for d in range(1, batch_size + 1):
        if batch_size % d == 0 and d * bytes_per_image <= target:
            best = d
    return best


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _remove_quietly(path: Path) -> None:
    try:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    except OSError:
        pass


class FileStore(Store):
    """One HDF5 file or zarr store: ``features/<layer>`` arrays ``[N, S, ...]``, ``image_ids``,
    ``fingerprints``, ``steps``, ``checksums``, and attributes ``metadata`` (JSON),
    ``metadata_crc32c``, ``n_done``, ``complete``.

    Arrays are created at their full length when the number of images is known (a batch then
    writes chunks and one attribute, no shape change); rows past ``n_done`` are not data.
    """

    def __init__(self, path: Path, backend: str) -> None:
        self.path, self.backend = path, backend
        self.root: Any = None
        self.arrays: dict[str, Any] = {}
        self.buffers: dict[str, Tensor] = {}
        self.np_dtype: np.dtype | None = None
        self.n: int | None = None  # images of the run (None: unknown)
        self.bytes_per_image = 0

    def _space_needed(self, start: int, b: int = 0) -> str:
        """How much space the rest of the run needs, and how much its disk has free."""
        left = None if self.n is None else self.n - start
        need = (left if left is not None else b) * self.bytes_per_image
        try:
            free = f" ({_mib(shutil.disk_usage(self.path.parent).free)} free on its disk)"
        except OSError:
            free = ""
        what = f"the {left} images left" if left is not None else "this batch"
        return f"it needs about {_mib(need)} more for {what}{free}"

    # -- opening
    def open(self) -> None:
        if self.backend == "h5":
            h5py = require("h5py", "writing features to HDF5 (.h5)")

            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # No chunk cache: a batch writes whole chunks, which then go straight to the
                # file. HDF5 keeps one cache per dataset, so any cache would hold up to its size
                # per layer (8 MiB each was 3x one batch's features at 32 px).
                self.root = h5py.File(self.path, "a", rdcc_nbytes=0)
            except BlockingIOError:
                raise _in_use(self.path) from None
        else:
            zarr = require("zarr", "writing features to a zarr store (.zarr)")

            self.root = zarr.open_group(str(self.path), mode="a")
        self.arrays = {}

    def close(self) -> None:
        root, self.root = self.root, None
        if root is not None and self.backend == "h5":
            try:
                root.close()
            except Exception:  # noqa: BLE001 - closing after a write error; the error is raised
                pass

    # -- attributes
    def attrs(self) -> dict[str, Any] | None:
        attrs = self.root.attrs
        if "metadata" not in attrs:
            return None
        meta = attrs["metadata"]
        return {
            "metadata": json.loads(meta) if isinstance(meta, (str, bytes)) else dict(meta),
            "n_done": int(attrs.get("n_done", 0)),
            "complete": bool(attrs.get("complete", False)),
        }

    def set_attrs(self, **values: Any) -> None:
        out = {}
        for key, value in values.items():
            if key == "metadata" and self.backend == "h5":
                value = json.dumps(value)
            elif isinstance(value, (np.integer, np.bool_)):
                value = value.item()
            out[key] = value
        if self.backend == "h5":
            for key, value in out.items():
                self.root.attrs[key] = value
        else:
            self.root.attrs.update(out)

    def flush(self) -> None:
        if self.backend == "h5":
            self.root.flush()

    # -- arrays
    def _create(self, name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]):
        """An array with the format's own checksum on every chunk: Fletcher-32 in HDF5 (which
        filters no variable-length strings: ids and fingerprints are covered by /checksums),
        CRC-32C after zstd in zarr."""
        if self.backend == "h5":
            h5py = require("h5py", "writing features to HDF5 (.h5)")

            self.arrays[name] = self.root.create_dataset(
                name, shape=shape, maxshape=(None, *shape[1:]), chunks=chunks,
                dtype=h5py.string_dtype() if dtype is str else dtype, fletcher32=dtype is not str,
            )  # fmt: skip
        else:
            zarr = require("zarr", "writing features to a zarr store (.zarr)")

            self.arrays[name] = self.root.create_array(
                name, shape=shape, chunks=chunks, dtype=dtype,
                fill_value="" if dtype is str else None,
                compressors=(zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec()),
            )  # fmt: skip

    def _array(self, name: str) -> Any:
        if name not in self.arrays:
            self.arrays[name] = self.root[name]
        return self.arrays[name]

    def _write(self, name: str, start: int, value: np.ndarray) -> None:
        arr = self._array(name)
        stop = start + len(value)
        if arr.shape[0] < stop:
            arr.resize((stop, *arr.shape[1:]))
        if self.backend == "zarr" and value.dtype != object:
            zarr = require("zarr", "writing features to a zarr store (.zarr)")

            # zarr encodes up to async.concurrency chunks at once, each held two or three times
            # (chunk, encoded bytes) on its own worker thread: bound the bytes in flight.
            chunk = math.prod(arr.chunks) * value.dtype.itemsize
            limit = int(zarr.config.get("async.concurrency"))
            # Every chunk is written, all-zero ones too (zarr skips those by default): a chunk
            # file missing below n_done then means a store cut short (missing_zarr_chunk).
            arr = arr.with_config({"write_empty_chunks": True})
            with zarr.config.set({"async.concurrency": zarr_concurrency(chunk, limit)}):
                arr[start:stop] = value
        else:
            arr[start:stop] = value

    def create(
        self, metadata: dict[str, Any], shapes: dict[str, tuple[int, ...]], n: int | None,
        batch_size: int, np_dtype: np.dtype,
    ) -> None:  # fmt: skip
        """Lay out a new store (the arrays, ``steps``, the attributes) under a temporary name
        next to ``path``, and rename it into place once complete: a run that dies (or a disk
        that fills up) while the store is created leaves nothing at ``path``.

        HDF5 builds the file in memory and writes it with one plain write: HDF5 cannot recover
        from a write that fails half-way (a full disk during creation crashed the process).
        The store is closed afterwards; `open` it to write batches.
        """
        self._sizes(shapes, n, np_dtype)
        tmp = temporary_path(self.path, "creating")
        remove_stale_temporaries(self.path, "creating", by_process=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.backend == "h5":
                h5py = require("h5py", "writing features to HDF5 (.h5)")

                self.root = h5py.File(str(tmp), "w", driver="core", backing_store=False)
                self._lay_out(metadata, shapes, n, batch_size, np_dtype)
                self.root.flush()
                image = self.root.id.get_file_image()
                self.root.close()
                self.root = None
                write_new_file(tmp, image)
            else:
                zarr = require("zarr", "writing features to a zarr store (.zarr)")

                self.root = zarr.open_group(str(tmp), mode="w")
                self._lay_out(metadata, shapes, n, batch_size, np_dtype)
                self.root = None
            os.replace(tmp, self.path)  # also over the empty directory a zarr output may be
        except BaseException as err:
            self.close()
            _remove_quietly(tmp)
            if not isinstance(err, (OSError, RuntimeError)) or isinstance(err, BltModelsError):
                raise
            raise FeatureWriteError(
                f"creating {str(self.path)!r} failed ({err}); nothing was left at that name, "
                f"and {self._space_needed(0)}. Free space (or fix the disk) and run the same "
                "extraction again"
            ) from err
        finally:
            self.root, self.arrays = None, {}

    def _sizes(self, shapes: dict[str, tuple[int, ...]], n: int | None, dtype: np.dtype) -> None:
        """Remember the run's length and bytes per image (features, checksums, ids)."""
        self.n = n
        per_image = sum(math.prod(shape) for shape in shapes.values()) * dtype.itemsize
        self.bytes_per_image = per_image + 4 * (len(shapes) + 2) + 160

    def _lay_out(
        self, metadata: dict[str, Any], shapes: dict[str, tuple[int, ...]], n: int | None,
        batch_size: int, np_dtype: np.dtype,
    ) -> None:  # fmt: skip
        # The attributes first: they then sit at the start of an HDF5 file, where even a copy
        # cut short still shows whose file it is (see inspect_output).
        self.set_attrs(metadata=metadata, n_done=0, complete=False)
        stored = self.attrs()
        assert stored is not None  # the checksum of the metadata as it reads back
        self.set_attrs(metadata_crc32c=metadata_checksum(stored["metadata"]))
        if self.backend == "zarr":
            self.set_attrs(every_chunk_written=True)
        target = (4 << 20) if self.backend == "h5" else (16 << 20)
        length = n or 0
        for name, shape in shapes.items():
            per_image = math.prod(shape) * np_dtype.itemsize
            rows = _rows_per_chunk(per_image, batch_size, target)
            self._create(f"features/{name}", (length, *shape), np_dtype, (rows, *shape))
            self.arrays[f"features/{name}"].attrs["first_step"] = metadata["first_step"][name]
        for name in ("image_ids", "fingerprints"):
            self._create(name, (length,), str, (4096,))
        columns = checksum_columns(list(shapes))
        self._create(CHECKSUMS, (length, len(columns)), np.uint32, (4096, len(columns)))
        self.arrays[CHECKSUMS].attrs["columns"] = columns
        steps = np.asarray(metadata["steps"], dtype=np.int64)
        self._create("steps", steps.shape, np.int64, steps.shape)
        self.arrays["steps"][:] = steps

    def state(self) -> FileState:
        """The open store's state, checked (named errors for a store that contradicts
        itself)."""
        state = read_state(self.path, self.root, self.backend)
        if self.backend == "zarr":
            check_zarr_chunks(self.path, self.root, state)
        return state

    def written(self, state: FileState) -> tuple[list[str], list[str]]:
        """Ids and fingerprints of the ``state.n_done`` images written, checked against their
        checksums (a file of format 4 or later)."""
        n = state.n_done
        try:
            ids = [_to_str(s) for s in self._array("image_ids")[:n]]
            fps = [_to_str(s) for s in self._array("fingerprints")[:n]]
            columns = state.columns
            table = np.asarray(self._array(CHECKSUMS)[:n]) if columns is not None else None
        except Exception as err:  # noqa: BLE001 - what h5py / zarr raise on a damaged store
            raise library_error(self.path, err, "the ids and fingerprints") from None
        if table is not None and columns is not None:
            rows = np.arange(n)
            for name, values in (("image_ids", ids), ("fingerprints", fps)):
                col = columns[name]
                verify_rows(self.path, name, rows, string_checksums(values), table[:, col])
        return ids, fps

    # -- the run
    def start_writing(
        self, shapes: dict[str, tuple[int, ...]], batch_size: int, dtype: torch.dtype,
        n: int | None = None,
    ) -> None:  # fmt: skip
        self.np_dtype = np.dtype(str(dtype).replace("torch.", ""))
        self._sizes(shapes, n, self.np_dtype)
        self.buffers = {k: torch.empty((batch_size, *s), dtype=dtype) for k, s in shapes.items()}

    def rows(self, start: int, b: int) -> dict[str, Tensor]:
        return {k: v[:b] for k, v in self.buffers.items()}

    def commit(
        self, start: int, ids: list[str], fingerprints: list[str],
        rows: dict[str, Tensor] | None = None,
    ) -> None:  # fmt: skip
        b = len(ids)
        try:
            if self.backend == "h5":
                self._reserve(b)
            sums = []
            for name, buffer in self.buffers.items():
                values = buffer[:b].numpy()
                sums.append(row_checksums(values))
                self._write(f"features/{name}", start, values)
            kind = object if self.backend == "h5" else str
            self._write("image_ids", start, np.asarray(ids, dtype=kind))
            self._write("fingerprints", start, np.asarray(fingerprints, dtype=kind))
            sums += [string_checksums(ids), string_checksums(fingerprints)]
            self._write(CHECKSUMS, start, np.stack(sums, axis=1))
            self.flush()  # the batch's data is on disk ...
            self.set_attrs(n_done=start + b)  # ... before the count says so
            self.flush()
        except (OSError, RuntimeError) as err:
            self.close()
            raise FeatureWriteError(
                f"writing {str(self.path)!r} failed ({err}); it keeps the {start} images "
                f"written before this batch, and {self._space_needed(start, b)}. Free space (or "
                "fix the disk) and run the same extraction again to resume after them"
            ) from err

    def _reserve(self, b: int) -> None:
        """Allocate the disk space of a batch before HDF5 writes it.

        HDF5 cannot recover from a write that fails half-way (its cached metadata stays dirty,
        closing fails and the library later crashes the process), so a full disk has to be
        found before HDF5 touches the file: reserve the batch's bytes (and some for metadata)
        past HDF5's end of file. HDF5 writes into the reserved blocks.
        """
        need = sum(v[:b].numel() * v.element_size() for v in self.buffers.values())
        need = need + need // 4 + b * 512 + (256 << 10)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, int(self.root.id.get_filesize()) + need)
        finally:
            os.close(fd)

    def finish(self) -> None:
        try:
            self.set_attrs(complete=True)
            self.flush()
        except (OSError, RuntimeError) as err:
            self.close()
            raise FeatureWriteError(f"finishing {str(self.path)!r} failed: {err}") from err


# ------------------------------------------------------------------------------ reading
def _open_read(path: Path, backend: str) -> Any:
    """The store at ``path`` open for reading; a damaged one gives a named error."""
    try:
        if backend == "h5":
            h5py = require("h5py", "reading HDF5 features (.h5)")

            return h5py.File(path, "r")
        zarr = require("zarr", "reading a zarr feature store (.zarr)")

        return zarr.open_group(str(path), mode="r")
    except BlockingIOError:
        raise _in_use(path) from None
    except BltModelsError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever h5py / zarr raise on a damaged file
        raise library_error(path, err, "the file") from None


def read_metadata(path: Path, backend: str) -> dict[str, Any]:
    """The ``metadata`` attribute of a feature store, read without opening it for writing,
    once the store is known to agree with itself (`read_state`)."""
    root = _open_read(path, backend)
    try:
        return read_state(path, root, backend).metadata
    finally:
        if backend == "h5":
            root.close()


def file_identity(path: Path) -> tuple[int, ...]:
    """Device, inode, size and modification time of a file (of ``zarr.json`` for a store), or
    ``()`` if it is gone: what changes when a file is replaced, moved away or rewritten."""
    target = path / "zarr.json" if path.is_dir() else path
    try:
        st = target.stat()
    except OSError:
        return ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


#: Bytes of full rows a lazy read holds at once to check them against their checksums.
READ_BLOCK_BYTES = 64 << 20


class LazyFeatures:
    """One layer of a feature file, read on indexing: ``lazy[10:20]`` reads 10 images.

    Has ``shape`` ``(N, S, ...)``, ``dtype`` (torch), ``len()``; indexing follows numpy (ints,
    negative ints, slices with any step, integer arrays in any order and with repeats, boolean
    masks of length ``N``, numpy or torch) and returns tensors; floats, wrong-length masks and
    out-of-range rows raise [`FeatureIndexError`][blt_models.errors.FeatureIndexError] (an ``IndexError``).
    ``load()`` reads the whole array. The file is opened for each read, and every row read is
    checked against its checksum (a file of format 4 or later) before any of it is returned,
    whole rows at a time (at most ``READ_BLOCK_BYTES`` of them at once).
    """

    def __init__(
        self, path: Path, backend: str, key: str, n: int, shape: tuple[int, ...], dtype: Any,
        files: dict[str, tuple[int, ...]] | None = None, every_chunk_written: bool = False,
        checksums: np.ndarray | None = None, shards: list[dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        self.path, self.backend, self.key, self.n = path, backend, key, n
        self.every_chunk_written = every_chunk_written  # a zarr store: a missing chunk is damage
        self.shape = (n, *shape)
        self.np_dtype = np.dtype(dtype)
        self.dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
        self.files = files or {}  # {file: identity} as loaded: the file, and a join's shards
        # uint32 [n]: this layer's column of /checksums as loaded (the file cannot change
        # unnoticed since: _check_unchanged); None: a file without checksums.
        self.checksums = checksums
        self.shards = shards or []  # a join's shard files (metadata["shards"]["files"])

    def _check_unchanged(self) -> None:
        """Refuse to read if the file (or a shard of a join) was replaced, moved or rewritten
        since it was loaded: HDF5 would read another file's rows, or zeros for a missing shard."""
        for name, identity in self.files.items():
            if file_identity(Path(name)) != identity:
                raise OutputMismatchError(
                    f"{name!r} changed since {str(self.path)!r} was loaded (moved, replaced or "
                    "being rewritten); load_features it again"
                )

    def _check_chunks(self, arr: Any, rows: np.ndarray) -> None:
        """A zarr store written with every chunk: refuse a read whose chunks went missing since
        loading (zarr would read zeros)."""
        if not self.every_chunk_written:
            return
        missing = missing_zarr_chunk(self.path, arr, rows)
        if missing:
            raise OutputMismatchError(
                f"{str(self.path)!r} lost the chunk {missing} since it was loaded (a sync or a "
                "clean-up); extract it again with overwrite=True"
            )

    def _shard_of(self, row: int) -> str:
        for info in self.shards:
            if info["rows"][0] <= row < info["rows"][1]:
                return f"the shard {str(self.path.parent / info['path'])!r}"
        return "the file"

    def _located(self, arr: Any, rows: np.ndarray, err: BaseException, what: str) -> Exception:
        """The named error for a failed read of ``rows``: which chunk (or shard) fails."""
        if isinstance(err, (BltModelsError, BlockingIOError)):
            return err
        chunks = getattr(arr, "chunks", None) if not getattr(arr, "is_virtual", False) else None
        if chunks:  # the first chunk of the rows that fails on its own
            k = int(chunks[0])
            for c in np.unique(rows // k).tolist():
                lo, hi = c * k, min((c + 1) * k, int(arr.shape[0]))
                try:
                    arr[lo:hi]
                except Exception:  # noqa: BLE001
                    if self.backend == "zarr":
                        key = arr.metadata.encode_chunk_key((c, *[0] * (arr.ndim - 1)))
                        place = f"the chunk file {arr.path}/{key}"
                    else:
                        place = "their HDF5 chunk"
                    return library_error(self.path, err, f"{what}, rows {lo} .. {hi - 1} ({place})")
        for info in self.shards:
            lo, hi = info["rows"]
            if ((rows >= lo) & (rows < hi)).any():
                try:
                    arr[lo:hi]
                except Exception:  # noqa: BLE001
                    return library_error(
                        self.path, err, f"{what}, rows {lo} .. {hi - 1} ({self._shard_of(lo)})"
                    )
        span = f"rows {int(rows[0])} .. {int(rows[-1])}" if len(rows) else "rows"
        return library_error(self.path, err, f"{what}, {span}")

    def _take_rows(self, arr: Any, rows: np.ndarray, what: str) -> np.ndarray:
        """Whole rows ``rows`` (sorted, distinct) of ``arr``: one slice where they are
        consecutive."""
        try:
            if len(rows) == 0:
                return np.asarray(arr[0:0])
            first, last = int(rows[0]), int(rows[-1])
            if last - first + 1 == len(rows):
                return np.asarray(arr[first : last + 1])
            if self.backend == "h5":
                return np.asarray(arr[rows.tolist()])
            return np.asarray(arr.oindex[rows])
        except Exception as err:  # noqa: BLE001 - what h5py / zarr raise on damaged chunks
            raise self._located(arr, rows, err, what) from None

    def _read(self, arr: Any, rows: np.ndarray, rest: tuple) -> np.ndarray:
        """``rest`` of the rows ``rows`` (sorted, distinct) of ``arr``, each row checked first
        against its checksum (``self.checksums``; None: a file without them)."""
        layer = self.key.split("/", 1)[-1]
        what = f"the features of layer {layer!r}"
        row_bytes = max(1, math.prod(self.shape[1:]) * self.np_dtype.itemsize)
        per_block = max(1, READ_BLOCK_BYTES // row_bytes)
        out = None  # filled block by block (no second copy of a large read)
        for i in range(0, max(len(rows), 1), per_block):
            block = rows[i : i + per_block]
            self._check_chunks(arr, block)
            data = self._take_rows(arr, block, what)
            if self.checksums is not None and len(block):
                verify_rows(self.path, what, block, row_checksums(data), self.checksums[block],
                            self._shard_of if self.shards else None)  # fmt: skip
            part = data[(slice(None), *rest)]
            if len(rows) <= per_block:
                return part
            if out is None:
                out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
            out[i : i + len(block)] = part
        assert out is not None
        return out

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.n

    def _rows(self, first: Any) -> int | slice | np.ndarray:
        """The first index as an int, a positive-step slice or an int array, checked."""
        if isinstance(first, Tensor):
            first = first.item() if first.ndim == 0 and not first.is_floating_point() else first
            first = first.numpy() if isinstance(first, Tensor) else first
        if isinstance(first, (bool, np.bool_)):
            raise FeatureIndexError(f"a scalar bool is not a row index; got {first!r}")
        if _is_int(first):
            i = int(first) + self.n if first < 0 else int(first)
            if not 0 <= i < self.n:
                raise FeatureIndexError(f"index {int(first)} is out of range for {self.n} images")
            return i
        if isinstance(first, slice):
            start, stop, step = first.indices(self.n)
            if step > 0:
                return slice(start, stop, step)
            return np.arange(start, stop, step, dtype=np.int64)
        if isinstance(first, (list, tuple, np.ndarray)):
            arr = np.asarray(first)
            if arr.size == 0 and not isinstance(first, np.ndarray):  # [] indexes no rows
                arr = arr.astype(np.int64)
            if arr.dtype == bool:
                if arr.shape != (self.n,):
                    raise FeatureIndexError(
                        f"a boolean mask of shape {list(arr.shape)} for {self.n} images; a mask "
                        f"needs one entry per image (shape [{self.n}])"
                    )
                return np.flatnonzero(arr)
            if not np.issubdtype(arr.dtype, np.integer):
                raise FeatureIndexError(
                    f"only integers, slices, integer arrays and boolean masks index rows; got "
                    f"an array of {arr.dtype}"
                )
            if ((arr < -self.n) | (arr >= self.n)).any():
                raise FeatureIndexError(f"an index is out of range for {self.n} images")
            return np.where(arr < 0, arr + self.n, arr).astype(np.int64)
        raise FeatureIndexError(
            f"only integers, slices, integer arrays and boolean masks index rows; got {first!r}"
        )

    def _basic(self, rest: tuple) -> tuple | None:
        """``rest`` (the index after the rows) as h5py / zarr read it directly: ints within their
        axis (made non-negative) and slices with a positive step; None for anything else."""
        out: list[Any] = []
        for axis, r in enumerate(rest, start=1):
            if axis >= self.ndim:
                return None
            if isinstance(r, slice) and (r.step is None or (_is_int(r.step) and r.step > 0)):
                out.append(r)
            elif _is_int(r) and not isinstance(r, (bool, np.bool_)):
                dim = self.shape[axis]
                if not -dim <= int(r) < dim:
                    return None
                out.append(int(r) % dim)
            else:
                return None
        return tuple(out)

    def __getitem__(self, index: Any) -> Tensor:
        index = index if isinstance(index, tuple) else (index,)
        # torch tensors as numpy arrays: numpy semantics throughout, as documented.
        index = tuple(
            (i.item() if i.ndim == 0 else i.numpy()) if isinstance(i, Tensor) else i for i in index
        )
        self._check_unchanged()
        root = _open_read(self.path, self.backend)
        try:
            try:
                arr = root[self.key]
            except Exception as err:  # noqa: BLE001 - a damaged or removed array
                raise library_error(self.path, err, f"the arrays of {self.key!r}") from None
            first = index[0] if index else slice(None)
            rest = self._basic(index[1:])
            if first is Ellipsis or first is None or rest is None:
                # General numpy semantics on the rows that hold data (reads the whole array).
                if first is not Ellipsis and first is not None:
                    self._rows(first)  # the row index's own checks and messages
                full = self._read(arr, np.arange(self.n, dtype=np.int64), ())
                try:
                    data = full[index]
                except (IndexError, TypeError) as err:
                    raise FeatureIndexError(
                        f"index {index!r} does not fit features of shape {list(self.shape)}: {err}"
                    ) from None
            else:
                rows = self._rows(first)
                if isinstance(rows, slice):
                    data = self._read(arr, np.arange(*rows.indices(self.n)), rest)
                elif isinstance(rows, np.ndarray):
                    # Rows in any order with repeats: each distinct row read once, in order.
                    uniq, inverse = np.unique(rows.reshape(-1), return_inverse=True)
                    data = self._read(arr, uniq, rest)[inverse.reshape(-1)]
                    data = data.reshape(*rows.shape, *data.shape[1:])
                else:
                    data = self._read(arr, np.asarray([rows], dtype=np.int64), rest)[0]
        except BlockingIOError:  # a shard of a join held open for writing by another process
            raise _in_use(self.path) from None
        finally:
            if self.backend == "h5":
                root.close()
        data = np.asarray(data)  # a 0-d result stays 0-d (np.ascontiguousarray makes it 1-d)
        # numpy calls a 1-element view with a negative stride contiguous; torch refuses it.
        if not data.flags.c_contiguous or any(st < 0 for st in data.strides):
            data = data.copy(order="C")
        return torch.from_numpy(data)

    def load(self) -> Tensor:
        return self[:]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self.load().numpy()
        return data.astype(dtype) if dtype is not None else data

    def __repr__(self) -> str:
        return f"LazyFeatures({str(self.path)!r}, {self.key!r}, shape={self.shape}, dtype={self.dtype})"


def load_features(
    path: str | os.PathLike[str], layers: str | Sequence[str] | None = None, lazy: bool = False
) -> ExtractedFeatures:
    """Read a file written by [`extract_features`][blt_models.extract_features] into an [`ExtractedFeatures`][blt_models.ExtractedFeatures].

    Args:
        path: the ``.h5`` / ``.hdf5`` file or ``.zarr`` store.
        layers: a subset of layers to read (None: all).
        lazy: give [`LazyFeatures`][blt_models.extract.LazyFeatures] (read on indexing) instead of tensors, for files
            larger than memory. ``result.load()`` turns a lazy result into tensors.

    An interrupted file gives the images written so far (``metadata["complete"]`` is False).
    The file is checked before any row is handed out: its layout against its metadata (every
    layer with the shape, dtype and rows the metadata implies; ids, steps and the counter
    ``n_done``), then every row read against its checksum (files of format 4 or later; see
    ``docs/extraction.md``).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CorruptFeatureFileError: a file that contradicts itself or fails its checksums (an
            ``OutputMismatchError``); the message names the file, the field or rows.
        OutputMismatchError: ``path`` is not a feature file, is truncated, or has a format
            version this release does not read.
        OutputInUseError: another process holds the HDF5 file.

    Warns:
        UncheckedFeaturesWarning: a file of format 2 or 3, which has no checksums (its rows
            are read unchecked).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no feature file at {str(path)!r}")
    # The real location: lazy reads later do not depend on the working directory, and a join's
    # shards are found next to the file itself, not next to a symbolic link to it.
    path = path.resolve()
    backend = backend_of(path)
    state = inspect_output(path, backend)
    if state == "broken":
        raise OutputMismatchError(
            f"{str(path)!r} is a truncated or corrupt blt-models feature file (a copy that was "
            "cut short, or a disk that failed); extract again with overwrite=True"
        )
    if state == "absent":
        raise FileNotFoundError(f"no feature file at {str(path)!r} (an empty directory)")
    root = _open_read(path, backend)
    try:
        file_state = read_state(path, root, backend)
        if backend == "zarr":
            check_zarr_chunks(path, root, file_state)
        metadata, n = file_state.metadata, file_state.n_done
        if not file_state.checksummed:
            warnings.warn(
                f"{str(path)!r} is a feature file of format_version "
                f"{metadata['format_version']}, which has no checksums: its layout is checked, "
                "its rows are not (a flipped bit or rows that moved read silently). Extract it "
                "again with overwrite=True (CLI: --overwrite) for a file with checksums",
                UncheckedFeaturesWarning,
                stacklevel=2,
            )
        files = [path]
        shards = (metadata.get("shards") or {}).get("files") or []
        if metadata.get("shards"):  # a join of per-process shards: are they all still there?
            from .shards import check_shards

            check_shards(path, root, metadata)
            files += [path.parent / info["path"] for info in shards]
        identities = {str(f): file_identity(f) for f in files}
        metadata["n_done"], metadata["complete"] = n, file_state.complete
        names = metadata["layers"] if layers is None else _names(layers, metadata["layers"])
        columns = file_state.columns or {}
        try:
            ids = [_to_str(s) for s in root["image_ids"][:n]]
            table = np.asarray(root[CHECKSUMS][:n]) if file_state.checksummed else None
        except Exception as err:  # noqa: BLE001 - what h5py / zarr raise on a damaged store
            raise library_error(path, err, f"the arrays 'image_ids' and {CHECKSUMS!r}") from None
        if table is not None:
            verify_rows(path, "the image ids", np.arange(n), string_checksums(ids),
                        table[:, columns["image_ids"]])  # fmt: skip
        steps = torch.from_numpy(np.asarray(root["steps"][:], dtype=np.int64))
        every_chunk = bool(root.attrs.get("every_chunk_written", False))
        specs = {name: (tuple(root[f"features/{name}"].shape[1:]),
                        np.dtype(str(root[f"features/{name}"].dtype))) for name in names}  # fmt: skip
    except BlockingIOError:
        raise _in_use(path) from None
    finally:
        if backend == "h5":
            root.close()
    features: dict[str, Any] = {}
    for name in names:
        shape, dtype = specs[name]
        lazy_layer = LazyFeatures(
            path, backend, f"features/{name}", n, shape, dtype, files=identities,
            every_chunk_written=every_chunk, shards=shards,
            checksums=None if table is None else np.ascontiguousarray(table[:, columns[name]]),
        )  # fmt: skip
        features[name] = lazy_layer if lazy else lazy_layer.load()
    return ExtractedFeatures(
        features=features,
        steps=steps,
        first_step={k: int(v) for k, v in metadata["first_step"].items() if k in names},
        image_ids=ids,
        metadata=metadata,
    )


def _names(layers: str | Sequence[str], known: list[str]) -> list[str]:
    import difflib

    wanted = [layers] if isinstance(layers, str) else list(layers)
    for name in wanted:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownLayerError(
                f"the file has no layer {name!r}.{hint} Layers: {', '.join(known)}."
            )
    return wanted
