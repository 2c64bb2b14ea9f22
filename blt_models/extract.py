"""Per-layer, per-step feature extraction for a stimulus set, in memory or to HDF5 / zarr.

>>> feats = extract_features(model, "stimuli/", layers=["layer3", "layer5"])
>>> feats["layer5"].shape                     # [N, T, C, H, W]
>>> extract_features(model, "stimuli/", layers="all", out="feats.h5", pool="avg")
>>> feats = load_features("feats.h5")         # the same result type, read back

Everything is computed by :meth:`ClockedModel.forward_timesteps` (no hooks): a layer at a step
before it is active holds zeros, exactly as ``forward_timesteps`` documents, and the first active
step of every layer is part of the result and of the file metadata. File output is written batch
by batch (memory bounded by one batch), and a re-run on the same file resumes after the last
complete batch. The file layout is described in ``docs/extraction.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import warnings
import zlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ._clock import ClockedModel
from ._optional import require
from ._version import __version__
from .errors import (
    ExtractionError,
    InputError,
    NoImagesError,
    OutputMismatchError,
    StepOutOfRangeError,
    UnknownLayerError,
    UnreadableImageError,
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

FORMAT_NAME = "blt-models-features"
FORMAT_VERSION = 1
H5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
ZARR_SUFFIXES = (".zarr",)


# --------------------------------------------------------------------------------- errors
# --------------------------------------------------------------------------------- result
@dataclass
class ExtractedFeatures:
    """Features of ``N`` images at ``S`` steps.

    Attributes:
        features: ``{layer: Tensor [N, S, ...]}``; ``...`` is ``C, H, W`` unpooled, ``C`` with
            ``pool="avg"``, ``width`` with a random projection. Results backed by a file
            (``extract_features(..., out=...)``, ``load_features(..., lazy=True)``) hold
            :class:`LazyFeatures` instead, which read on indexing; ``.load()`` reads them all.
        steps: ``LongTensor [S]``, the clock step of each index of dimension 1.
        first_step: ``{layer: int}``, the first clock step at which the layer is active; at
            earlier steps its features are zeros (as ``forward_timesteps`` documents).
        image_ids: ``N`` strings (relative paths for a folder, the paths for a list, indices
            otherwise), in row order.
        metadata: model, preprocessing, pooling, source and library provenance (see
            ``docs/extraction.md``).
    """

    features: dict[str, Tensor]
    steps: Tensor
    first_step: dict[str, int]
    image_ids: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> Tensor:
        return self.features[layer]

    @property
    def layers(self) -> list[str]:
        return list(self.features)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def load(self) -> ExtractedFeatures:
        """A copy with every layer in memory (reads :class:`LazyFeatures` of a file)."""
        feats = {k: v if isinstance(v, Tensor) else v.load() for k, v in self.features.items()}
        return ExtractedFeatures(feats, self.steps, dict(self.first_step), list(self.image_ids),
                                 dict(self.metadata))  # fmt: skip

    def active(self, layer: str) -> Tensor:
        """``BoolTensor [S]``: True where ``layer`` is active at that step."""
        return self.steps >= self.first_step[layer]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {list(v.shape)}" for k, v in self.features.items())
        return (
            f"ExtractedFeatures(num_images={self.num_images}, steps={self.steps.tolist()}, "
            f"features={{{shapes}}})"
        )


# --------------------------------------------------------------------------------- pooling
@dataclass(frozen=True)
class Pooling:
    """How each image's features at one step are reduced before they are stored.

    ``kind``: ``"none"`` (full maps), ``"avg"`` (global average over space) or ``"random"``
    (a fixed, seeded very sparse random projection of the flattened map to ``width`` values;
    the same projection for every step and image, one per layer).
    """

    kind: str = "none"
    width: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "random":
            out.update(
                width=self.width,
                seed=self.seed,
                method="very sparse random projection (Li, Hastie & Church 2006): per output, "
                "round(sqrt(D)) input indices drawn with replacement, random signs, scale "
                "sqrt(D / (k * width)); torch.Generator seeded with "
                "(seed * 1000003 + crc32(layer)) mod 2**63",
            )
        return out


def parse_pool(pool: Any) -> Pooling:
    """A :class:`Pooling` from None, ``"none"``, ``"avg"``, an int width, ``"random:W[:seed]"``,
    a tuple ``("random", W[, seed])``, a dict or a :class:`Pooling`."""
    if isinstance(pool, Pooling):
        spec = pool
    elif pool is None or pool == "none":
        spec = Pooling("none")
    elif isinstance(pool, str) and pool in ("avg", "mean", "gap"):
        spec = Pooling("avg")
    elif isinstance(pool, int) and not isinstance(pool, bool):
        spec = Pooling("random", pool)
    elif isinstance(pool, str) and pool.split(":")[0] in ("random", "rp"):
        parts = pool.split(":")
        try:
            width = int(parts[1])
            seed = int(parts[2]) if len(parts) > 2 else 0
        except (IndexError, ValueError):
            raise ValueError(
                f"pool {pool!r}: expected 'random:WIDTH' or 'random:WIDTH:SEED'"
            ) from None
        spec = Pooling("random", width, seed)
    elif isinstance(pool, (tuple, list)) and pool and pool[0] in ("random", "rp"):
        spec = Pooling("random", int(pool[1]), int(pool[2]) if len(pool) > 2 else 0)
    elif isinstance(pool, dict):
        spec = Pooling(**pool)
    else:
        raise ValueError(
            f"pool must be None, 'avg', an int width or 'random:WIDTH[:SEED]'; got {pool!r}"
        )
    if spec.kind not in ("none", "avg", "random"):
        raise ValueError(f"pool kind must be 'none', 'avg' or 'random'; got {spec.kind!r}")
    if spec.kind == "random" and (spec.width is None or spec.width < 1):
        raise ValueError(f"a random projection needs a positive width; got {spec.width!r}")
    return spec


class _Pooler:
    """Applies a :class:`Pooling` to ``[S, B, ...]`` features of one layer."""

    def __init__(self, spec: Pooling) -> None:
        self.spec = spec
        self._proj: dict[str, Tensor] = {}

    def projection(self, layer: str, dim: int, device: torch.device) -> Tensor:
        """The ``[width, D]`` sparse CSR matrix of ``layer`` (deterministic in seed and layer)."""
        key = f"{layer}@{device}"
        if key not in self._proj:
            width = int(self.spec.width)  # type: ignore[arg-type]
            k = max(1, round(math.sqrt(dim)))
            gen = torch.Generator().manual_seed(
                (self.spec.seed * 1_000_003 + zlib.crc32(layer.encode())) % 2**63
            )
            cols = torch.randint(0, dim, (width, k), generator=gen)
            signs = torch.randint(0, 2, (width, k), generator=gen).float() * 2 - 1
            values = signs * math.sqrt(dim / (k * width))
            rows = torch.arange(width).repeat_interleave(k)
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                coo = torch.sparse_coo_tensor(
                    torch.stack([rows, cols.reshape(-1)]),
                    values.reshape(-1),
                    (width, dim),
                    check_invariants=True,
                ).coalesce()  # repeated indices are summed
                self._proj[key] = coo.to_sparse_csr().to(device)
        return self._proj[key]

    def __call__(self, layer: str, x: Tensor) -> Tensor:
        kind = self.spec.kind
        if kind == "none":
            return x
        if kind == "avg":
            return x.mean(dim=(-2, -1)) if x.ndim == 5 else x
        s, b = x.shape[:2]
        flat = x.reshape(s * b, -1)
        proj = self.projection(layer, flat.shape[1], flat.device)
        out = torch.sparse.mm(proj, flat.float().t()).t()
        return out.reshape(s, b, -1).to(x.dtype)


# --------------------------------------------------------------------------------- sources
def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files skipped), sorted by relative path.

    Raises:
        NoImagesError: if there are none.
    """
    from PIL import Image

    root = Path(folder)
    if not root.is_dir():
        raise NoImagesError(f"{str(root)!r} is not a folder")
    exts = {e.lower() for e in Image.registered_extensions()}
    files: list[Path] = []
    others: list[Path] = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        (files if path.suffix.lower() in exts else others).append(path)
    if not files:
        seen = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else ""
        raise NoImagesError(
            f"no image files in {str(root)!r} (searched recursively for .png, .jpg, .jpeg, "
            f".bmp, .tif, .webp and other PIL formats){seen}"
        )
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str | Path], transform: Any) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img.load()
                return self.transform(img)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise UnreadableImageError(f"cannot read image {path!r}: {err}") from None


def _first_of(item: Any) -> Any:
    if isinstance(item, dict):
        for key in ("image", "images", "img", "pixel_values", "x"):
            if key in item:
                return item[key]
        raise ExtractionError(f"dataset items are dicts without an 'image' key: {sorted(item)}")
    if isinstance(item, (tuple, list)):
        return item[0]
    return item


class _DatasetImages(torch.utils.data.Dataset):
    """Images of a user Dataset: the first element of tuple items, transformed if not tensors."""

    def __init__(self, dataset: Any, transform: Any) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        img = _first_of(self.dataset[index])
        if isinstance(img, np.ndarray):
            img = torch.from_numpy(img)
        if not isinstance(img, Tensor):
            img = self.transform(img)
        return img


class _Source:
    """A stimulus source as batches of model-ready tensors with their image ids."""

    def __init__(
        self,
        source: Any,
        model: ClockedModel,
        batch_size: int,
        num_workers: int,
        transform: Any,
        image_ids: Sequence[str] | None,
        pin_memory: bool,
    ) -> None:
        from torch.utils.data import DataLoader, Dataset, IterableDataset

        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_config: dict[str, Any] | None = None
        self.loader: Any = None
        self.dataset: Any = None
        self.tensor: Tensor | None = None
        self.ids: list[str] | None = None
        self.n: int | None = None

        def make_transform() -> Any:
            if transform is not None:
                return transform
            from .data import create_transform, resolve_data_config

            self.data_config = resolve_data_config(model)
            return create_transform(self.data_config)

        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            root = Path(source)
            paths = list_images(root)
            self.info: dict[str, Any]
            self.kind, self.info = "folder", {"path": str(root.resolve())}
            self.ids = [p.relative_to(root).as_posix() for p in paths]
            self.dataset = _ImageFiles(paths, make_transform())
        elif isinstance(source, (str, os.PathLike)):
            raise NoImagesError(
                f"source {str(source)!r} is not a folder (pass a folder, a list of image paths, "
                "a Dataset, a DataLoader or a tensor)"
                + ("" if Path(source).exists() else "; it does not exist")
            )
        elif isinstance(source, (list, tuple)) and all(
            isinstance(p, (str, os.PathLike)) for p in source
        ):
            if not source:
                raise NoImagesError("the list of image paths is empty")
            missing = [str(p) for p in source if not Path(p).is_file()]
            if missing:
                raise UnreadableImageError(
                    f"{len(missing)} image file(s) do not exist, e.g. {missing[0]!r}"
                )
            self.kind, self.info = "paths", {}
            self.ids = [str(p) for p in source]
            self.dataset = _ImageFiles(list(source), make_transform())
        elif isinstance(source, (Tensor, np.ndarray)):
            tensor = torch.as_tensor(source)
            if tensor.ndim == 3:
                tensor = tensor.unsqueeze(0)
            if len(tensor) == 0:
                raise NoImagesError("the image tensor is empty")
            self.kind, self.info = (
                "tensor",
                {"shape": list(tensor.shape), "dtype": str(tensor.dtype)},
            )
            self.tensor = tensor
            self.n = len(tensor)
        elif isinstance(source, DataLoader):
            self.kind, self.info = "dataloader", {"batch_size": source.batch_size}
            self.loader = source
            try:
                self.n = len(source.dataset)  # type: ignore[arg-type]
            except TypeError:
                self.n = None
        elif isinstance(source, IterableDataset):
            self.kind, self.info = "dataloader", {"iterable_dataset": type(source).__name__}
            self.loader = DataLoader(
                source, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory
            )
        elif isinstance(source, Dataset) or (
            hasattr(source, "__getitem__") and hasattr(source, "__len__")
        ):
            if len(source) == 0:
                raise NoImagesError(f"the dataset {type(source).__name__} is empty")
            self.kind, self.info = "dataset", {"class": type(source).__name__}
            samples = getattr(source, "samples", None) or getattr(source, "imgs", None)
            if isinstance(samples, list) and len(samples) == len(source):
                self.ids = [str(s[0] if isinstance(s, (tuple, list)) else s) for s in samples]
            self.dataset = _DatasetImages(source, make_transform())
        else:
            raise ExtractionError(
                f"cannot read images from a {type(source).__name__}: pass a folder, a list of "
                "image paths, a Dataset, a DataLoader or a tensor [N, C, H, W]"
            )
        if self.dataset is not None:
            self.n = len(self.dataset)
        if self.ids is None and image_ids is not None:
            self.ids = [str(i) for i in image_ids]
        if self.ids is not None and self.n is not None and len(self.ids) != self.n:
            raise ExtractionError(f"{len(self.ids)} image ids for {self.n} images")

    def batches(self, start: int) -> Generator[tuple[Tensor, list[str]], None, None]:
        """Batches from image ``start`` on, with their ids."""
        from torch.utils.data import DataLoader, Subset

        def ids_for(i: int, b: int) -> list[str]:
            return (
                self.ids[i : i + b] if self.ids is not None else [str(j) for j in range(i, i + b)]
            )

        if self.tensor is not None:
            for i in range(start, len(self.tensor), self.batch_size):
                x = self.tensor[i : i + self.batch_size]
                yield x, ids_for(i, len(x))
            return
        if self.dataset is not None:
            loader = DataLoader(
                Subset(self.dataset, range(start, len(self.dataset))),
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
            i = start
            for x in loader:
                yield x, ids_for(i, len(x))
                i += len(x)
            return
        i = 0
        for batch in self.loader:
            x = _first_of(batch)
            if not isinstance(x, Tensor):
                x = torch.as_tensor(np.asarray(x))
            b = len(x)
            if i + b <= start:  # already written: skip without running the model
                i += b
                continue
            skip = max(0, start - i)
            yield x[skip:], ids_for(i + skip, b - skip)
            i += b


# --------------------------------------------------------------------------------- writers
def _json(value: Any) -> Any:
    """JSON-compatible copy (tuples to lists, unknown objects to str)."""
    return json.loads(json.dumps(value, default=str))


class _MemoryWriter:
    """Collects batches into tensors preallocated at the first batch (one copy per value)."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.arrays: dict[str, Tensor] = {}
        self.parts: dict[str, list[Tensor]] = {}
        self.ids: list[str] = []

    def write(self, start: int, feats: dict[str, Tensor], ids: list[str]) -> None:
        for name, value in feats.items():
            if self.n is None:  # unknown length (an iterable dataset): concatenate at the end
                self.parts.setdefault(name, []).append(value.contiguous())
                continue
            if name not in self.arrays:
                self.arrays[name] = torch.empty((self.n, *value.shape[1:]), dtype=value.dtype)
            self.arrays[name][start : start + len(value)].copy_(value)
        self.ids += ids

    def result(self, names: list[str]) -> dict[str, Tensor]:
        if self.n is None:
            return {name: torch.cat(self.parts[name]) for name in names}
        return {name: self.arrays[name][: len(self.ids)] for name in names}


class _FileWriter:
    """One HDF5 file or zarr store: ``features/<layer>`` arrays ``[N, S, ...]``, ``image_ids``,
    ``steps``, and attributes ``metadata`` (JSON), ``n_done``, ``complete``."""

    def __init__(self, path: Path, backend: str, overwrite: bool) -> None:
        self.path, self.backend = path, backend
        if overwrite and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if backend == "h5":
            h5py = require("h5py", f"writing features to HDF5 ({path.name})")

            path.parent.mkdir(parents=True, exist_ok=True)
            # A small chunk cache: batches write whole chunks, and a big cache would grow RSS.
            self.root = h5py.File(path, "a", rdcc_nbytes=8 << 20, rdcc_w0=1.0)
        else:
            zarr = require("zarr", f"writing features to a zarr store ({path.name})")

            self.root = zarr.open_group(str(path), mode="a")
        self.arrays: dict[str, Any] = {}

    # -- attributes
    def get_attrs(self) -> dict[str, Any] | None:
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
        for key, value in values.items():
            if key == "metadata" and self.backend == "h5":
                value = json.dumps(value)
            elif isinstance(value, (np.integer, np.bool_)):
                value = value.item()
            self.root.attrs[key] = value

    # -- arrays
    def create(
        self, name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]
    ) -> None:
        if self.backend == "h5":
            h5py = require("h5py", "writing features to HDF5")

            if dtype is str:
                dtype, fill = h5py.string_dtype(), None
            else:
                fill = None
            self.arrays[name] = self.root.create_dataset(
                name, shape=shape, maxshape=(None, *shape[1:]), dtype=dtype, chunks=chunks,
                fillvalue=fill,
            )  # fmt: skip
        else:
            self.arrays[name] = self.root.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=None if dtype is not str else "",
            )

    def open(self, name: str) -> Any:
        self.arrays[name] = self.root[name]
        return self.arrays[name]

    def exists(self, name: str) -> bool:
        return name in self.root

    def resize(self, name: str, n: int) -> None:
        arr = self.arrays[name]
        arr.resize((n, *arr.shape[1:]))

    def write_rows(self, name: str, start: int, value: np.ndarray) -> None:
        arr = self.arrays[name] if name in self.arrays else self.open(name)
        stop = start + len(value)
        if arr.shape[0] < stop:
            arr.resize((stop, *arr.shape[1:]))
        arr[start:stop] = value

    def write_ids(self, start: int, ids: list[str]) -> None:
        kind = object if self.backend == "h5" else str
        self.write_rows("image_ids", start, np.asarray(ids, dtype=kind))

    def flush(self) -> None:
        if self.backend == "h5":
            self.root.flush()

    def close(self) -> None:
        if self.backend == "h5":
            self.root.close()


def _backend_of(out: str | os.PathLike[str]) -> str:
    path = Path(out)
    if path.suffix.lower() in H5_SUFFIXES:
        return "h5"
    if path.suffix.lower() in ZARR_SUFFIXES or (path.is_dir() and (path / "zarr.json").exists()):
        return "zarr"
    raise ExtractionError(
        f"cannot tell the output format of {str(out)!r}: use a name ending in .h5 / .hdf5 "
        "(HDF5) or .zarr (zarr store)"
    )


def _rows_per_chunk(bytes_per_image: int, batch_size: int, target: int) -> int:
    """The largest divisor of ``batch_size`` whose chunk stays within ``target`` bytes (>= 1),
    so that every batch writes whole chunks."""
    best = 1
    for d in range(1, batch_size + 1):
        if batch_size % d == 0 and d * bytes_per_image <= target:
            best = d
    return best


# --------------------------------------------------------------------------------- helpers
def _resolve_layers(model: ClockedModel, layers: Any) -> list[str]:
    if layers is None or layers == "all":
        return list(model.layer_names)
    requested = [layers] if isinstance(layers, str) else list(layers)
    if not requested:
        raise UnknownLayerError("no layers requested (pass layer names or 'all')")
    out = []
    for name in requested:
        try:
            canonical = model.resolve_layer(name)
        except KeyError as err:
            msg = err.args[0] if err.args else str(err)
            raise UnknownLayerError(msg) from None
        if canonical not in out:
            out.append(canonical)
    return out


def _resolve_steps(steps: Any, timesteps: int) -> list[int]:
    if steps is None or steps == "all":
        return list(range(timesteps))
    if isinstance(steps, int) and not isinstance(steps, bool):
        steps = [steps]
    elif isinstance(steps, slice):
        return list(range(timesteps))[steps]
    out = []
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise StepOutOfRangeError(f"steps must be integers; got {s!r}")
        t = int(s) + timesteps if s < 0 else int(s)
        if not 0 <= t < timesteps:
            raise StepOutOfRangeError(
                f"step {int(s)} is outside the clock: the model runs {timesteps} steps "
                f"(0 .. {timesteps - 1}; negative steps count from the end). Pass timesteps= (CLI: --timesteps) "
                "to run a longer clock."
            )
        if t not in out:
            out.append(t)
    if not out:
        raise StepOutOfRangeError("no steps requested")
    return sorted(out)


def _model_name(model: ClockedModel) -> str:
    cfg = model.pretrained_cfg
    return getattr(cfg, "name", "") or getattr(cfg, "architecture", "") or type(model).__name__


def _model_config(model: ClockedModel) -> dict[str, Any]:
    """The model's simple public attributes (its constructor arguments, in practice)."""
    simple = (int, float, str, bool, type(None))
    out: dict[str, Any] = {}
    for key, value in sorted(vars(model).items()):
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, simple) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, simple) for v in value)
        ):
            out[key] = value
    return out


def _weights_sha256(model: ClockedModel) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
    return h.hexdigest()


_RESUME_KEYS = (
    "model", "weights_sha256", "timesteps", "steps", "layers", "pool", "dtype", "data_config",
    "source", "n_images", "feature_shapes", "stimulus",
)  # fmt: skip


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [k for k in _RESUME_KEYS if _json(old.get(k)) != _json(new.get(k))]


# --------------------------------------------------------------------------------- main
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
    stimulus: Any = None,
) -> ExtractedFeatures:
    """Run ``model`` on every image of ``source`` and keep ``layers`` at ``steps``.

    Args:
        model: a zoo model, or a name for :func:`create_model`. It is put in eval mode and moved
            to ``device`` / ``dtype``.
        source: a folder of images (searched recursively, sorted by relative path), a list of
            image paths, a ``Dataset`` (items: images or ``(image, ...)`` tuples; PIL images are
            preprocessed), a ``DataLoader`` (its batches as they are), or a tensor ``[N, C, H,
            W]`` (already preprocessed). Images are preprocessed with
            ``create_transform(resolve_data_config(model))`` unless ``transform`` is given.
        layers: layer names (reference aliases accepted), one name, or ``"all"``.
        steps: clock steps to keep (negative counts from the end), a slice, or None for all
            ``0 .. timesteps-1``.
        out: None (result in memory), a ``.h5`` / ``.hdf5`` file, or a ``.zarr`` store. An
            existing output written with the same settings is resumed (or, if complete, just
            read back); one with other settings raises :class:`OutputMismatchError` unless
            ``overwrite=True``.
        batch_size: images per forward pass (a DataLoader source keeps its own).
        device: where to run; None keeps the model's device.
        dtype: compute and storage dtype (``torch.float16``, ``"bfloat16"``...); None keeps the
            model's. bfloat16 is stored as float32 in files.
        pool: None (full maps), ``"avg"`` (global average over space), or a random projection to
            a width: an int, ``"random:WIDTH[:SEED]"`` or :class:`Pooling`.
        num_workers: DataLoader workers that read and preprocess images.
        progress: show a tqdm progress bar.
        timesteps: clock length; None uses ``model.timesteps``.
        transform: preprocessing for image sources instead of the model's.
        image_ids: ids for sources without names (tensor, Dataset, DataLoader).
        overwrite: replace an existing ``out`` instead of resuming.
        stimulus: a presentation protocol (``blt_models.stimuli``) applied to every image: the
            model sees ``stimulus.apply(image)`` ``[T, ...]`` instead of the image at every step;
            its ``timesteps`` sets the clock. Recorded as ``metadata["stimulus"]``; resuming
            checks it.

    Returns:
        :class:`ExtractedFeatures`; with ``out``, backed by the file (:class:`LazyFeatures`,
        read on indexing, so memory stays bounded).

    Raises:
        UnknownLayerError: a layer name the model does not have (close matches listed).
        StepOutOfRangeError: a step outside ``0 .. timesteps-1``.
        UnreadableImageError: an image file that cannot be decoded.
        NoImagesError: a source without images.
        OutputMismatchError: an existing ``out`` written with other settings (use ``overwrite``).
    """
    if isinstance(model, str):
        from ._factory import create_model

        model = create_model(model)
    if not isinstance(model, ClockedModel):
        raise TypeError(f"model must be a blt_models model or a name; got {type(model).__name__}")
    if isinstance(dtype, str):
        dtype = cast(torch.dtype, getattr(torch, dtype))
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    canon = _resolve_layers(model, layers)
    if stimulus is not None:
        from .stimuli import check_for_model

        T = check_for_model(stimulus, model, timesteps)
    else:
        T = model._resolve_timesteps(timesteps)
    step_list = _resolve_steps(steps, T)
    pooler = _Pooler(parse_pool(pool))
    first = model.first_steps(T)
    first_step = {name: int(first[name]) for name in canon}

    param = next(iter(model.parameters()), None)
    device = (
        torch.device(device)
        if device is not None
        else (param.device if param is not None else torch.device("cpu"))
    )
    dtype = cast(torch.dtype, dtype or (param.dtype if param is not None else torch.float32))
    model.eval()
    model.to(device=device, dtype=dtype)
    store_dtype = torch.float32 if dtype == torch.bfloat16 else dtype

    backend = _backend_of(out) if out is not None else None
    src = _Source(
        source, model, batch_size, num_workers, transform, image_ids,
        pin_memory=device.type == "cuda",
    )  # fmt: skip

    metadata: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": {
            "name": _model_name(model),
            "class": type(model).__name__,
            "config": _model_config(model),
            "pretrained_cfg": model.pretrained_cfg.to_dict()
            if hasattr(model.pretrained_cfg, "to_dict")
            else None,
        },
        "weights_sha256": _weights_sha256(model),
        "timesteps": T,
        "steps": step_list,
        "layers": canon,
        "first_step": first_step,
        "inactive_steps": "zeros (blt_models.TimestepOutput convention); see first_step",
        "pool": pooler.spec.to_dict(),
        "dtype": str(store_dtype).replace("torch.", ""),
        "data_config": src.data_config,
        "source": {"kind": src.kind, **src.info},
        "n_images": src.n,
        "batch_size": batch_size,
        "library": {"blt_models": __version__, "torch": torch.__version__},
        "stimulus": None if stimulus is None else stimulus.to_dict(),
    }
    if out is None:
        mem = _MemoryWriter(src.n)
        _run(model, src, 0, mem, canon, T, step_list, pooler, device, dtype, store_dtype,
             progress, src.n, stimulus=stimulus)  # fmt: skip
        if not mem.ids:
            raise NoImagesError("the source yielded no images")
        features = mem.result(canon)
        _add_shapes(metadata, {k: tuple(v.shape[1:]) for k, v in features.items()}, pooler.spec)
        metadata = _json(metadata)
        metadata["n_done"], metadata["complete"] = len(mem.ids), True
        return ExtractedFeatures(
            features=features,
            steps=torch.tensor(step_list, dtype=torch.long),
            first_step=first_step,
            image_ids=mem.ids,
            metadata=metadata,
        )

    # Per-image shapes of every stored layer, from a short dry run of one blank image.
    layer_shapes = _probe_shapes(model, src, canon, T, step_list, pooler, device, dtype)
    _add_shapes(metadata, layer_shapes, pooler.spec)
    metadata = _json(metadata)
    path = Path(out)
    writer = _FileWriter(path, backend, overwrite)  # type: ignore[arg-type]
    try:
        start = _prepare_file(writer, metadata, canon, layer_shapes, store_dtype, batch_size, src)
    finally:
        writer.close()
    if start is None:
        if progress:
            print(f"{path}: already complete ({metadata['n_images']} images)")
        return load_features(path, lazy=True)
    # Start the source (DataLoader workers fork here) while the file is closed, so that no
    # worker inherits an open HDF5 handle (and its lock), then reopen it for writing.
    batches = src.batches(start)
    head = next(batches, None)
    stream = itertools.chain([head] if head is not None else [], batches)
    writer = _FileWriter(path, backend, overwrite=False)  # type: ignore[arg-type]
    try:
        _run(model, src, start, writer, canon, T, step_list, pooler, device, dtype,
             store_dtype, progress, src.n, batches=stream, stimulus=stimulus)  # fmt: skip
        writer.set_attrs(complete=True)
        writer.flush()
    finally:
        writer.close()
        batches.close()  # shuts DataLoader workers down now, also after an error
    return load_features(path, lazy=True)


def _add_shapes(
    metadata: dict[str, Any], shapes: dict[str, tuple[int, ...]], spec: Pooling
) -> None:
    metadata["feature_shapes"] = {k: list(v) for k, v in shapes.items()}
    metadata["dims"] = {k: _dims(v, spec) for k, v in shapes.items()}


def _probe_shapes(
    model: ClockedModel, src: _Source, canon: list[str], T: int, step_list: list[int],
    pooler: _Pooler, device: torch.device, dtype: torch.dtype,
) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Per-image feature shapes ``[S, ...]`` of every layer, from one blank image of the
    source's size (the source's first image is decoded once for its size)."""
    if src.tensor is not None:
        sample = src.tensor[:1]
    elif src.dataset is not None:
        sample = src.dataset[0].unsqueeze(0)
    else:
        sample = None
    if sample is None:  # a DataLoader: one image of its first batch
        first = next(iter(src.loader), None)
        if first is None:
            raise NoImagesError("the DataLoader yields no batches")
        sample = torch.as_tensor(_first_of(first))[:1]
    x = torch.zeros_like(sample, device=device, dtype=dtype)
    # Shapes do not depend on the clock length: run only until every layer is active.
    first = model.first_steps(T)
    short = max(model.min_timesteps, max(first[n] for n in canon) + 1)
    t_probe = model._resolve_timesteps(short) if short < T else T
    with torch.inference_mode():
        res = model.forward_timesteps(x, timesteps=t_probe, layers=canon)
        shapes = {}
        for name in canon:
            one = pooler(name, res.features[name][-1:])  # [1, 1, ...] after pooling
            shapes[name] = (len(step_list), *one.shape[2:])
        return shapes


def _select(pooler: _Pooler, name: str, f: Tensor, step_list: list[int], T: int) -> Tensor:
    """``[T, B, ...]`` clock features -> ``[B, S, ...]`` stored features."""
    if len(step_list) != T:
        f = f[torch.tensor(step_list, device=f.device)]
    return pooler(name, f).transpose(0, 1)


def _prepare_file(
    writer: _FileWriter, metadata: dict[str, Any], canon: list[str],
    layer_shapes: dict[str, tuple[int, ...]], store_dtype: torch.dtype, batch_size: int,
    src: _Source,
) -> int | None:  # fmt: skip
    """Create the arrays, or check an existing file and return where to resume (None: done)."""
    np_dtype = np.dtype(str(store_dtype).replace("torch.", ""))
    existing = writer.get_attrs()
    if existing is not None:
        old = existing["metadata"]
        differ = _diff(old, metadata)
        if differ:
            raise OutputMismatchError(
                f"{str(writer.path)!r} holds features written with other settings "
                f"({', '.join(differ)} differ); pass overwrite=True (CLI: --overwrite) to replace "
                "it, or choose another output"
            )
        n_done = existing["n_done"]
        if existing["complete"]:
            return None
        for name in canon:
            writer.open(f"features/{name}")
            writer.resize(f"features/{name}", n_done)
        writer.open("image_ids")
        writer.resize("image_ids", n_done)
        if src.ids is not None:
            written = [_to_str(s) for s in writer.arrays["image_ids"][:n_done]]
            if written != src.ids[:n_done]:
                raise OutputMismatchError(
                    f"{str(writer.path)!r}: the images already written are not the first "
                    f"{n_done} images of this source; pass overwrite=True to start again"
                )
        return n_done
    if len(list(writer.root.keys())):
        raise OutputMismatchError(
            f"{str(writer.path)!r} exists and is not a blt-models feature file; choose another "
            "output or pass overwrite=True to replace it"
        )
    target = (4 << 20) if writer.backend == "h5" else (16 << 20)
    for name in canon:
        shape = layer_shapes[name]
        per_image = int(np.prod(shape)) * np_dtype.itemsize
        rows = _rows_per_chunk(per_image, batch_size, target)
        writer.create(f"features/{name}", (0, *shape), np_dtype, (rows, *shape))
    writer.create("image_ids", (0,), str, (4096,))
    if writer.backend == "h5":
        writer.root.create_dataset("steps", data=np.asarray(metadata["steps"], dtype=np.int64))
    else:
        writer.root.create_array("steps", data=np.asarray(metadata["steps"], dtype=np.int64))
    for name in canon:
        writer.arrays[f"features/{name}"].attrs["first_step"] = metadata["first_step"][name]
    writer.set_attrs(metadata=metadata, n_done=0, complete=False)
    writer.flush()
    return 0


def _to_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _run(
    model: ClockedModel, src: _Source, start: int, writer: Any, canon: list[str], T: int,
    step_list: list[int], pooler: _Pooler, device: torch.device, dtype: torch.dtype,
    store_dtype: torch.dtype, progress: bool, total: int | None, batches: Any = None,
    stimulus: Any = None,
) -> None:  # fmt: skip
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, initial=start, disable=not progress, unit="img",
        desc=f"extract {_model_name(model)}", dynamic_ncols=True,
    )  # fmt: skip
    n_done = start
    to_file = isinstance(writer, _FileWriter)
    batches = src.batches(start) if batches is None else batches
    try:
        with torch.inference_mode():
            for x, ids in batches:
                if not x.is_floating_point():  # do not let .to(dtype) hide unnormalised pixels
                    raise InputError(
                        f"the source gives {x.dtype} images; tensor sources must be preprocessed "
                        "floating-point images (blt_models.create_transform(model) does it for "
                        "PIL images)"
                    )
                x = x.to(device=device, dtype=dtype, non_blocking=True)
                if stimulus is not None:  # [B, ...] -> the protocol's [T, B, ...] sequence
                    from .stimuli import apply_to_batch

                    x = apply_to_batch(stimulus, x, n_done)
                res = model.forward_timesteps(x, timesteps=T, layers=canon)
                feats = {}
                for name in canon:
                    f = _select(pooler, name, res.features[name], step_list, T).to(store_dtype)
                    if f.device.type != "cpu":  # reorder on the device, then one transfer
                        f = f.contiguous().cpu()
                    feats[name] = f  # on the CPU: a [B, S, ...] view, copied once by the writer
                del res
                if to_file:
                    for name, f in feats.items():
                        key = f"features/{name}"
                        if key not in writer.arrays:
                            writer.open(key)
                        writer.write_rows(key, n_done, f.contiguous().numpy())
                    writer.write_ids(n_done, ids)
                    writer.set_attrs(n_done=n_done + len(ids))
                    writer.flush()
                else:
                    writer.write(n_done, feats, ids)
                n_done += len(ids)
                bar.update(len(ids))
    finally:
        bar.close()


# --------------------------------------------------------------------------------- reading
def _open_root(path: Path, backend: str) -> Any:
    if backend == "h5":
        h5py = require("h5py", f"reading HDF5 features ({path.name})")

        return h5py.File(path, "r")
    zarr = require("zarr", f"reading a zarr feature store ({path.name})")

    return zarr.open_group(str(path), mode="r")


class LazyFeatures:
    """One layer of a feature file, read on indexing: ``lazy[10:20]`` reads 10 images.

    Has ``shape`` ``(N, S, ...)``, ``dtype`` (torch), ``len()``; indexing returns tensors; the
    first index may be an int, a slice or a list of ints. ``load()`` reads the whole array.
    The file is opened for each read, so nothing stays open between reads.
    """

    def __init__(
        self, path: Path, backend: str, key: str, n: int, shape: tuple[int, ...], dtype: Any
    ) -> None:
        self.path, self.backend, self.key, self.n = path, backend, key, n
        self.shape = (n, *shape)
        self.dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Tensor:
        index = index if isinstance(index, tuple) else (index,)
        first, rest = index[0], index[1:]
        root = _open_root(self.path, self.backend)
        try:
            arr = root[self.key]
            if isinstance(first, slice):
                start, stop, step = first.indices(self.n)
                if step > 0:
                    data = np.asarray(arr[(slice(start, stop, step), *rest)])
                else:
                    rows = list(range(start, stop, step))
                    data = np.stack([np.asarray(arr[(r, *rest)]) for r in rows]) if rows else \
                        np.asarray(arr[(slice(0, 0), *rest)])  # fmt: skip
            elif isinstance(first, (int, np.integer)):
                i = int(first) + self.n if first < 0 else int(first)
                if not 0 <= i < self.n:
                    raise IndexError(f"index {int(first)} is out of range for {self.n} images")
                data = np.asarray(arr[(i, *rest)])
            elif first is Ellipsis:
                data = np.asarray(arr[(slice(0, self.n), *rest)]) if not rest else \
                    np.asarray(arr[:self.n])[index]  # fmt: skip
            else:
                rows = [int(r) + self.n if r < 0 else int(r) for r in np.asarray(first).reshape(-1)]
                if any(not 0 <= r < self.n for r in rows):
                    raise IndexError(f"an index is out of range for {self.n} images")
                data = np.stack([np.asarray(arr[(r, *rest)]) for r in rows])
        finally:
            if self.backend == "h5":
                root.close()
        return torch.from_numpy(np.ascontiguousarray(data))

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
    """Read a file written by :func:`extract_features` into an :class:`ExtractedFeatures`.

    Args:
        path: the ``.h5`` / ``.hdf5`` file or ``.zarr`` store.
        layers: a subset of layers to read (None: all).
        lazy: give :class:`LazyFeatures` (read on indexing) instead of tensors, for files
            larger than memory. ``result.load()`` turns a lazy result into tensors.

    An interrupted file gives the images written so far (``metadata["complete"]`` is False).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no feature file at {str(path)!r}")
    backend = _backend_of(path)
    root = _open_root(path, backend)
    try:
        attrs = root.attrs
        if "metadata" not in attrs:
            raise ExtractionError(f"{str(path)!r} is not a blt-models feature file")
        meta = attrs["metadata"]
        metadata = json.loads(meta) if isinstance(meta, (str, bytes)) else dict(meta)
        n = int(attrs.get("n_done", 0))
        metadata["n_done"], metadata["complete"] = n, bool(attrs.get("complete", False))
        names = metadata["layers"] if layers is None else _names(layers, metadata["layers"])
        features: dict[str, Any] = {}
        for name in names:
            arr = root[f"features/{name}"]
            if lazy:
                features[name] = LazyFeatures(
                    path,
                    backend,
                    f"features/{name}",
                    n,
                    tuple(arr.shape[1:]),
                    np.dtype(str(arr.dtype)),
                )
            else:
                features[name] = torch.from_numpy(np.ascontiguousarray(arr[:n]))
        ids = [_to_str(s) for s in root["image_ids"][:n]]
        steps = torch.from_numpy(np.asarray(root["steps"][:], dtype=np.int64))
    finally:
        if backend == "h5":
            root.close()
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
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownLayerError(
                f"the file has no layer {name!r}.{hint} Layers: {', '.join(known)}."
            )
    return wanted


def _dims(shape: Sequence[int], spec: Pooling) -> list[str]:
    """Dimension names of a stored layer array ``[N, S, ...]`` with per-image shape ``shape``."""
    if spec.kind == "random":
        return ["image", "step", "component"]
    rest = {1: ["channel"], 3: ["channel", "height", "width"]}.get(len(shape) - 1)
    return ["image", "step", *(rest or [f"dim{i}" for i in range(2, len(shape) + 1)])]
