"""How each image's features at one step are reduced before they are stored."""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from ..errors import InvalidArgumentError

__all__ = ["Pooling", "parse_pool", "Pooler"]


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


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"pool: {what} must be an integer; got {value!r}")
    return value


def parse_pool(pool: Any) -> Pooling:
    """A [`Pooling`][blt_models.extract.Pooling] from None, ``"none"``, ``"avg"``, an int width, ``"random:W[:seed]"``,
    a tuple ``("random", W[, seed])``, a dict or a [`Pooling`][blt_models.extract.Pooling].

    Raises:
        InvalidArgumentError: anything else (also a ``ValueError``).
    """
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
            raise InvalidArgumentError(
                f"pool {pool!r}: expected 'random:WIDTH' or 'random:WIDTH:SEED'"
            ) from None
        spec = Pooling("random", width, seed)
    elif isinstance(pool, (tuple, list)) and pool and pool[0] in ("random", "rp"):
        spec = Pooling(
            "random", _int(pool[1], "the width"), _int(pool[2], "the seed") if len(pool) > 2 else 0
        )
    elif isinstance(pool, dict):
        try:
            spec = Pooling(**pool)
        except TypeError as err:
            raise InvalidArgumentError(f"pool {pool!r}: {err}") from None
    else:
        raise InvalidArgumentError(
            f"pool must be None, 'avg', an int width or 'random:WIDTH[:SEED]'; got {pool!r}"
        )
    if spec.kind not in ("none", "avg", "random"):
        raise InvalidArgumentError(
            f"pool kind must be 'none', 'avg' or 'random'; got {spec.kind!r}"
        )
    if spec.kind == "random":
        width = cast(Any, spec.width)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise InvalidArgumentError(
                f"a random projection needs a positive integer width; got {width!r}"
            )
        _int(spec.seed, "the seed")
    return spec


class Pooler:
    """Applies a [`Pooling`][blt_models.extract.Pooling] to batch-major ``[B, S, ...]`` features of one layer."""

    def __init__(self, spec: Pooling) -> None:
        self.spec = spec
        self._proj: dict[str, Tensor] = {}

    @property
    def identity(self) -> bool:
        return self.spec.kind == "none"

    def stored_shape(self, layer: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-image, per-step stored shape of a layer whose maps are ``shape`` (``C, H, W``).

        Raises:
            InvalidArgumentError: a random projection wider than the layer (it would add no
                information, only size).
        """
        if self.spec.kind == "none":
            return shape
        if self.spec.kind == "avg":
            return shape[:1] if len(shape) == 3 else shape
        dim = math.prod(shape)
        width = int(self.spec.width)  # type: ignore[arg-type]
        if width > dim:
            raise InvalidArgumentError(
                f"pool: a random projection to {width} values is wider than layer {layer!r} "
                f"({dim} values per step, shape {list(shape)}); use a width <= {dim}, "
                "pool='avg', or pool=None for the full maps"
            )
        return (width,)

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
        """``[B, S, C, H, W]`` -> ``[B, S, *stored_shape]``."""
        kind = self.spec.kind
        if kind == "none":
            return x
        if kind == "avg":
            return x.mean(dim=(-2, -1)) if x.ndim == 5 else x
        b, s = x.shape[:2]
        flat = x.reshape(b * s, -1)
        proj = self.projection(layer, flat.shape[1], flat.device)
        out = torch.sparse.mm(proj, flat.float().t()).t()
        return out.reshape(b, s, -1)
