"""The result type of extraction: features ``[N, S, ...]`` with their steps, ids and provenance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["ExtractedFeatures"]

#: Classes a summary names before "... (N more)".
SUMMARY_CLASSES = 6


def class_summary(labels: Iterable[Any]) -> str:
    """``"2 classes (cats 40, dogs 38)"``: the classes of some labels, sorted, with their counts,
    so a repr shows which labels an analysis used (``train, val`` where classes were meant)."""
    counts = sorted(Counter(str(label) for label in labels).items())
    shown = [f"{name} {count}" for name, count in counts[:SUMMARY_CLASSES]]
    if len(counts) > SUMMARY_CLASSES:
        shown.append(f"... ({len(counts) - SUMMARY_CLASSES} more)")
    return f"{len(counts)} {'class' if len(counts) == 1 else 'classes'} ({', '.join(shown)})"


@dataclass
class ExtractedFeatures:
    """Features of ``N`` images at ``S`` steps.

    Attributes:
        features: ``{layer: Tensor [N, S, ...]}``; ``...`` is ``C, H, W`` unpooled, ``C`` with
            ``pool="avg"``, ``width`` with a random projection. Results backed by a file
            (``extract_features(..., out=...)``, ``load_features(..., lazy=True)``) hold
            [`LazyFeatures`][blt_models.extract.LazyFeatures] instead, which read on indexing (numpy
            semantics); ``.load()`` reads them all.
        steps: ``LongTensor [S]``, the clock step of each index of dimension 1.
        first_step: ``{layer: int}``, the first clock step at which the layer is active; at
            earlier steps its features are zeros (as ``forward_timesteps`` documents).
        image_ids: ``N`` strings (relative paths for a folder, the paths for a list, indices
            otherwise), in row order.
        labels: (property) the class of each image from its subfolder, for a folder source.
        metadata: model, weights, preprocessing, pooling, source and library provenance (see
            ``docs/extraction.md``).
    """

    features: dict[str, Any]
    steps: Tensor
    first_step: dict[str, int]
    image_ids: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, layer: str) -> Any:
        return self.features[layer]

    @property
    def layers(self) -> list[str]:
        return list(self.features)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def load(self) -> ExtractedFeatures:
        """A copy with every layer in memory (reads the layers of a file-backed result)."""
        feats = {k: v if isinstance(v, Tensor) else v.load() for k, v in self.features.items()}
        return ExtractedFeatures(
            feats, self.steps, dict(self.first_step), list(self.image_ids), dict(self.metadata)
        )

    @property
    def labels(self) -> list[str] | None:
        """Class of each image from its subfolder: for a folder source (one subfolder per class),
        the first folder of each image id (``"cats/001.jpg"`` -> ``"cats"``; deeper folders
        belong to their top one). None for other sources, and when an image lies directly in
        the folder (no class). The analysis functions use these when no labels are given."""
        source = self.metadata.get("source") or {}
        if source.get("kind") != "folder":
            return None
        parts = [str(i).split("/", 1) for i in self.image_ids]
        if not parts or any(len(p) < 2 for p in parts):
            return None
        return [p[0] for p in parts]

    def active(self, layer: str) -> Tensor:
        """``BoolTensor [S]``: True where ``layer`` is active at that step."""
        return self.steps >= self.first_step[layer]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {list(v.shape)}" for k, v in self.features.items())
        labels = self.labels
        classes = "" if labels is None else f", labels={class_summary(labels)} from subfolders"
        return (
            f"ExtractedFeatures(num_images={self.num_images}, steps={self.steps.tolist()}, "
            f"features={{{shapes}}}{classes})"
        )
