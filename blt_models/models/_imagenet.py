"""ImageNet-1k metadata shared by the families whose weights were trained on it."""

from __future__ import annotations

from torchvision.models import ResNet50_Weights

__all__ = ["IMAGENET_CLASS_NAMES"]

#: The 1000 ImageNet-1k class names in label order (torchvision's weight metadata).
IMAGENET_CLASS_NAMES: tuple[str, ...] = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
