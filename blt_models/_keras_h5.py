"""Reading Keras 2 HDF5 weight files (``model.save_weights("x.h5")`` and ``model.save("x.h5")``).

Both layouts hold one group per layer, listed in order by the attribute ``layer_names`` (of the
root, or of the ``model_weights`` group that ``model.save`` writes); each layer group lists its
weights in the attribute ``weight_names`` (``"RCL_0_BConv/kernel:0"``...), and the array of weight
``w`` of layer ``L`` is the dataset ``L/w``. Keras splits a long attribute into ``name0``,
``name1``, ...; string attributes may be bytes or str. Arrays keep Keras' layouts (convolution
kernels ``[kh, kw, in, out]``, Dense kernels ``[in, out]``): mapping them onto a model is the
family's job. Needs ``h5py`` (``pip install h5py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointNotFoundError, KerasWeightsError

__all__ = [
    "KerasWeightsFile",
    "read_keras_h5",
    "is_hdf5_file",
    "is_hdf5_name",
    "keras_h5_state_dict",
]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class KerasWeightsFile:
    """The weights of a Keras HDF5 file, per layer in model order.

    Attributes:
        path: the file.
        layout: ``"save_weights"`` (groups at the root) or ``"save"`` (under ``model_weights``).
        layers: ``{layer: {weight: array}}`` for the layers that hold weights, in the file's
            order; weight names without the layer prefix and the ``:0`` suffix (``"kernel"``,
            ``"gamma"``, ``"moving_variance"``...).
        weightless: names of the listed layers without weights (inputs, pools, ReLUs, sums...).
        keras_version, backend: as recorded in the file (``""`` if not).
    """

    path: Path
    layout: str
    layers: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    weightless: list[str] = field(default_factory=list)
    keras_version: str = ""
    backend: str = ""

    @property
    def num_values(self) -> int:
        return sum(int(a.size) for weights in self.layers.values() for a in weights.values())

    def state_dict(self) -> dict[str, Any]:
        """``{"<layer>/<weight>": tensor}``, arrays unchanged (Keras layouts)."""
        import torch

        return {
            f"{layer}/{name}": torch.from_numpy(np.array(value, copy=True))
            for layer, weights in self.layers.items()
            for name, value in weights.items()
        }


def is_hdf5_name(path: str | os.PathLike[str]) -> bool:
    """True if the file is named as an HDF5 file (``.h5``, ``.hdf5``): read by its contents as
    one, so that a file that is not HDF5 is refused as such."""
    return Path(path).suffix.lower() in (".h5", ".hdf5")


def is_hdf5_file(path: str | os.PathLike[str]) -> bool:
    """True if the file starts with the HDF5 signature (what Keras writes)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _attr_list(attrs: Any, name: str) -> list[str] | None:
    """A list-of-strings attribute, joined from Keras' chunks (``name0``, ``name1``...)."""
    if name in attrs:
        chunks = [attrs[name]]
    elif f"{name}0" in attrs:
        chunks, k = [], 0
        while f"{name}{k}" in attrs:
            chunks.append(attrs[f"{name}{k}"])
            k += 1
    else:
        return None
    out: list[str] = []
    for chunk in chunks:
        values = np.atleast_1d(np.asarray(chunk, dtype=object)).ravel()
        out += [_text(v) for v in values]
    return out


def read_keras_h5(path: str | os.PathLike[str]) -> KerasWeightsFile:
    """Every weight of a Keras 2 HDF5 file (either layout), per layer in the file's order.

    Raises [`KerasWeightsError`][blt_models.errors.KerasWeightsError] for a file that is not HDF5 or not a Keras weight file
    (e.g. a Keras 3 ``.weights.h5`` file, whose layers carry no names).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"Keras weight file not found: {path}" + (" (it is a folder)" if path.is_dir() else "")
        )
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is in the [extract] and [dev] extras
        raise ImportError(
            "reading Keras HDF5 weight files needs h5py: pip install h5py "
            "(or pip install -e '.[extract]' in the blt-models clone)"
        ) from err
    if not is_hdf5_file(path):
        raise KerasWeightsError(
            f"{path} is not an HDF5 file (no HDF5 signature): expected a Keras weight file written "
            "by model.save_weights('x.h5') or model.save('x.h5'). A truncated download looks like "
            "this too: download it again."
        )
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise KerasWeightsError(
            f"{path} cannot be read as HDF5 ({err}); download it again"
        ) from err
    with handle:
        layout, root = (
            ("save", handle["model_weights"])
            if "model_weights" in handle
            else ("save_weights", handle)
        )
        names = _attr_list(root.attrs, "layer_names")
        if names is None:
            hint = (
                " It looks like the Keras 3 weights format (groups 'layers' and 'vars'), which "
                "records no layer names; save the weights with Keras 2 / tf-keras as HDF5 "
                "(model.save_weights('x.h5', save_format='h5'))."
                if "layers" in root and "vars" in root
                else ""
            )
            raise KerasWeightsError(
                f"{path} is HDF5 but not a Keras 2 weight file: no 'layer_names' attribute "
                f"{'under model_weights' if layout == 'save' else 'at the root'}.{hint}"
            )
        found = KerasWeightsFile(
            path=path,
            layout=layout,
            keras_version=_text(root.attrs.get("keras_version", "")),
            backend=_text(root.attrs.get("backend", "")),
        )
        for name in names:
            if name not in root:
                raise KerasWeightsError(
                    f"{path}: layer {name!r} is listed in layer_names but has no group; the file "
                    "is damaged or not written by Keras"
                )
            group = root[name]
            weight_names = _attr_list(group.attrs, "weight_names") or []
            if not weight_names:
                found.weightless.append(name)
                continue
            weights: dict[str, np.ndarray] = {}
            for weight_name in weight_names:
                short = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
                if short in weights:
                    raise KerasWeightsError(
                        f"{path}: layer {name!r} lists two weights named {short!r} ({weight_names})"
                    )
                try:
                    weights[short] = np.asarray(group[weight_name][()])
                except KeyError:
                    raise KerasWeightsError(
                        f"{path}: weight {weight_name!r} of layer {name!r} is listed but missing; "
                        "the file is damaged: download it again"
                    ) from None
            found.layers[name] = weights
    return found


def keras_h5_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A flat ``{"<layer>/<weight>": tensor}`` dict of a Keras HDF5 file, arrays unchanged
    (Keras layouts): a family's ``convert_state_dict`` maps it onto its modules."""
    return read_keras_h5(path).state_dict()
