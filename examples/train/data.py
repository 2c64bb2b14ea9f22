"""Datasets of the training recipe.

* ``fashion_mnist``: the idx files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), resized to the model's input size (bilinear).
* ``imagenet``: ImageFolder ``train/`` and ``val/`` with the BLT reference's transforms
  (RandomResizedCrop 224 and an always-on Gaussian blur for training; Resize 256, CenterCrop 224).
* ``vggface2``: the reference's identity split and face normalisation (mean 0.6068, 0.4517,
  0.3800; std 0.2492, 0.2173, 0.2082), with the
  ``._`` resource-fork duplicates removed.
* ``imagenet_vggface2`` / ``imagenet_face``: the reference's hybrid datasets (ImageNet plus faces), each
  part with its own normalisation and the VGGFace2 labels offset after the ImageNet ones.
* ``folder``: your own images, one subfolder per class: ``DIR/train/<class>/`` and
  ``DIR/val/<class>/``, or ``DIR/<class>/`` split per class into train and validation by a seed.
* ``synthetic``: small deterministic images for tests and smoke runs.

Random augmentation is made a pure function of ``(seed, epoch, index)`` by `SeededAugment`,
so a run gives the same batches whatever the number of workers, and a resumed run continues
exactly where it stopped.
"""

from __future__ import annotations

import gzip
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGGFACE2_MEAN = (0.6068, 0.4517, 0.3800)
VGGFACE2_STD = (0.2492, 0.2173, 0.2082)
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

DATASETS = ("folder", "fashion_mnist", "imagenet", "vggface2", "imagenet_vggface2", "imagenet_face",
            "synthetic")


@dataclass
class DataInfo:
    num_classes: int
    in_chans: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None
    description: str = ""
    crop_pct: float = 1.0  # evaluation: resize to input_size / crop_pct, centre crop input_size


# ------------------------------------------------------------------------------------ helpers
class SeededAugment(Dataset):
    """Runs ``base[i]`` with the torch and Python RNGs seeded from ``(seed, epoch, i)``."""

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed, self.epoch = base, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        s = ((self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)) % (2**62)
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            try:
                return self.base[index]
            finally:
                random.setstate(state)


class TwoViews(Dataset):
    """``((view1, view2), label)``: two independent augmentations of the same image."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        x1, y = self.base[index]
        x2, _ = self.base[index]
        return (x1, x2), y


# ------------------------------------------------------------------------------ Fashion-MNIST
def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """An idx file (optionally gzipped) as a uint8 tensor of its declared shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not a uint8 idx file")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    return torch.from_numpy(array.copy()).reshape(shape)


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """``[N, 1, h, w]`` uint8 -> ``[N, 1, size, size]`` uint8, bilinear (as PIL / torchvision's
    ``Resize(size, BILINEAR)`` on an image, up to rounding)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                        antialias=size < images.shape[-1])  # fmt: skip
    return out.round_().clamp_(0, 255).to(torch.uint8)


class FashionMNIST(Dataset):
    """Fashion-MNIST from the Debian files: ``[1, S, S]`` float images normalised, int labels.

    Preprocessing (train and test): resize 28 -> ``input_size`` (bilinear), scale to [0, 1],
    normalise with ``mean``/``std``. ``augment``: ``"none"``, ``"crop"`` (pad 2 + random crop +
    horizontal flip) or ``"strong"`` (random resized crop + flip + brightness/contrast, for
    contrastive training).
    """

    def __init__(self, root: str = FASHION_MNIST_ROOT, train: bool = True, input_size: int = 32,
                 augment: str = "none", mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD,
                 limit: int | None = None) -> None:  # fmt: skip
        prefix = "train" if train else "t10k"
        root_path = Path(root)
        files = [root_path / f"{prefix}-images-idx3-ubyte.gz", root_path / f"{prefix}-labels-idx1-ubyte.gz"]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(
                    f"{f} not found: install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
                    "(or bash scripts/setup.sh), or pass --data-path to a folder with the idx files."
                )
        images = read_idx(files[0])[:, None]
        labels = read_idx(files[1]).long()
        if limit:
            images, labels = images[:limit], labels[:limit]
        self.images = resize_uint8(images, input_size)
        self.labels = labels
        self.input_size, self.augment = input_size, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        x = self.images[index].float().div_(255)
        s = self.input_size
        if self.augment == "crop":
            pad = max(1, s // 16)
            x = F.pad(x, (pad, pad, pad, pad))
            i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
            x = x[:, i : i + s, j : j + s]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        elif self.augment == "strong":
            from torchvision.transforms import v2

            x = v2.RandomResizedCrop(s, scale=(0.3, 1.0), antialias=True)(x)
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            b, c = (torch.rand(2) * 0.8 + 0.6).tolist()
            x = ((x - x.mean()) * c + x.mean() * b).clamp_(0, 1)
        elif self.augment != "none":
            raise ValueError(f"unknown augment {self.augment!r}")
        return (x - self.mean) / self.std, int(self.labels[index])


# ------------------------------------------------------------------------------- ImageNet
def imagenet_transform(train: bool, horizontal_flip: bool = False, size: int = 224):
    """The BLT reference's ImageNet transforms, including its always-on Gaussian blur."""
    from torchvision import transforms as T

    if train:
        steps = [T.RandomResizedCrop(size), T.GaussianBlur(7, sigma=(0.01, 7.0))]
        if horizontal_flip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps = [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet(root: str, train: bool, num_cats: int = 1000, horizontal_flip: bool = False, size: int = 224):
    """ImageFolder ``root/train`` or ``root/val``; ``num_cats < 1000`` keeps labels < num_cats."""
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(os.path.join(root, "train" if train else "val"),
                     transform=imagenet_transform(train, horizontal_flip, size))  # fmt: skip
    if num_cats < len(ds.classes):
        keep = [i for i, t in enumerate(ds.targets) if t < num_cats]
        return Subset(ds, keep)
    return ds


# ------------------------------------------------------------------------------- own folder
FOLDER_LAYOUT = ("one subfolder per class (DIR/<class>/*.jpg), or DIR/train/<class>/ and "
                 "DIR/val/<class>/ with the same class subfolders")  # fmt: skip


def folder_classes(root: str | os.PathLike[str]) -> list[str]:
    """The class names of an ImageFolder root: its subfolders, sorted (torchvision's rule)."""
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(str(root))[0]
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} has no class subfolders: --data-path needs {FOLDER_LAYOUT}") from None


def split_classes(root: str | os.PathLike[str]) -> list[str]:
    """The classes of ``root/train``, checked to be those of ``root/val``: ImageFolder numbers
    each split's sorted subfolders, so a class missing from one split would shift the labels of
    the next ones (validation scored against the wrong classes, without an error)."""
    base = Path(root)
    classes, val_classes = folder_classes(base / "train"), folder_classes(base / "val")
    if classes != val_classes:
        raise ValueError(f"{root}: train/ has the classes {classes} but val/ has {val_classes}; "
                         "give both the same class subfolders")  # fmt: skip
    return classes


def folder_transform(train: bool, horizontal_flip: bool = False, size: int = 224):
    """Own-folder transforms: RandomResizedCrop (scale 0.35-1) and an optional flip for training;
    Resize(size * 256 / 224) and CenterCrop for validation; ImageNet mean / std."""
    from torchvision import transforms as T

    if train:
        steps = [T.RandomResizedCrop(size, scale=(0.35, 1.0))]
        if horizontal_flip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps = [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def split_per_class(targets: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)``: each class's images shuffled by ``seed``, ``round(val_fraction *
    n)`` of them (at least one, and never all) for validation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction {val_fraction}: must be between 0 and 1")
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(target, []).append(index)
    rng = random.Random(seed)
    train, val = [], []
    for target, indices in sorted(by_class.items()):
        if len(indices) < 2:
            raise ValueError(f"class {target} has {len(indices)} image: a train / val split needs at least 2 per class")
        rng.shuffle(indices)
        n_val = min(len(indices) - 1, max(1, round(val_fraction * len(indices))))
        val += indices[:n_val]
        train += indices[n_val:]
    return sorted(train), sorted(val)


def own_folder(root: str, size: int = 224, horizontal_flip: bool = False, val_fraction: float = 0.2,
               seed: int = 0) -> tuple[Dataset, Dataset, DataInfo]:  # fmt: skip
    """``(train, val, DataInfo)`` of an image folder: ``root/train`` and ``root/val`` (the same
    class subfolders in both), or ``root`` itself split per class by ``seed``. Classes are the
    sorted subfolder names; labels their index."""
    from torchvision.datasets import ImageFolder

    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"--data-path {root}: no such folder ({FOLDER_LAYOUT})")
    train_tf, val_tf = folder_transform(True, horizontal_flip, size), folder_transform(False, size=size)
    has_train, has_val = (base / "train").is_dir(), (base / "val").is_dir()
    if has_train or has_val:
        if not (has_train and has_val):
            raise FileNotFoundError(f"{root} has {'train/' if has_train else 'val/'} but not "
                                    f"{'val/' if has_train else 'train/'}: --data-path needs {FOLDER_LAYOUT}")  # fmt: skip
        classes = split_classes(base)
        train: Dataset = ImageFolder(str(base / "train"), transform=train_tf)
        val: Dataset = ImageFolder(str(base / "val"), transform=val_tf)
        split = "train/ and val/"
    else:
        classes = folder_classes(base)
        train_all = ImageFolder(str(base), transform=train_tf)
        train_idx, val_idx = split_per_class(train_all.targets, val_fraction, seed)
        train = Subset(train_all, train_idx)
        val = Subset(ImageFolder(str(base), transform=val_tf), val_idx)
        split = f"split per class by seed {seed}, {val_fraction:g} for validation"
    if len(classes) < 2:
        raise ValueError(f"{root} has {len(classes)} class subfolder ({classes}): a classifier needs at least 2")
    info = DataInfo(len(classes), 3, size, IMAGENET_MEAN, IMAGENET_STD, tuple(classes),
                    f"image folder {base.resolve()}: {len(classes)} classes ({split}); "
                    "RandomResizedCrop / Resize + CenterCrop, ImageNet statistics", crop_pct=224 / 256)  # fmt: skip
    return train, val, info


# ------------------------------------------------------------------------------- VGGFace2
class _PadToMultiple:
    def __init__(self, multiple: int = 14) -> None:
        self.multiple = multiple

    def __call__(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph = math.ceil(h / self.multiple) * self.multiple - h
        pw = math.ceil(w / self.multiple) * self.multiple - w
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def vggface2_transform(train: bool, image_size: int = 224, crop: int = 224, horizontal_flip: bool = False):
    """The BLT reference's VGGFace2 transforms with the face normalisation: resize the shorter
    side to ``image_size``; train: random ``crop`` (reference 224), grayscale p=0.2, Gaussian blur
    always, optional flip; val: centre crop ``image_size``; pad to a multiple of 14."""
    from torchvision import transforms as T

    steps = [T.Resize(image_size)]
    if train:
        steps += [T.RandomCrop(crop), T.RandomGrayscale(0.2), T.GaussianBlur(7, sigma=(0.01, 7.0))]
        if horizontal_flip:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps.append(T.CenterCrop(image_size))
    steps += [T.ToTensor(), T.Normalize(VGGFACE2_MEAN, VGGFACE2_STD), _PadToMultiple(14)]
    return T.Compose(steps)


class VGGFace2(Dataset):
    """VGGFace2 with the reference identity split.

    Both ``"train"`` and ``"val"`` read ``root/train/``: identities are the sorted folder names,
    the first ``num_cats`` (all if 0); each identity's sorted files are split at
    ``floor(0.9 n)`` (first part train, rest val). The label of the k-th identity is
    ``k + starting_label`` (what the reference's meta-file map gives with the official files), or
    ``starting_label`` for every image with ``just_one_cat``. macOS ``._`` resource-fork entries
    are skipped instead of being duplicated (reference bug 21). Bounding boxes are not used (the
    reference computes and discards them).
    """

    def __init__(self, root: str, split: str = "train", num_cats: int = 0, starting_label: int = 0,
                 just_one_cat: bool = False, image_size: int = 224, horizontal_flip: bool = False,
                 transform=None, crop: int | None = None) -> None:  # fmt: skip
        if split not in ("train", "val"):
            raise ValueError("split must be 'train' or 'val'")
        base = Path(root) / "train"
        ids = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        if num_cats:
            ids = ids[:num_cats]
        self.samples: list[tuple[str, int]] = []
        for k, ident in enumerate(ids):
            files = sorted({f.name for f in (base / ident).iterdir()
                            if f.is_file() and not f.name.startswith("._")})  # fmt: skip
            cut = int(math.floor(0.9 * len(files)))
            part = files[:cut] if split == "train" else files[cut:]
            label = starting_label if just_one_cat else k + starting_label
            self.samples += [(str(base / ident / f), label) for f in part]
        self.identities = ids
        self.transform = transform or vggface2_transform(
            split == "train", image_size, crop or image_size, horizontal_flip
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
        return self.transform(img), label


# ------------------------------------------------------------------------------- synthetic
class Synthetic(Dataset):
    """Deterministic toy images: a fixed random pattern per class plus per-image noise."""

    def __init__(self, n: int = 64, num_classes: int = 4, size: int = 32, channels: int = 1,
                 seed: int = 0, augment: bool = False) -> None:  # fmt: skip
        g = torch.Generator().manual_seed(seed)
        self.patterns = torch.randn(num_classes, channels, size, size, generator=g)
        self.labels = torch.arange(n) % num_classes
        self.noise = torch.randn(n, channels, size, size, generator=g)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        y = int(self.labels[index])
        x = self.patterns[y] + 0.5 * self.noise[index]
        if self.augment:
            x = x + 0.1 * torch.randn_like(x)
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x, y


# ------------------------------------------------------------------------------- factory
def build_datasets(name: str, *, data_path: str | None = None, vggface2_path: str | None = None,
                   input_size: int | None = None, contrastive: bool = False,
                   horizontal_flip: bool = False, num_cats: int = 0,
                   limit_train: int | None = None, limit_val: int | None = None,
                   synthetic_classes: int = 4, synthetic_channels: int = 1,
                   val_fraction: float = 0.2, seed: int = 0):  # fmt: skip
    """``(train, val, DataInfo)`` for a dataset name (see :data:`DATASETS`)."""
    if name == "fashion_mnist":
        size = input_size or 32
        root = data_path or FASHION_MNIST_ROOT
        train = FashionMNIST(root, True, size, "strong" if contrastive else "crop", limit=limit_train)
        val = FashionMNIST(root, False, size, "none", limit=limit_val)
        info = DataInfo(10, 1, size, FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_CLASSES,
                        f"Fashion-MNIST: 28 px -> {size} px bilinear, [0, 1], normalised")  # fmt: skip
    elif name == "synthetic":
        size = input_size or 32
        train = Synthetic(limit_train or 64, synthetic_classes, size, synthetic_channels, 0, True)
        val = Synthetic(limit_val or 32, synthetic_classes, size, synthetic_channels, 1, False)
        val.patterns = train.patterns
        info = DataInfo(synthetic_classes, synthetic_channels, size, (0.0,) * synthetic_channels,
                        (1.0,) * synthetic_channels, None, "synthetic")  # fmt: skip
    else:
        size = input_size or 224
        if name == "folder":
            if not data_path:
                raise ValueError(f"--dataset folder needs --data-path DIR: {FOLDER_LAYOUT}")
            train, val, info = own_folder(data_path, size, horizontal_flip, val_fraction, seed)
            if num_cats:
                raise ValueError("--num-cats does not apply to --dataset folder: its classes are its subfolders")
        elif name == "imagenet":
            if not data_path:
                raise ValueError("--data-path (ImageNet root with train/ and val/) is required")
            classes = split_classes(data_path)
            if num_cats > len(classes):  # never a head wider than the classes the data has
                raise ValueError(f"--num-cats {num_cats}, but {data_path}/train has {len(classes)} classes")
            n = num_cats or len(classes)
            train = imagenet(data_path, True, n, horizontal_flip, size)
            val = imagenet(data_path, False, n, horizontal_flip, size)
            info = DataInfo(n, 3, size, IMAGENET_MEAN, IMAGENET_STD, tuple(classes[:n]),
                            f"ImageNet layout, {n} classes (reference transforms)", crop_pct=224 / 256)  # fmt: skip
        elif name == "vggface2":
            if not vggface2_path:
                raise ValueError("--vggface2-path (VGGFace2 root with train/) is required")
            n = num_cats or 3890
            train = VGGFace2(vggface2_path, "train", n, image_size=size, horizontal_flip=horizontal_flip)
            val = VGGFace2(vggface2_path, "val", n, image_size=size)
            info = DataInfo(len(train.identities), 3, size, VGGFACE2_MEAN, VGGFACE2_STD, None,
                            "VGGFace2 (reference identity split, face normalisation)")  # fmt: skip
        elif name in ("imagenet_vggface2", "imagenet_face"):
            if not data_path or not vggface2_path:
                raise ValueError(f"{name} needs --data-path (ImageNet) and --vggface2-path")
            split_classes(data_path)  # val/ numbered like train/, as for --dataset imagenet
            if name == "imagenet_vggface2":
                n_in, n_id, one, total = 500, 1920, False, 2420
            else:
                n_in, n_id, one, total = 999, 4, True, 1000
            train = ConcatDataset([
                imagenet(data_path, True, n_in, horizontal_flip, size),
                VGGFace2(vggface2_path, "train", n_id, n_in, one, size, horizontal_flip),
            ])  # fmt: skip
            val = ConcatDataset([
                imagenet(data_path, False, n_in, horizontal_flip, size),
                VGGFace2(vggface2_path, "val", n_id, n_in, one, size),
            ])  # fmt: skip
            info = DataInfo(total, 3, size, IMAGENET_MEAN, IMAGENET_STD, None,
                            f"{name}: ImageNet classes 0-{n_in - 1} (ImageNet statistics) + VGGFace2 "
                            f"labels from {n_in} (face statistics)")  # fmt: skip
        else:
            raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
        if limit_train:
            train = Subset(train, range(min(limit_train, len(train))))
        if limit_val:
            val = Subset(val, range(min(limit_val, len(val))))
    if contrastive:
        train = TwoViews(train)
    return train, val, info
