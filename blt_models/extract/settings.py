"""The settings a feature file is checked against before it is resumed, reused or joined."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RESUME_KEYS", "SHARED_KEYS", "differing"]

# Settings that must agree for a file to be resumed or reused.
RESUME_KEYS = (
    "format_version", "model", "pretrained", "weights_sha256", "timesteps", "steps", "layers",
    "pool", "dtype", "compute_dtype", "data_config", "transform", "first_input", "source",
    "n_images", "feature_shapes", "stimulus", "shard",
)  # fmt: skip

# Settings a shard must share with the join of all shards (its rows, source details and number
# of images are its own).
SHARED_KEYS = tuple(k for k in RESUME_KEYS if k not in ("source", "n_images", "shard"))

_WHAT = {
    "first_input": "first_input: the first image as the model sees it after preprocessing (another "
    "transform, or that image changed)",
    "compute_dtype": "compute_dtype: the dtype the convolutions ran in",
    "transform": "transform: the custom transform= (as its repr)",
    "weights_sha256": "weights_sha256: the weights",
}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """None if ``old`` and ``new`` agree on ``keys``, else the keys that differ, described."""
    differ = [k for k in keys if _json(old.get(k)) != _json(new.get(k))]
    return "; ".join(_WHAT.get(k, k) for k in differ) + " differ" if differ else None
