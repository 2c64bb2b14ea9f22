"""Whether a feature file agrees with itself, and named errors where it does not.

A file of format 4 carries three kinds of checksum:

* per chunk, the format's own: HDF5's Fletcher-32 filter on every numeric dataset, zarr's
  CRC-32C codec on every chunk of every array, so a flipped bit or a truncated chunk fails
  the read;
* per row, ``/checksums`` ``uint32 [N, L + 2]``: the CRC-32C of every image's features in each
  layer (the row ``[S, ...]`` as stored, little-endian C order), of its id and of its
  fingerprint (UTF-8), so that rows that moved (zarr chunk files swapped, a shard rewritten
  after the join) are refused although each chunk is intact;
* ``metadata_crc32c``, the CRC-32C of the metadata as canonical JSON.

`read_state` checks the layout against the metadata before any row is handed out;
`verify_rows` checks rows against ``/checksums``; `library_error` turns what h5py
or zarr raise on a damaged file into [`CorruptFeatureFileError`][blt_models.errors.CorruptFeatureFileError] naming file, array, rows
and chunk.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from .._version import __version__
from ..errors import BltModelsError, CorruptFeatureFileError, OutputMismatchError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CHECKSUMS",
    "CHECKSUMMED_SINCE",
    "OLDEST_READABLE",
    "FileState",
    "crc32c",
    "row_checksums",
    "string_checksums",
    "metadata_checksum",
    "checksum_columns",
    "read_state",
    "verify_rows",
    "library_error",
    "write_new_file",
    "temporary_path",
    "remove_stale_temporaries",
]

FORMAT_NAME = "blt-models-features"
FORMAT_VERSION = 4  # 2: fingerprints, provenance; 3: streamed weights_sha256, first_input,
# shards; 4: checksums (Fletcher-32 / CRC-32C per chunk, /checksums per row, metadata_crc32c)
CHECKSUMS = "checksums"
CHECKSUMMED_SINCE = 4  # the first format version with checksums
OLDEST_READABLE = 2
FIX = "extract it again with overwrite=True (CLI: --overwrite)"
#: Seconds after which a temporary store (`temporary_path`) of another process is taken as left
#: by a process that died: creating a store or a join takes seconds.
STALE_AFTER_S = 600


def _crc32c() -> Callable[[Any], int]:
    return require("google_crc32c", "checksumming feature files").value


def crc32c(data: Any) -> int:
    """CRC-32C (Castagnoli) of a bytes-like object, the checksum zarr's ``crc32c`` codec uses."""
    return int(_crc32c()(data))


def row_checksums(values: np.ndarray) -> np.ndarray:
    """``uint32 [n]``: the CRC-32C of each row ``values[i]`` (its bytes in little-endian C
    order)."""
    values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    flat = values.reshape(len(values), -1).view(np.uint8)
    value = _crc32c()
    return np.fromiter((value(row) for row in flat), dtype=np.uint32, count=len(values))


def string_checksums(strings: Sequence[str]) -> np.ndarray:
    """``uint32 [n]``: the CRC-32C of each string's UTF-8 bytes."""
    value = _crc32c()
    return np.fromiter((value(s.encode()) for s in strings), dtype=np.uint32, count=len(strings))


def metadata_checksum(metadata: dict[str, Any]) -> int:
    """CRC-32C of ``metadata`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return crc32c(text.encode())


def checksum_columns(layers: Sequence[str]) -> list[str]:
    """The columns of ``/checksums``: the layers in order, then the ids and fingerprints."""
    return [*layers, "image_ids", "fingerprints"]


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` (which must not exist) and flush it to the
    disk: how a store's header is written, in one plain write that fails cleanly."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def temporary_path(path: Path, kind: str) -> Path:
    """Where this process builds ``path`` before renaming it into place: ``.NAME.KIND-PID`` next
    to it (hidden, so never taken for an image of a stimulus folder)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def _running_here(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: Path, kind: str, by_process: bool) -> None:
    """Remove the `temporary_path` stores of ``path`` that processes killed while building it
    left behind: this process's own name (process ids are reused), any untouched for
    ``STALE_AFTER_S`` (building takes seconds), and with ``by_process`` any whose process is
    not running on this machine. ``by_process`` only where no other machine builds the same
    name at the same time (a store is created by the one process that writes it; the join of
    shards may be written by several ranks at once, on several machines). Without this, every
    run killed while creating its output left a hidden file or folder next to it for good."""
    own = temporary_path(path, kind)
    now = time.time()
    for left in path.parent.glob(f".{glob.escape(path.name)}.{kind}-*"):
        pid = left.name.rsplit("-", 1)[-1]
        try:
            stale = (
                left == own
                or now - left.lstat().st_mtime >= STALE_AFTER_S
                or (by_process and pid.isdigit() and not _running_here(int(pid)))
            )
            if not stale:
                continue
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left)
            else:
                left.unlink()
        except OSError:
            pass  # removed meanwhile by another run, or not ours to remove


def _damaged(path: Path, what: str) -> CorruptFeatureFileError:
    return CorruptFeatureFileError(
        f"{str(path)!r} contradicts itself: {what}. The file is damaged (a copy cut short, bit "
        f"rot) or was edited after it was written; {FIX}"
    )


def library_error(path: Path, err: BaseException, what: str) -> BltModelsError:
    """The named error for what h5py / zarr raised while ``what`` of ``path`` was read."""
    if isinstance(err, BltModelsError):
        return err
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "checksum" in text.lower() or "filter returned failure" in text:
        text = f"its checksum does not match ({text})"
    return _damaged(path, f"{what} cannot be read: {text}")


@dataclass
class FileState:
    """What `read_state` found: the metadata, ``n_done``, ``complete``, and where each
    layer's row checksums are (None for a file of a format before checksums)."""

    metadata: dict[str, Any]
    n_done: int
    complete: bool
    columns: dict[str, int] | None

    @property
    def checksummed(self) -> bool:
        return self.columns is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _parse_metadata(path: Path, raw: Any) -> dict[str, Any]:
    try:
        meta = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise _damaged(path, f"the attribute 'metadata' is not a JSON object ({err})") from None
    if not isinstance(meta, dict):
        raise _damaged(path, "the attribute 'metadata' is not a JSON object")
    return meta


def check_version(path: Path, metadata: dict[str, Any]) -> int:
    """The file's ``format_version``, if this release reads it; else a named error."""
    if metadata.get("format") != FORMAT_NAME:
        raise _damaged(
            path, f"metadata 'format' is {metadata.get('format')!r}, not {FORMAT_NAME!r}"
        )
    version: Any = metadata.get("format_version")
    if not _is_int(version):
        raise _damaged(path, f"metadata 'format_version' is {version!r}, not an integer")
    writer = (metadata.get("library") or {}).get("blt_models", "an unknown version")
    if version > FORMAT_VERSION:
        raise OutputMismatchError(
            f"{str(path)!r} has feature file format_version {version}, written by blt-models "
            f"{writer}; this blt-models ({__version__}) reads versions {OLDEST_READABLE} to "
            f"{FORMAT_VERSION}. Upgrade blt-models: git pull in its clone."
        )
    if version < OLDEST_READABLE:
        raise OutputMismatchError(
            f"{str(path)!r} has feature file format_version {version} (blt-models {writer}), "
            f"which this blt-models ({__version__}) no longer reads; extract the features again "
            "with this version (extract_features(..., overwrite=True))"
        )
    return int(version)


def _expect(path: Path, ok: bool, what: str) -> None:
    if not ok:
        raise _damaged(path, what)


def _array(path: Path, root: Any, name: str) -> Any:
    """The array ``name`` of ``root``, or a named error (missing, a group, unreadable)."""
    try:
        arr = root[name]
    except KeyError:
        raise _damaged(path, f"the array {name!r} is missing") from None
    except Exception as err:  # noqa: BLE001 - whatever h5py / zarr raise on damaged metadata
        raise library_error(path, err, f"the array {name!r}") from None
    if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
        raise _damaged(path, f"{name!r} is a group, not an array")
    return arr


def _has_checksum_filter(arr: Any, backend: str) -> bool:
    if backend == "h5":
        return bool(arr.is_virtual or arr.fletcher32)
    return any(type(c).__name__ == "Crc32cCodec" for c in arr.metadata.codecs)


def _rows(path: Path, arr: Any, name: str, n_done: int, n_images: int | None) -> None:
    rows = int(arr.shape[0]) if len(arr.shape) else 0
    _expect(
        path,
        rows >= n_done,
        f"{name!r} holds {rows} rows, fewer than the {n_done} images the counter n_done says "
        "were written",
    )
    _expect(
        path,
        n_images is None or rows == n_images,
        f"{name!r} holds {rows} rows, and the metadata says the file holds {n_images} images",
    )


def read_state(path: Path, root: Any, backend: str) -> FileState:
    """Check that the store ``root`` (open, of ``path``) agrees with itself before any row is
    read: metadata and its checksum, format version, ``n_done`` and ``complete``, every layer
    with the shape, dtype and rows the metadata implies, ``image_ids``, ``fingerprints``,
    ``steps`` and ``checksums``. Raises [`CorruptFeatureFileError`][blt_models.errors.CorruptFeatureFileError] naming the field, or
    [`OutputMismatchError`][blt_models.errors.OutputMismatchError] for a format version this release does not read."""
    try:
        return _read_state(path, root, backend)
    except BltModelsError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever h5py / zarr raise on a damaged store
        raise library_error(path, err, "its layout") from None


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _read_state(path: Path, root: Any, backend: str) -> FileState:
    attrs = dict(root.attrs)
    if "metadata" not in attrs:
        raise _damaged(path, "the attribute 'metadata' is missing")
    meta = _parse_metadata(path, attrs["metadata"])
    version = check_version(path, meta)
    if version >= CHECKSUMMED_SINCE:
        stored: Any = attrs.get("metadata_crc32c")
        _expect(path, _is_int(stored), f"the attribute 'metadata_crc32c' is {stored!r}")
        _expect(
            path,
            int(stored) == metadata_checksum(meta),
            "the metadata does not match its checksum (metadata_crc32c)",
        )
    n_done: Any = _plain(attrs.get("n_done"))
    complete: Any = _plain(attrs.get("complete"))
    _expect(path, n_done is not None, "the counter n_done is missing")
    _expect(path, _is_int(n_done), f"the counter n_done is {n_done!r}, not an integer")
    n_done = int(n_done)
    _expect(path, n_done >= 0, f"the counter n_done is {n_done}, negative")
    _expect(
        path,
        isinstance(complete, (bool, np.bool_)),
        f"the attribute 'complete' is {complete!r}, not true or false",
    )
    complete = bool(complete)

    layers: Any = meta.get("layers")
    _expect(
        path,
        isinstance(layers, list)
        and all(isinstance(x, str) for x in layers)
        and len(set(layers)) == len(layers),
        f"metadata 'layers' is {layers!r}, not a list of distinct names",
    )
    steps: Any = meta.get("steps")
    _expect(
        path,
        isinstance(steps, list) and all(_is_int(s) for s in steps),
        f"metadata 'steps' is {steps!r}, not a list of integers",
    )
    n_images: Any = meta.get("n_images")
    _expect(
        path,
        n_images is None or (_is_int(n_images) and n_images >= 0),
        f"metadata 'n_images' is {n_images!r}",
    )
    _expect(
        path,
        n_images is None or n_done <= n_images,
        f"the counter n_done is {n_done}, more than the {n_images} images of the metadata",
    )
    _expect(
        path,
        not complete or n_images is None or n_done == n_images,
        f"it is marked complete with {n_done} of {n_images} images written",
    )
    shapes: Any = meta.get("feature_shapes")
    first: Any = meta.get("first_step")
    _expect(path, isinstance(shapes, dict), "metadata 'feature_shapes' is missing")
    _expect(path, isinstance(first, dict), "metadata 'first_step' is missing")
    try:
        dtype = np.dtype(str(meta.get("dtype")))
    except TypeError:
        raise _damaged(path, f"metadata 'dtype' is {meta.get('dtype')!r}") from None
    checked = version >= CHECKSUMMED_SINCE
    for name in layers:
        shape = shapes.get(name)
        _expect(
            path,
            isinstance(shape, list) and all(_is_int(d) and d > 0 for d in shape)
            and len(shape) >= 1 and shape[0] == len(steps),
            f"metadata 'feature_shapes' of {name!r} is {shape!r} (its first dimension is the "
            f"{len(steps)} steps)",
        )  # fmt: skip
        _expect(path, _is_int(first.get(name)), f"metadata 'first_step' of {name!r} is missing")
        key = f"features/{name}"
        arr = _array(path, root, key)
        _expect(
            path,
            tuple(arr.shape[1:]) == tuple(shape) and len(arr.shape) == len(shape) + 1,
            f"{key!r} has shape {list(arr.shape)}, and the metadata says [N, {', '.join(map(str, shape))}]",
        )
        _expect(
            path,
            np.dtype(str(arr.dtype)) == dtype,
            f"{key!r} holds {arr.dtype}, and the metadata says {dtype}",
        )
        _rows(path, arr, key, n_done, n_images)
        stored_first = _plain(arr.attrs.get("first_step"))
        _expect(
            path,
            stored_first is None or (_is_int(stored_first) and stored_first == first[name]),
            f"{key!r} has first_step {stored_first!r}, and the metadata says {first[name]}",
        )
        if checked:
            _expect(
                path,
                _has_checksum_filter(arr, backend),
                f"{key!r} has no checksum filter (Fletcher-32 in HDF5, crc32c in zarr)",
            )
    for key in ("image_ids", "fingerprints"):
        arr = _array(path, root, key)
        _expect(path, len(arr.shape) == 1, f"{key!r} has shape {list(arr.shape)}, not [N]")
        kind = getattr(arr.dtype, "kind", "")
        _expect(path, kind in "OTUS", f"{key!r} holds {arr.dtype}, not strings")
        _rows(path, arr, key, n_done, n_images)
    arr = _array(path, root, "steps")
    try:
        stored_steps = np.asarray(arr[:])
    except Exception as err:  # noqa: BLE001
        raise library_error(path, err, "the array 'steps'") from None
    _expect(
        path,
        stored_steps.ndim == 1 and stored_steps.tolist() == steps,
        f"'steps' holds {stored_steps.tolist()}, and the metadata says {steps}",
    )
    columns = None
    if checked:
        arr = _array(path, root, CHECKSUMS)
        names = checksum_columns(layers)
        _expect(
            path,
            tuple(arr.shape[1:]) == (len(names),) and np.dtype(str(arr.dtype)) == np.uint32,
            f"{CHECKSUMS!r} is {arr.dtype} {list(arr.shape)}, not uint32 [N, {len(names)}]",
        )
        stored_names = arr.attrs.get("columns")
        stored_names = [str(c) for c in stored_names] if stored_names is not None else None
        _expect(
            path,
            stored_names == names,
            f"{CHECKSUMS!r} has columns {stored_names}, not {names}",
        )
        _expect(path, _has_checksum_filter(arr, backend), f"{CHECKSUMS!r} has no checksum filter")
        _rows(path, arr, CHECKSUMS, n_done, n_images)
        columns = {c: i for i, c in enumerate(names)}
    return FileState(meta, n_done, complete, columns)


def verify_rows(
    path: Path, what: str, rows: np.ndarray, computed: np.ndarray, expected: np.ndarray,
    where: Callable[[int], str] | None = None,
) -> None:  # fmt: skip
    """Refuse rows whose checksums (``computed``) differ from those written (``expected``).

    ``rows``: the row indices, ``what``: the layer or array; ``where(row)`` names the file a row
    lives in (a join's shard).
    """
    bad = np.flatnonzero(np.asarray(computed, np.uint32) != np.asarray(expected, np.uint32))
    if len(bad) == 0:
        return
    shown = ", ".join(str(int(rows[i])) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
    place = f" (in {where(int(rows[bad[0]]))})" if where is not None else ""
    raise CorruptFeatureFileError(
        f"{str(path)!r}: {what} at rows {shown}{place} do not match their checksums (CRC-32C "
        f"in /{CHECKSUMS}): the rows changed after they were written (chunk files swapped or "
        f"rewritten, a shard rewritten after the join, bit rot); {FIX}"
    )
