"""Extraction across processes: each rank writes its rows of the source to a shard (an ordinary
feature file of its own), and one small HDF5 file joins the shards with virtual datasets, so that
[`load_features`][blt_models.load_features] and plain ``h5py`` read them as one array.

For ``out="feats.h5"`` and 4 processes::

    feats.h5                                   the joined file (written once every shard is done)
    feats.h5.shards/rank-00000-of-00004.h5     rows of rank 0 ...
    feats.h5.shards/rank-00003-of-00004.h5     ... rows of rank 3

Ranks split the source at multiples of ``batch_size``, so every batch holds the same images as in
a one-process run and the arrays are the same, byte for byte. A rank that dies leaves the other
shards complete; running the same command again resumes each shard after its last complete batch
and writes the join. Reading a joined file checks that every shard is present, complete, written
with the same settings and holds the images the join lists: HDF5 itself would silently read
zeros for a missing shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import (
    CorruptFeatureFileError,
    FeatureWriteError,
    InvalidArgumentError,
    OutputMismatchError,
)
from .integrity import (
    CHECKSUMS,
    checksum_columns,
    metadata_checksum,
    read_state,
    remove_stale_temporaries,
    temporary_path,
    write_new_file,
)
from .settings import SHARED_KEYS, differing

__all__ = ["resolve_ranks", "split_rows", "shard_path", "join_if_complete", "check_shards"]


def resolve_ranks(rank: Any, world_size: Any) -> tuple[int, int, str]:
    """``(rank, world_size, origin)``: as given (origin ``"arguments"``), else from an
    initialised ``torch.distributed`` process group (``"group"``), else from torchrun's ``RANK`` /
    ``WORLD_SIZE`` environment (``"torchrun"``), else ``(0, 1, "none")``."""
    origin = "arguments"
    if rank is None and world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size(), "group"
        env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if env_rank is None or env_world is None:
            return 0, 1, "none"
        try:
            rank, world_size = int(env_rank), int(env_world)
        except ValueError:
            raise InvalidArgumentError(
                f"the environment's RANK={env_rank!r} / WORLD_SIZE={env_world!r} are not integers"
            ) from None
        origin = "torchrun"
    if rank is None or world_size is None:
        raise InvalidArgumentError("pass both rank and world_size (or neither)")
    for value, what in ((rank, "rank"), (world_size, "world_size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidArgumentError(f"{what} must be an integer; got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidArgumentError(
            f"rank must be in 0 .. world_size-1 and world_size >= 1; got rank={rank}, "
            f"world_size={world_size}"
        )
    return int(rank), int(world_size), origin


def split_rows(n: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """Rows ``[start, stop)`` of every rank: contiguous runs of whole batches, as even as
    possible (a rank gets no rows when there are fewer batches than ranks)."""
    n_batches = -(-n // batch_size)
    bounds = [min(r * n_batches // world_size * batch_size, n) for r in range(world_size + 1)]
    return [(bounds[r], bounds[r + 1]) for r in range(world_size)]


def shard_dir(out: Path) -> Path:
    return out.with_name(out.name + ".shards")


def shard_path(out: Path, rank: int, world_size: int) -> Path:
    return shard_dir(out) / f"rank-{rank:05d}-of-{world_size:05d}.h5"


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_meta(f: Any) -> dict[str, Any]:
    meta = f.attrs["metadata"]
    return json.loads(meta) if isinstance(meta, (str, bytes)) else dict(meta)


def _shard_state(
    path: Path, metadata: dict[str, Any], rows: tuple[int, int], stale_ok: bool = False
) -> str | None:
    """None if the shard at ``path`` is complete and belongs to this join, else why not.

    Raises [`OutputMismatchError`][blt_models.errors.OutputMismatchError] for a shard that cannot become part of the join by
    waiting (other settings or rows): e.g. ranks that built their models with different random
    weights.
    """
    h5py = require("h5py", "joining HDF5 feature shards")
    if not path.is_file():
        return "missing"
    try:
        with h5py.File(path, "r") as f:
            state = read_state(path, f, "h5")
            meta, n_done, complete = state.metadata, state.n_done, state.complete
    except BlockingIOError:
        return "still being written by another process"
    except CorruptFeatureFileError as err:
        return f"damaged ({err})"
    except (OSError, KeyError, ValueError):
        return "unreadable"
    differ = differing(meta, metadata, SHARED_KEYS)
    got = (meta.get("shard") or {}).get("rows")
    if (differ or got != list(rows)) and stale_ok:  # its rank has yet to be run again
        return "from an earlier run with other settings"
    if differ or got != list(rows):
        why = (
            f"was written with other settings ({differ})"
            if differ
            else f"holds images {got}, not {list(rows)} (the split follows batch_size: it was "
            f"{meta.get('batch_size')}, now {metadata.get('batch_size')})"
        )
        hint = (
            "; every process must hold the same weights (seed the random initialisation the "
            "same in every process, e.g. torch.manual_seed(0), or load trained weights)"
            if differ and "weights_sha256" in differ
            else ""
        )
        raise OutputMismatchError(
            f"the shard {str(path)!r} {why}, so it cannot be joined with this process's "
            f"rows{hint}. Run every process with the same settings, or pass overwrite=True "
            "(CLI: --overwrite) to replace the shards"
        )
    if not complete or n_done != rows[1] - rows[0]:
        return f"incomplete ({n_done} of {rows[1] - rows[0]} images)"
    return None


def join_if_complete(
    out: Path, metadata: dict[str, Any], world_size: int, ranges: list[tuple[int, int]],
    check: Callable[[int, int, list[str], list[str]], None] | None = None,
    stale_ok: bool = False,
) -> str | None:  # fmt: skip
    """Write the joined file at ``out`` if every shard is complete; returns None if it did, else
    why not (a shard missing, being written, or, with ``stale_ok`` (an overwriting run), left
    from an earlier run). A complete shard of other settings raises
    [`OutputMismatchError`][blt_models.errors.OutputMismatchError]; so does ``check(rank, first_row, ids, fingerprints)``, called
    with every shard's rows, for images that changed since the shard was written.

    Written to a temporary name and renamed, so a reader (or a second rank joining at the same
    moment) never sees half a file.
    """
    h5py = require("h5py", "joining HDF5 feature shards")
    parts = [(r, rows) for r, rows in enumerate(ranges) if rows[1] > rows[0]]
    for r, rows in parts:
        why = _shard_state(shard_path(out, r, world_size), metadata, rows, stale_ok)
        if why is not None:
            return f"the shard of rank {r} is {why}"
    n = ranges[-1][1]
    files = [
        {
            "rank": r,
            "rows": list(rows),
            "path": shard_path(out, r, world_size).relative_to(out.parent).as_posix(),
        }
        for r, rows in parts
    ]
    joined = dict(metadata, shards={"world_size": world_size, "files": files})
    tmp = temporary_path(out, "join")
    remove_stale_temporaries(out, "join", by_process=False)
    try:
        # Built in memory and written with one plain write (HDF5 cannot recover from a write
        # that fails half-way), under a temporary name.
        with h5py.File(str(tmp), "w", driver="core", backing_store=False) as f:
            text = json.dumps(joined)
            f.attrs["metadata"] = text  # first: whose file it is (inspect_output)
            f.attrs["metadata_crc32c"] = metadata_checksum(json.loads(text))
            f.attrs["n_done"], f.attrs["complete"] = n, False
            ids: list[Any] = []
            fps: list[Any] = []
            sums: list[np.ndarray] = []
            for r, rows in parts:
                with h5py.File(shard_path(out, r, world_size), "r") as s:
                    shard_ids = [_str(v) for v in s["image_ids"][: rows[1] - rows[0]]]
                    shard_fps = [_str(v) for v in s["fingerprints"][: rows[1] - rows[0]]]
                    if check is not None:
                        check(r, rows[0], shard_ids, shard_fps)
                    ids += shard_ids
                    fps += shard_fps
                    # The rows' checksums as the shard wrote them: a shard row rewritten after
                    # the join no longer matches them.
                    sums.append(np.asarray(s[CHECKSUMS][: rows[1] - rows[0]]))
                    if r == parts[0][0]:
                        steps = s["steps"][:]
                        specs = {
                            name: (s[f"features/{name}"].dtype, s[f"features/{name}"].shape[1:])
                            for name in metadata["layers"]
                        }
            for name, (dtype, shape) in specs.items():
                layout = h5py.VirtualLayout(shape=(n, *shape), dtype=dtype)
                for (_, (a, b)), info in zip(parts, files, strict=True):
                    layout[a:b] = h5py.VirtualSource(
                        info["path"], f"features/{name}", shape=(b - a, *shape)
                    )
                ds = f.create_virtual_dataset(f"features/{name}", layout, fillvalue=0)
                ds.attrs["first_step"] = metadata["first_step"][name]
            for key, values in (("image_ids", ids), ("fingerprints", fps)):
                f.create_dataset(key, data=np.asarray(values, dtype=object),
                                 dtype=h5py.string_dtype())  # fmt: skip
            table = np.concatenate(sums)
            columns = checksum_columns(metadata["layers"])
            ds = f.create_dataset(CHECKSUMS, data=table, chunks=(min(4096, n), len(columns)),
                                  fletcher32=True)  # fmt: skip
            ds.attrs["columns"] = columns
            f.create_dataset("steps", data=steps, chunks=steps.shape, fletcher32=True)
            f.attrs["complete"] = True
            f.flush()
            image = f.id.get_file_image()
        try:
            write_new_file(tmp, image)
            os.replace(tmp, out)
        except OSError as err:
            raise FeatureWriteError(
                f"writing the join {str(out)!r} failed ({err}); it needs about "
                f"{len(image) / (1 << 20):.1f} MiB. Every shard is complete: free space (or fix "
                "the disk) and run any rank again to write the join"
            ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return None


def check_shards(out: Path, root: Any, metadata: dict[str, Any]) -> None:
    """Refuse a joined file whose shards are missing, incomplete, of other settings, or hold
    other images than the join lists (``root``: the joined file, open)."""
    shards = metadata["shards"]
    fps = root["fingerprints"]
    h5py = require("h5py", "reading HDF5 feature shards")
    for info in shards["files"]:
        rows = tuple(info["rows"])
        path = out.parent / info["path"]
        try:
            why = _shard_state(path, metadata, rows)  # type: ignore[arg-type]
        except OutputMismatchError as err:
            why = f"not part of it ({err})"
        if why is None:
            with h5py.File(path, "r") as s:
                if list(s["fingerprints"][: rows[1] - rows[0]]) != list(fps[rows[0] : rows[1]]):
                    why = "holds other images than the joined file lists"
        if why is not None:
            raise OutputMismatchError(
                f"{str(out)!r} joins {len(shards['files'])} shard files, and the one of rank "
                f"{info['rank']} ({str(path)!r}, images {rows[0]} .. {rows[1] - 1}) is {why}; "
                "keep the .shards folder next to the joined file (move them together), or run "
                "the extraction again to complete it"
            )


def check_split(out: Path, metadata: dict[str, Any], world_size: int,
                ranges: list[tuple[int, int]]) -> None:  # fmt: skip
    """Before any work: refuse shards of this output whose rows follow another split (another
    batch size or number of images), which could never be joined with this run's."""
    h5py = require("h5py", "reading HDF5 feature shards")
    for r, rows in enumerate(ranges):
        path = shard_path(out, r, world_size)
        if not path.is_file():
            continue
        try:
            with h5py.File(path, "r") as f:
                meta = _read_meta(f)
        except (OSError, KeyError, ValueError):
            continue  # being written, or unreadable: the shard's own rank deals with it
        got = (meta.get("shard") or {}).get("rows")
        batch = meta.get("batch_size")
        if got is not None and (got != list(rows) or batch != metadata.get("batch_size")):
            held = (
                f"holds images {got[0]} .. {got[1] - 1}, and this run gives rank {r} images "
                f"{rows[0]} .. {rows[1] - 1}"
                if got != list(rows)
                else f"(rank {r}) holds the same images, but batch by batch of another size"
            )
            raise OutputMismatchError(
                f"the shard {str(path)!r} {held}: ranks split the source in "
                f"whole batches, and the shards were written with batch_size="
                f"{meta.get('batch_size')} (this run: batch_size={metadata.get('batch_size')}, "
                f"{metadata.get('n_images')} images). Resume with the same batch_size and images, "
                "or pass overwrite=True (CLI: --overwrite) in every rank"
            )
