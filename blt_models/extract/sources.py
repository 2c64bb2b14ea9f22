"""Stimulus sources: folders, path lists, Datasets, DataLoaders and tensors as batches of
model-ready tensors, each image with its id and a content fingerprint."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import (
    ExtractionError,
    InputError,
    InvalidArgumentError,
    NoImagesError,
    OutputMismatchError,
    UnreadableImageError,
)

__all__ = [
    "list_images",
    "image_extensions",
    "Source",
    "file_fingerprint",
    "tensor_fingerprint",
    "same_image",
]

Batch = tuple[Tensor, list[str], list[str]]  # images [B, C, H, W], ids, fingerprints


def image_extensions() -> set[str]:
    """File extensions (lower case, with the dot) of the formats PIL decodes.

    PIL registers extensions for formats it only identifies (its "stub" plugins: HDF5's ``.h5``,
    BUFR, GRIB, WMF outside Windows), whose files it cannot read as images: those are left out,
    so a feature file ``feats.h5`` in a stimulus folder is not taken for an image.
    """
    from PIL import Image, ImageFile

    Image.init()
    exts = set()
    for ext, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get(fmt, (None,))[0]
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        exts.add(ext.lower())
    return exts


def list_images(
    folder: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files skipped), sorted by relative path.

    Files are taken by their extension, for the formats PIL decodes (see
    `image_extensions`): feature files (``.h5``), notes and other files are skipped.
    ``exclude``: outputs of the run (a feature file ``feats.h5`` excludes itself and everything
    named ``feats.h5.*`` next to it, e.g. its ``.shards`` folder), never read as inputs.

    Raises:
        NoImagesError: if there are none.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NoImagesError(f"{str(root)!r} is not a folder")
    exts = image_extensions()
    outputs = [Path(p).absolute() for p in exclude]

    def is_output(path: Path) -> bool:
        path = path.absolute()
        for out in outputs:
            for part in (path, *path.parents):
                if part.parent == out.parent and (
                    part.name == out.name or part.name.startswith(out.name + ".")
                ):
                    return True
        return False

    files: list[Path] = []
    others: list[Path] = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if outputs and is_output(path):
            continue
        (files if path.suffix.lower() in exts else others).append(path)
    if not files:
        seen = f"; it holds {len(others)} other file(s), e.g. {others[0].name}" if others else ""
        raise NoImagesError(
            f"no image files in {str(root)!r} (searched recursively for .png, .jpg, .jpeg, "
            f".bmp, .tif, .webp and other PIL formats){seen}"
        )
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


# ------------------------------------------------------------------------------ fingerprints
def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_fingerprint(path: str | os.PathLike[str], data: bytes | None = None) -> str:
    """``"file:<blake2b-128 of the bytes>:<size>:<mtime_ns>"``; the modification time is recorded
    for information only (a copy with the same bytes is the same image)."""
    if data is None:
        data = Path(path).read_bytes()
    mtime = os.stat(path).st_mtime_ns
    return f"file:{_digest(data)}:{len(data)}:{mtime}"


def tensor_fingerprint(image: Tensor) -> str:
    """``"tensor:<blake2b-128 of dtype, shape and bytes>"`` of one image tensor."""
    t = image.detach().to("cpu").contiguous()
    head = f"{t.dtype}{tuple(t.shape)}".encode()
    body = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return f"tensor:{_digest(head + body)}"


def same_image(a: str, b: str) -> bool:
    """Whether two fingerprints describe the same content (modification times are ignored)."""
    if a.startswith("file:") and b.startswith("file:"):
        return a.split(":")[1:3] == b.split(":")[1:3]
    return a == b


def check_fingerprints(
    path: Path, ids: Sequence[str], stored: Sequence[str], current: Sequence[str], start: int = 0
) -> None:
    """Raise [`OutputMismatchError`][blt_models.errors.OutputMismatchError] naming the first image whose content changed."""
    for i, (old, new) in enumerate(zip(stored, current, strict=True)):
        if not same_image(old, new):
            raise OutputMismatchError(
                f"{str(path)!r} holds features of image {ids[i]!r} (row {start + i}) as it was "
                "when they were written, and its content has changed since; pass overwrite=True "
                "(CLI: --overwrite) to extract every image again, or choose another output"
            )


# ------------------------------------------------------------------------------ datasets
class ImageFiles(torch.utils.data.Dataset):
    """Decodes image files; items are ``(tensor, fingerprint)`` from one read of the bytes."""

    def __init__(self, paths: Sequence[str | Path], transform: Any) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            data = Path(path).read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return self.transform(img), file_fingerprint(path, data)
        except Image.DecompressionBombError as err:
            raise UnreadableImageError(
                f"cannot read image {path!r}: {err} Shrink the image, or raise PIL's limit of "
                "pixels (PIL.Image.MAX_IMAGE_PIXELS) if you trust the file"
            ) from None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            raise UnreadableImageError(f"cannot read image {path!r}: {err}") from None


def first_of(item: Any) -> Any:
    if isinstance(item, dict):
        for key in ("image", "images", "img", "pixel_values", "x"):
            if key in item:
                return item[key]
        raise ExtractionError(f"dataset items are dicts without an 'image' key: {sorted(item)}")
    if isinstance(item, (tuple, list)):
        return item[0]
    return item


class DatasetImages(torch.utils.data.Dataset):
    """Images of a user Dataset: the first element of tuple items, transformed if not tensors."""

    def __init__(self, dataset: Any, transform: Any) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        img = first_of(self.dataset[index])
        if isinstance(img, np.ndarray):
            img = torch.from_numpy(img)
        if not isinstance(img, Tensor):
            if self.transform is None:
                raise InputError(
                    f"the dataset gave a tensor as its first image but a {type(img).__name__} "
                    f"at index {index}: give tensors throughout, or images throughout"
                )
            img = self.transform(img)
        return img


# ------------------------------------------------------------------------------ the source
class Source:
    """A stimulus source as batches of model-ready tensors with their ids and fingerprints.

    Files and tensors are fingerprinted without running anything (``fingerprints``); Datasets
    and DataLoaders by the tensors they give, so checking their rows means reading them again
    (``batches(start, check=...)``).
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        num_workers: int,
        make_transform: Callable[[], Any],
        image_ids: Sequence[str] | None,
        pin_memory: bool,
        outputs: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        from torch.utils.data import (
            BatchSampler,
            DataLoader,
            Dataset,
            IterableDataset,
            SequentialSampler,
        )

        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.loader: Any = None
        self.dataset: Any = None
        self.tensor: Tensor | None = None
        self.paths: list[str] | None = None
        self.ids: list[str] | None = None
        self.n: int | None = None
        self.info: dict[str, Any]
        self.data_config: dict[str, Any] | None = None  # the preprocessing, if ours was built
        self.offset = 0  # position of the first image in the whole source (see restrict)
        self.transform_repr: str | None = None  # a custom transform, as recorded
        # Whether images pass through the transform (files, a Dataset of PIL images); tensors,
        # DataLoaders and Datasets of tensors go to the model as they are.
        self.transform_applies = False

        if isinstance(source, str) and not source.strip():
            raise InvalidArgumentError(
                f"source = {source!r} is an empty string; name the folder of images (use '.' for the current "
                "folder), or pass a list of image paths, a Dataset, a DataLoader or a tensor"
            )
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            root = Path(source)
            files = list_images(root, exclude=outputs)
            self.kind, self.info = "folder", {"path": str(root.resolve())}
            self.ids = [p.relative_to(root).as_posix() for p in files]
            self.paths = [str(p) for p in files]
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
            self.paths = [str(p) for p in source]
        elif isinstance(source, (Tensor, np.ndarray)):
            tensor = torch.as_tensor(source)
            if tensor.ndim == 3:
                tensor = tensor.unsqueeze(0)
            if len(tensor) == 0:
                raise NoImagesError("the image tensor is empty")
            self.kind = "tensor"
            self.info = {"shape": list(tensor.shape), "dtype": str(tensor.dtype)}
            self.tensor = tensor
            self.n = len(tensor)
        elif isinstance(source, DataLoader):
            # Rows are named by position: only PyTorch's own in-order batching keeps them so
            # (a BatchSampler subclass or a list of index lists may reorder them).
            sampler: Any = source.batch_sampler
            sampler = source.sampler if sampler is None else sampler
            if type(sampler) is BatchSampler:
                sampler = sampler.sampler
            if not isinstance(sampler, SequentialSampler) and not isinstance(
                source.dataset, IterableDataset
            ):
                raise InvalidArgumentError(
                    f"the DataLoader draws its images with a {type(sampler).__name__} (e.g. "
                    "shuffle=True): rows would be stored in that order but named 0, 1, 2, ... "
                    "and a resume would see other images. Pass the Dataset itself, or a "
                    "DataLoader with shuffle=False"
                )
            self.kind, self.info = "dataloader", {"batch_size": source.batch_size}
            self.loader = source
            try:
                self.n = len(source.dataset)  # type: ignore[arg-type]
            except TypeError:
                self.n = None
        elif isinstance(source, IterableDataset):
            if num_workers:
                raise InvalidArgumentError(
                    "an IterableDataset with num_workers > 0 runs its whole stream in every "
                    "worker (each image once per worker) unless it splits itself by "
                    "torch.utils.data.get_worker_info(); pass num_workers=0, or a DataLoader "
                    "of your own that you know gives each image once"
                )
            self.kind, self.info = "dataloader", {"iterable_dataset": type(source).__name__}
            self.loader = DataLoader(
                source, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory
            )
        elif isinstance(source, Dataset) or (
            hasattr(source, "__getitem__")
            and hasattr(source, "__len__")
            and not isinstance(source, (dict, str, bytes))
        ):
            n_items = len(source)  # type: ignore[arg-type]
            if n_items == 0:
                raise NoImagesError(f"the dataset {type(source).__name__} is empty")
            self.kind, self.info = "dataset", {"class": type(source).__name__}
            samples = getattr(source, "samples", None) or getattr(source, "imgs", None)
            if isinstance(samples, list) and len(samples) == n_items:
                self.ids = [str(s[0] if isinstance(s, (tuple, list)) else s) for s in samples]
            self.transform_applies = not isinstance(first_of(source[0]), (Tensor, np.ndarray))
            transform = make_transform() if self.transform_applies else None
            self.dataset = DatasetImages(source, transform)
        else:
            raise InvalidArgumentError(
                f"cannot read images from a {type(source).__name__}: pass a folder, a list of "
                "image paths, a Dataset, a DataLoader or a tensor [N, C, H, W]"
            )
        if self.paths is not None:
            self.transform_applies = True
            self.dataset = ImageFiles(self.paths, make_transform())
        if self.dataset is not None:
            self.n = len(self.dataset)
        if image_ids is not None:
            if self.ids is not None:
                raise InvalidArgumentError(
                    f"image_ids= names images that have no names of their own (a tensor, a "
                    f"Dataset, a DataLoader); this {self.kind} source names its images itself "
                    "(relative paths, or the Dataset's samples): drop image_ids="
                )
            self.ids = [str(i) for i in image_ids]
        if self.ids is not None and self.n is not None and len(self.ids) != self.n:
            raise InvalidArgumentError(f"{len(self.ids)} image ids for {self.n} images")

    def restrict(self, start: int, stop: int) -> Source:
        """A copy that gives only images ``start .. stop-1`` (one process's rows), keeping their
        ids and their positions in the whole source (``offset``; stimulus noise is seeded by
        position)."""
        import copy

        from torch.utils.data import Subset

        if self.n is None or self.loader is not None:
            raise InvalidArgumentError(
                "splitting a source across processes needs its images by index: pass a folder, "
                "a list of image paths, a Dataset or a tensor (not a DataLoader or an iterable "
                "dataset, whose batches cannot be divided up in advance)"
            )
        part = copy.copy(self)
        part.ids = self.ids_for(0, self.n)[start:stop]
        part.n, part.offset = stop - start, self.offset + start
        if self.tensor is not None:
            part.tensor = self.tensor[start:stop]
        if self.paths is not None:
            part.paths = self.paths[start:stop]
            part.dataset = ImageFiles(part.paths, self.dataset.transform)
        elif self.dataset is not None:
            part.dataset = Subset(self.dataset, range(start, stop))
        return part

    # -- what can be known without running the model
    @property
    def cheap_fingerprints(self) -> bool:
        """Whether ``fingerprints`` works (files and tensors) without decoding images."""
        return self.paths is not None or self.tensor is not None

    def fingerprints(self, start: int, stop: int) -> list[str]:
        if self.paths is not None:
            return [file_fingerprint(p) for p in self.paths[start:stop]]
        assert self.tensor is not None
        return [tensor_fingerprint(t) for t in self.tensor[start:stop]]

    def ids_for(self, i: int, b: int) -> list[str]:
        if self.ids is None:
            return [str(j) for j in range(i, i + b)]
        if i + b > len(self.ids):
            raise InvalidArgumentError(
                f"{len(self.ids)} image ids, but the source gives more images (at least {i + b})"
            )
        return self.ids[i : i + b]

    def sample(self) -> Tensor:
        """One image ``[1, C, H, W]`` (for the size of the inputs)."""
        if self.tensor is not None:
            return self.tensor[:1]
        if self.dataset is not None:
            item = self.dataset[0]
            return (item[0] if isinstance(item, tuple) else item).unsqueeze(0)
        first = next(iter(self.loader), None)
        if first is None:
            raise NoImagesError("the DataLoader yields no batches")
        return torch.as_tensor(first_of(first))[:1]

    # -- batches
    def batches(
        self, start: int, check: Callable[[int, list[str], list[str]], None] | None = None
    ) -> Generator[Batch, None, None]:
        """Batches from image ``start`` on. Sources without cheap fingerprints read the rows
        before ``start`` too and hand their ids and fingerprints to ``check(row, ids, fps)``
        instead of yielding them (the model does not run on them)."""
        from torch.utils.data import DataLoader, Subset

        if self.tensor is not None:
            for i in range(start, len(self.tensor), self.batch_size):
                x = self.tensor[i : i + self.batch_size]
                yield x, self.ids_for(i, len(x)), [tensor_fingerprint(t) for t in x]
            return
        if self.dataset is not None:
            first = start if self.paths is not None or check is None else 0
            loader = DataLoader(
                Subset(self.dataset, range(first, len(self.dataset))),
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
            batches: Iterator[Any] = iter(loader)
        else:
            first = 0
            batches = iter(self.loader)
        i = first
        for batch in batches:
            if self.paths is not None:
                x, fps = batch[0], list(batch[1])
            else:
                x = first_of(batch) if self.dataset is None else batch
                if not isinstance(x, Tensor):
                    x = torch.as_tensor(np.asarray(x))
                fps = [tensor_fingerprint(t) for t in x]
            b = len(x)
            if i + b <= start:  # already written: check, do not run the model
                if check is not None:
                    check(i, self.ids_for(i, b), fps)
                i += b
                continue
            skip = max(0, start - i)
            if skip and check is not None:
                check(i, self.ids_for(i, skip), fps[:skip])
            yield x[skip:], self.ids_for(i + skip, b - skip), fps[skip:]
            i += b
