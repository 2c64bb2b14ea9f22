"""Per-layer, per-step feature extraction for a stimulus set, in memory or to HDF5 / zarr.

>>> feats = extract_features(model, "stimuli/", layers=["layer3", "layer5"])
>>> feats["layer5"].shape                     # [N, S, C, H, W]
>>> extract_features(model, "stimuli/", layers="all", out="feats.h5", pool="avg")
>>> feats = load_features("feats.h5")         # the same result type, read back

Everything is computed by [`ClockedModel.forward_timesteps`][blt_models.ClockedModel.forward_timesteps] (no hooks): a layer at a step
before it is active holds zeros, and the first active step of every layer is part of the result
and of the file metadata. Files are written batch by batch (memory bounded by one batch); a
re-run on the same file resumes after the last complete batch, after checking that the images
already written are still the same (content fingerprints). Layout: ``docs/extraction.md``.

The package: ``sources`` (stimuli -> batches, fingerprints), ``pooling``, ``stores`` (memory,
HDF5, zarr behind one writer; reading back), ``integrity`` (a file's layout and checksums checked
before a row is read), ``result`` ([`ExtractedFeatures`][blt_models.ExtractedFeatures]), ``plan`` (everything resolved
once, and the loop).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._clock import ClockedModel
from .._validate import check_output_location
from ..errors import (
    ExtractionError,
    InvalidArgumentError,
    NoImagesError,
    OutputMismatchError,
    StepOutOfRangeError,
    UnknownLayerError,
    UnreadableImageError,
)
from .plan import RunPlan, run
from .pooling import Pooling, parse_pool
from .result import ExtractedFeatures
from .settings import RESUME_KEYS, differing
from .shards import check_split, join_if_complete, resolve_ranks, shard_path, split_rows
from .sources import Source, check_fingerprints, list_images, same_image
from .stores import (
    FileStore,
    LazyFeatures,
    MemoryStore,
    backend_of,
    inspect_output,
    load_features,
    read_metadata,
    remove_store,
)

__all__ = [
    "extract_features",
    "load_features",
    "ExtractedFeatures",
    "LazyFeatures",
    "Pooling",
    "parse_pool",
    "list_images",
    "ExtractionError",
    "UnknownLayerError",
    "StepOutOfRangeError",
    "UnreadableImageError",
    "NoImagesError",
    "OutputMismatchError",
]


def _model_from_name(name: str) -> ClockedModel:
    """A name with a tag means its weights: ``arch.tag`` loads them (clear error if it cannot)."""
    from .._factory import create_model
    from .._registry import split_model_name_tag

    if name.startswith(("hf-hub:", "local-dir:")):
        return create_model(name)  # published locations load their weights by default
    _, tag = split_model_name_tag(name)
    return create_model(name, pretrained=bool(tag))


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{what} must be an integer >= {minimum}; got {value!r}")
    return value


def extract_features(
    model: ClockedModel | str,
    source: Any,
    layers: str | Sequence[str] | None = "all",
    steps: int | Sequence[int] | slice | None = None,
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    pool: Any = None,
    num_workers: int = 0,
    progress: bool = True,
    *,
    timesteps: int | None = None,
    transform: Any = None,
    image_ids: Sequence[str] | None = None,
    overwrite: bool = False,
    store_dtype: torch.dtype | str | None = None,
    memory_format: str = "auto",
    stimulus: Any = None,
    rank: int | None = None,
    world_size: int | None = None,
    compile: bool | dict[str, Any] = False,  # noqa: A002 - the name torch and timm users know
) -> ExtractedFeatures:
    """Run ``model`` on every image of ``source`` and keep ``layers`` at ``steps``.

    Args:
        model: a zoo model, or a name for [`create_model`][blt_models.create_model]; a name with a tag
            (``"blt_bl_tiny.fashion_mnist"``) loads that tag's weights. The model is put in eval
            mode and moved to ``device``.
        source: a folder of images (searched recursively, sorted by relative path), a list of
            image paths, a ``Dataset`` (items: images or ``(image, ...)`` tuples; PIL images are
            preprocessed), a ``DataLoader`` (its batches as they are), or a tensor ``[N, C, H,
            W]`` (already preprocessed). Images are preprocessed with
            ``create_transform(resolve_data_config(model))`` unless ``transform`` is given.
        layers: layer names (reference aliases accepted), one name, or ``"all"``.
        steps: clock steps to keep (negative counts from the end), a slice, or None for all
            ``0 .. timesteps-1``.
        out: None (result in memory), a ``.h5`` / ``.hdf5`` file, or a ``.zarr`` store. An
            existing output written with the same settings from the same images is resumed (or,
            if complete, read back); other settings or changed images raise
            [`OutputMismatchError`][blt_models.errors.OutputMismatchError] unless ``overwrite=True``.
        batch_size: images per forward pass (a DataLoader source keeps its own).
        device: where to run; None keeps the model's device.
        dtype: compute dtype: None keeps the model's; ``torch.bfloat16`` / ``torch.float16`` run
            under autocast (weights stay float32).
        pool: None (full maps), ``"avg"`` (global average over space), or a random projection to
            a width: an int, ``"random:WIDTH[:SEED]"`` or [`Pooling`][blt_models.extract.Pooling].
        num_workers: DataLoader workers that read and preprocess images.
        progress: show a tqdm progress bar.
        timesteps: clock length; None uses ``model.timesteps``.
        transform: preprocessing for image sources instead of the model's.
        image_ids: ids for sources without names (tensor, Dataset, DataLoader).
        overwrite: replace an existing feature store at ``out`` instead of resuming (only a
            blt-models feature store is ever replaced).
        store_dtype: dtype of the stored features; None: the compute dtype (bfloat16 is stored
            as float32 in files, which have no bfloat16 type).
        memory_format: ``"auto"`` (channels_last on CPU, where oneDNN runs convolutions
            fastest), ``"channels_last"`` or ``"contiguous"``. For channels_last the model's
            weights are converted for the run and converted back afterwards.
        stimulus: a presentation protocol (``blt_models.stimuli``) applied to every image: the
            model sees the protocol's ``[T, ...]`` sequence of the image instead of the image at
            every step (noise seeded by the image's position in the source); its ``timesteps``
            sets the clock. Recorded as ``metadata["stimulus"]``; resuming checks it.
        compile: run the clock through ``torch.compile`` (True, or a dict of its arguments, e.g.
            ``{"mode": "reduce-overhead"}`` for CUDA graphs): the first batch pays the
            compilation (minutes on a CPU), results equal eager ones to float rounding. On a
            2-core CPU at 224 px it ran 1.1-1.2x eager; it pays on long runs, or on GPUs.
        rank, world_size: split the source across ``world_size`` processes, this one being
            ``rank``. None (both): taken from an initialised ``torch.distributed`` process group
            or torchrun's ``RANK`` / ``WORLD_SIZE``, else one process. With several processes
            ``out`` must be an HDF5 file: each rank writes its rows (whole batches) to
            ``OUT.shards/rank-R-of-W.h5``, and once every shard is complete ``out`` joins them
            (HDF5 virtual datasets), equal byte for byte to a one-process run. With a process
            group every rank waits for the others and returns the joined result; without one,
            the last rank to finish writes the join and a rank that finishes earlier returns its
            own rows (``metadata["shard"]``). A result in memory (``out=None``) is never split
            unless ``rank`` / ``world_size`` are passed, which is then an error.

    Returns:
        [`ExtractedFeatures`][blt_models.ExtractedFeatures]; with ``out``, backed by the file ([`LazyFeatures`][blt_models.extract.LazyFeatures],
        read on indexing, so memory stays bounded).

    Raises:
        UnknownLayerError: a layer name the model does not have (close matches listed).
        StepOutOfRangeError: a step outside ``0 .. timesteps-1``, or not an integer.
        InvalidArgumentError: a bad ``batch_size``, ``dtype``, ``pool``, ``source``...
        UnreadableImageError: an image file that cannot be decoded (named).
        NoImagesError: a source without images.
        OutputMismatchError: an existing ``out`` written with other settings or from images that
            changed since (use ``overwrite``), or something at ``out`` that is not ours.
        OutputInUseError: another process holds the HDF5 file at ``out``.
        FeatureWriteError: writing failed (full disk...); the file keeps every complete batch.
    """
    if isinstance(model, str):
        model = _model_from_name(model)
    if not isinstance(model, ClockedModel):
        raise InvalidArgumentError(
            f"model must be a blt_models model or a name; got {type(model).__name__}"
        )
    batch_size = _check_int(batch_size, "batch_size", 1)
    num_workers = _check_int(num_workers, "num_workers", 0)
    plan = RunPlan.build(
        model,
        layers,
        steps,
        timesteps,
        pool,
        device,
        dtype,
        store_dtype,
        memory_format,
        stimulus,
        compile,
    )
    backend = backend_of(out) if out is not None else None
    if out is not None:
        check_output_location(out, f"out={os.fspath(out)!r}", InvalidArgumentError)
    if backend is not None and plan.store_dtype == torch.bfloat16:
        if store_dtype is not None:
            raise InvalidArgumentError(
                "HDF5 and zarr have no bfloat16 type: store_dtype='float16' or 'float32'"
            )
        plan.store_dtype = torch.float32

    data_config: dict[str, Any] = {}

    def make_transform() -> Any:
        if transform is not None:
            return transform
        from ..data import create_transform, resolve_data_config

        data_config["config"] = resolve_data_config(model)
        return create_transform(data_config["config"])

    src = Source(
        source, batch_size, num_workers, make_transform, image_ids,
        pin_memory=plan.device.type == "cuda", outputs=[] if out is None else [out],
    )  # fmt: skip
    if transform is not None and not src.transform_applies:
        raise InvalidArgumentError(
            f"transform= is applied to images read from files or a Dataset's PIL images; this "
            f"{src.kind} source gives tensors, which go to the model as they are (transform "
            "them before, e.g. in the Dataset): drop transform="
        )
    src.data_config = data_config.get("config")  # set only where our preprocessing runs
    # Without memory addresses (`<function <lambda> at 0x7f...>`), which differ between runs.
    src.transform_repr = (
        None if transform is None else re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))
    )
    rank, world_size, origin = resolve_ranks(rank, world_size)
    if out is None and origin == "arguments" and world_size > 1:
        raise InvalidArgumentError(
            "splitting an extraction across processes needs out= (an .h5 file the ranks write "
            "their rows to); in memory every process computes the whole result"
        )
    plan.setup_model()
    try:
        if out is not None and world_size > 1:
            assert backend is not None
            return _extract_across_ranks(
                plan, src, Path(out), backend, batch_size, overwrite, progress, rank,
                world_size, origin,
            )  # fmt: skip
        return _extract(plan, src, out, backend, batch_size, overwrite, progress)
    finally:
        plan.restore_model()


def _extract_across_ranks(
    plan: RunPlan, src: Source, out: Path, backend: str, batch_size: int, overwrite: bool,
    progress: bool, rank: int, world_size: int, origin: str,
) -> ExtractedFeatures:  # fmt: skip
    """This rank's rows into its shard, then the join (see ``shards``).

    Under torchrun without a process group of the caller's, a gloo group is made for the run
    (and destroyed after), so that every rank waits for the join and returns all rows; its
    timeout is long, since resumed ranks can have very different amounts left to do.
    """
    import datetime

    import torch.distributed as dist

    own_group = origin == "torchrun" and "MASTER_ADDR" in os.environ and dist.is_available()
    if own_group:
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    try:
        return _extract_ranks(
            plan, src, out, backend, batch_size, overwrite, progress, rank, world_size
        )
    finally:
        if own_group:
            dist.destroy_process_group()


def _extract_ranks(
    plan: RunPlan, src: Source, out: Path, backend: str, batch_size: int, overwrite: bool,
    progress: bool, rank: int, world_size: int,
) -> ExtractedFeatures:  # fmt: skip
    import torch.distributed as dist

    if backend != "h5":
        raise InvalidArgumentError(
            f"extraction across {world_size} processes writes HDF5 shards joined by a virtual "
            f"dataset: use an out= ending in .h5 (got {str(out)!r})"
        )
    if src.n is None or src.loader is not None:
        src.restrict(0, 0)  # raises: the source cannot be divided up in advance
    assert src.n is not None
    plan.probe(src.sample())
    metadata = plan.metadata(src, batch_size)
    ranges = split_rows(src.n, batch_size, world_size)
    start, stop = ranges[rank]
    mine = shard_path(out, rank, world_size)
    group = dist.is_available() and dist.is_initialized()
    result, failure = None, None
    try:
        if overwrite:
            # Every overwriting rank removes an earlier join (only ever one of ours:
            # inspect_output refuses the rest); the shards are each rank's own to replace.
            try:
                if inspect_output(out, "h5") != "absent":
                    remove_store(out)
            except FileNotFoundError:
                pass  # another rank removed it first
        else:
            _check_existing_join(out, metadata, world_size)
            check_split(out, metadata, world_size, ranges)
        if stop > start:
            shard = {"rank": rank, "world_size": world_size, "rows": [start, stop], "of": out.name}
            result = _extract(
                plan, src.restrict(start, stop), mine, "h5", batch_size, overwrite,
                progress and rank == 0, shard=shard,
            )  # fmt: skip
        if not group:  # the last rank to finish joins, checking the other ranks' images
            join_if_complete(
                out, metadata, world_size, ranges, _row_check(src, out, world_size), overwrite
            )
    except Exception as err:
        if not group:
            raise
        failure = err
    if group:  # every rank learns whether every shard is done (no rank waits forever)
        _raise_if_any_failed(failure, rank, world_size)
        if rank == 0:
            try:
                why = join_if_complete(out, metadata, world_size, ranges)
                if why is not None:  # every rank has passed the gather: its shard is done
                    raise ExtractionError(f"joining the shards of {str(out)!r} failed: {why}")
            except Exception as err:
                failure = err
        _raise_if_any_failed(failure, rank, world_size)
    if out.exists():
        return load_features(out, lazy=True)
    if result is not None:
        return result
    empty = MemoryStore(0, plan.shapes, plan.store_dtype)
    return ExtractedFeatures(
        features=empty.features(), steps=torch.tensor(plan.steps, dtype=torch.long),
        first_step=dict(plan.first_step), image_ids=[],
        metadata=dict(metadata, shard={"rank": rank, "world_size": world_size, "rows": [0, 0]}),
    )  # fmt: skip


def _extract(
    plan: RunPlan, src: Source, out: str | os.PathLike[str] | None, backend: str | None,
    batch_size: int, overwrite: bool, progress: bool, shard: dict[str, Any] | None = None,
) -> ExtractedFeatures:  # fmt: skip
    if shard is None:  # a shard keeps the probe of the whole source (its first image)
        plan.probe(src.sample())
    metadata = plan.metadata(src, batch_size)
    if shard is not None:
        metadata["shard"] = shard

    if out is None:
        mem = MemoryStore(src.n, plan.shapes, plan.store_dtype, plan.writes_channels_last)
        run(plan, src.batches(0), mem, 0, src.n, progress)
        if not mem.ids:
            raise NoImagesError("the source yielded no images")
        metadata["n_done"], metadata["complete"] = len(mem.ids), True
        return ExtractedFeatures(
            features=mem.features(),
            steps=torch.tensor(plan.steps, dtype=torch.long),
            first_step=dict(plan.first_step),
            image_ids=mem.ids,
            metadata=metadata,
        )

    path = Path(out)
    assert backend is not None
    store = FileStore(path, backend)
    start, stored = _prepare_file(store, metadata, plan, src, batch_size, overwrite)
    check = None
    checked = 0  # rows of the file the source has given again (and that matched)
    if stored is not None and not src.cheap_fingerprints:
        ids_written, fps_written = stored

        def check(row: int, ids: list[str], fps: list[str]) -> None:
            nonlocal checked
            if row + len(ids) > len(fps_written):
                raise OutputMismatchError(
                    f"{str(path)!r} is complete with {len(fps_written)} images, and this source "
                    "gives more; pass overwrite=True (CLI: --overwrite) to extract them all again"
                )
            check_fingerprints(path, ids, fps_written[row : row + len(ids)], fps, row)
            checked = row + len(ids)

        def refuse_shorter(written: int = len(fps_written)) -> None:
            if checked < written:
                raise OutputMismatchError(
                    f"{str(path)!r} holds {written} images, but this source gives only "
                    f"{checked}: it is not the source the file was written from; pass "
                    "overwrite=True (CLI: --overwrite) to extract it again"
                )

    if start is None:  # complete: reuse once the images are known to be the same
        if check is not None:
            for _ in src.batches(2**62, check=check):  # reads and checks every row
                pass
            refuse_shorter()
        if progress:
            print(f"{path}: already complete ({metadata['n_images']} images)")
        return load_features(path, lazy=True)
    # Start the source (DataLoader workers fork here) while the file is closed, so that no
    # worker inherits an open HDF5 handle (and its lock), then reopen it for writing.
    batches = src.batches(start, check=check)
    head = next(batches, None)
    if check is not None and head is None:  # the source ended within the rows already written
        refuse_shorter(start)
    stream = itertools.chain([head] if head is not None else [], batches)
    try:
        store.open()
        store.start_writing(plan.shapes, batch_size, plan.store_dtype, src.n)
        run(plan, stream, store, start, src.n, progress, offset=src.offset)
        store.finish()
    finally:
        store.close()
        batches.close()  # shuts DataLoader workers down now, also after an error
    return load_features(path, lazy=True)


def _prepare_file(
    store: FileStore, metadata: dict[str, Any], plan: RunPlan, src: Source, batch_size: int,
    overwrite: bool,
) -> tuple[int | None, tuple[list[str], list[str]] | None]:  # fmt: skip
    """Create the store, or check an existing one. Returns where to resume (None: complete)
    and, for an existing store, the ids and fingerprints already written."""
    import numpy as np

    path = store.path
    state = inspect_output(path, store.backend)
    if state != "absent" and overwrite:
        remove_store(path, with_shards=True)
        state = "absent"
    if state == "broken":
        raise OutputMismatchError(
            f"{str(path)!r} is a truncated or corrupt blt-models feature file (a copy cut short, "
            "or a disk that failed while it was written); pass overwrite=True (CLI: --overwrite) "
            "to extract it again"
        )
    if state == "absent":
        np_dtype = np.dtype(str(plan.store_dtype).replace("torch.", ""))
        store.create(metadata, plan.shapes, src.n, batch_size, np_dtype)
        return 0, None
    store.open()
    try:
        existing = store.state()  # a store that contradicts itself is refused by name
        old = existing.metadata
        differ = differing(old, metadata, RESUME_KEYS)
        if differ:
            raise OutputMismatchError(
                f"{str(path)!r} holds features written with other settings "
                f"({differ}); pass overwrite=True (CLI: --overwrite) to "
                "replace it, or choose another output"
            )
        n_done = existing.n_done
        ids, fps = store.written(existing)
        # Default ids are the positions: a file written with image_ids= is not this source.
        expected = src.ids[:n_done] if src.ids is not None else [str(i) for i in range(n_done)]
        if ids != expected:
            raise OutputMismatchError(
                f"{str(path)!r}: the images already written are not the first {n_done} images "
                "of this source; pass overwrite=True (CLI: --overwrite) to start again"
            )
        if src.cheap_fingerprints:
            check_fingerprints(path, ids, fps, src.fingerprints(0, n_done))
        return (None if existing.complete else n_done), (ids, fps)
    finally:
        store.close()


def _row_check(src: Source, out: Path, world_size: int) -> Any:
    """For a join without a process group: other ranks checked their images when they ran,
    which may be before some changed (or were given another source). Check them again: files
    and tensors by their fingerprints, a Dataset's images by reading them once more (decoding
    only, the model does not run), as a one-process resume does."""
    if not src.cheap_fingerprints and src.dataset is None:
        return None

    def check(rank: int, row: int, ids: list[str], fps: list[str]) -> None:
        shard = str(shard_path(out, rank, world_size))
        fix = (
            f"run rank {rank} again with overwrite=True (CLI: --overwrite) to extract its images "
            "again, or restore the images"
        )
        now = src.ids_for(row, len(ids))
        for i, (old, new) in enumerate(zip(ids, now, strict=True)):
            if old != new:
                raise OutputMismatchError(
                    f"the shard {shard!r} (rank {rank}) holds image {old!r} at row {row + i}, "
                    f"where this run's source has {new!r} (other images, or another order); "
                    f"{fix}"
                )
        if src.cheap_fingerprints:
            current = src.fingerprints(row, row + len(ids))
        else:  # the rows as a run reads them (DataLoader, workers), fingerprinted the same way
            current = [
                fp for _, _, fps in src.restrict(row, row + len(ids)).batches(0) for fp in fps
            ]
        for i, (old, new) in enumerate(zip(fps, current, strict=True)):
            if not same_image(old, new):
                raise OutputMismatchError(
                    f"image {ids[i]!r} (row {row + i}) changed since rank {rank} wrote its "
                    f"features to {shard!r}; {fix}"
                )

    return check


def _raise_if_any_failed(failure: BaseException | None, rank: int, world_size: int) -> None:
    """With a process group: raise on every rank if any rank failed (its own error on the
    failing rank, a summary elsewhere), so that no rank waits for one that is gone."""
    import torch.distributed as dist

    messages: list[Any] = [None] * world_size
    dist.all_gather_object(
        messages, None if failure is None else f"{type(failure).__name__}: {failure}"
    )
    if failure is not None:
        raise failure
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        r, message = failed[0]
        raise ExtractionError(f"extraction failed on rank {r} of {world_size}: {message}")


def _check_existing_join(out: Path, metadata: dict[str, Any], world_size: int) -> None:
    """Before a run across processes: refuse what is at ``out`` unless it is a join of the same
    settings and number of processes (which the run then completes or rewrites)."""
    state = inspect_output(out, "h5")
    if state == "absent":
        return
    fix = "pass overwrite=True (CLI: --overwrite) to replace it, or choose another output"
    if state == "broken":
        raise OutputMismatchError(f"{str(out)!r} is a truncated or corrupt feature file; {fix}")
    old = read_metadata(out, "h5")
    differ = differing(old, metadata, RESUME_KEYS)
    if differ:
        raise OutputMismatchError(
            f"{str(out)!r} holds features written with other settings ({differ}); {fix}"
        )
    written = (old.get("shards") or {}).get("world_size")
    if written is None:
        raise OutputMismatchError(
            f"{str(out)!r} holds this extraction written by one process; read it with "
            f"load_features, or {fix}"
        )
    if written != world_size:
        raise OutputMismatchError(
            f"{str(out)!r} was written by {written} processes, and this run has {world_size}: "
            f"run with {written} processes to resume it, or {fix}"
        )
