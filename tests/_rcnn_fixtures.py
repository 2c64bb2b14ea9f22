"""The rcnn-sat parity fixtures: load them, and rebuild their Keras HDF5 weight files with h5py.

``tests/fixtures/rcnn/{variant}.npz`` is written by ``tests/fixtures/rcnn/make_fixtures.py`` with
the real Keras code (``scripts/make_rcnn_fixtures.sh``). Each holds the layout of the two HDF5
files Keras wrote (``model.save_weights`` and ``model.save``) as JSON plus their arrays; this
module (numpy + h5py only, also imported by the generator) dumps such a file and writes it back.
The generator checks that ``dump(write(dump(keras_file))) == dump(keras_file)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "rcnn"
VARIANTS = ("b", "b_k", "b_f", "b_d", "bl")
LAYOUTS = ("save_weights", "save")


def _encode_attr(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if isinstance(value, bytes):
        return {"t": "bytes", "v": value.decode("utf-8")}
    if isinstance(value, np.ndarray) and value.dtype == object:
        kinds = {type(v).__name__ for v in value.ravel()}
        return {
            "t": "vlen",
            "kind": "bytes" if kinds == {"bytes"} else "str",
            "v": [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.ravel()],
        }
    if isinstance(value, np.ndarray) and value.dtype.kind == "S":
        return {"t": "fixed", "dtype": value.dtype.str, "shape": list(value.shape),
                "v": [v.decode("utf-8") for v in value.ravel()]}  # fmt: skip
    array = np.asarray(value)
    return {"t": "array" if isinstance(value, np.ndarray) else "scalar",
            "dtype": array.dtype.str, "shape": list(array.shape), "v": array.ravel().tolist()}  # fmt: skip


def _decode_attr(spec: dict[str, Any]) -> Any:
    import h5py

    t = spec["t"]
    if t == "str":
        return spec["v"]
    if t == "bytes":
        return np.bytes_(spec["v"].encode("utf-8"))
    if t == "vlen":
        kind = bytes if spec["kind"] == "bytes" else str
        data = [v.encode("utf-8") if kind is bytes else v for v in spec["v"]]
        return np.array(data, dtype=h5py.string_dtype("utf-8" if kind is str else "ascii"))
    if t == "fixed":
        return np.array([v.encode("utf-8") for v in spec["v"]], dtype=spec["dtype"]).reshape(
            spec["shape"]
        )
    array = np.array(spec["v"], dtype=spec["dtype"]).reshape(spec["shape"])
    return array if t == "array" else array[()]


def dump_h5(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every group and dataset of an HDF5 file with its attributes (JSON-able), and the arrays."""
    import h5py

    layout: dict[str, Any] = {"groups": {}, "datasets": {}}
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        layout["groups"][""] = {k: _encode_attr(v) for k, v in handle.attrs.items()}

        def visit(name: str, obj: Any) -> None:
            attrs = {k: _encode_attr(v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                layout["datasets"][name] = {"attrs": attrs, "dtype": obj.dtype.str}
                arrays[name] = obj[()]
            else:
                layout["groups"][name] = attrs

        handle.visititems(visit)
    return layout, arrays


def write_h5(
    path: str | os.PathLike[str], layout: dict[str, Any], arrays: dict[str, np.ndarray]
) -> Path:
    """Write the HDF5 file that ``dump_h5`` described."""
    import h5py

    with h5py.File(path, "w") as handle:
        for name in sorted(layout["groups"], key=lambda n: n.count("/") if n else -1):
            group = handle if name == "" else handle.require_group(name)
            for key, spec in layout["groups"][name].items():
                group.attrs[key] = _decode_attr(spec)
        for name, spec in layout["datasets"].items():
            dataset = handle.create_dataset(name, data=arrays[name].astype(spec["dtype"]))
            for key, attr in spec["attrs"].items():
                dataset.attrs[key] = _decode_attr(attr)
    return Path(path)


def pack_h5(path: str | os.PathLike[str], layout_name: str) -> dict[str, np.ndarray]:
    """npz entries holding the file at ``path`` (``h5:<layout>`` JSON + ``w:<layout>:<path>``)."""
    layout, arrays = dump_h5(path)
    out = {f"h5:{layout_name}": np.array(json.dumps(layout, sort_keys=True))}
    out.update({f"w:{layout_name}:{k}": v for k, v in arrays.items()})
    return out


def load(variant: str) -> dict[str, Any]:
    """The fixture of ``variant`` as a dict of numpy arrays (``meta`` decoded)."""
    with np.load(FIXTURES / f"{variant}.npz") as data:
        out = {k: data[k] for k in data.files}
    with np.load(FIXTURES / "images.npz") as data:
        out["images"] = data["images"]
    out["meta"] = json.loads(str(out["meta"]))
    return out


def write_keras_file(
    fixture: dict[str, Any], layout_name: str, path: str | os.PathLike[str]
) -> Path:
    """Rebuild the Keras HDF5 file (``"save_weights"`` or ``"save"`` layout) of a fixture."""
    layout = json.loads(str(fixture[f"h5:{layout_name}"]))
    prefix = f"w:{layout_name}:"
    arrays = {k[len(prefix) :]: v for k, v in fixture.items() if k.startswith(prefix)}
    if f"h5:{layout_name}:arrays" in fixture:  # paths whose arrays are stored under another name
        same = json.loads(str(fixture[f"h5:{layout_name}:arrays"]))
        arrays.update({path: fixture[twin] for path, twin in same.items()})
    return write_h5(path, layout, arrays)
