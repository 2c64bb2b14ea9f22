"""Preprocessing from a model's pretrained config (timm-style ``resolve_data_config`` / ``create_transform``)."""

from __future__ import annotations

from typing import Any

from torchvision import transforms

from ._pretrained import PretrainedCfg

__all__ = ["resolve_data_config", "create_transform"]


def resolve_data_config(model_or_cfg: Any = None, **overrides: Any) -> dict[str, Any]:
    """``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct`` of a model or config."""
    cfg = getattr(model_or_cfg, "pretrained_cfg", model_or_cfg)
    if not isinstance(cfg, PretrainedCfg):
        cfg = PretrainedCfg()
    config = {
        "input_size": tuple(cfg.input_size),
        "interpolation": cfg.interpolation,
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
        "crop_pct": cfg.crop_pct,
    }
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def create_transform(model_or_config: Any = None, **overrides: Any) -> transforms.Compose:
    """PIL image -> normalised tensor ``[C, H, W]`` for evaluation.

    Resize (shorter side to ``size / crop_pct``), centre crop to ``input_size``, convert to the
    model's channel count (grayscale or RGB), scale to [0, 1] and normalise by mean/std.
    """
    config = model_or_config if isinstance(model_or_config, dict) else resolve_data_config(model_or_config)
    config = {**config, **overrides}
    channels, height, width = config["input_size"]
    crop_pct = config.get("crop_pct") or 1.0
    mode = transforms.InterpolationMode(config["interpolation"])
    resize = int(round(min(height, width) / crop_pct))
    mean, std = config["mean"], config["std"]
    if len(mean) != channels:
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return transforms.Compose(
        [
            transforms.Lambda(lambda img: img.convert("L" if channels == 1 else "RGB")),
            transforms.Resize(resize, interpolation=mode),
            transforms.CenterCrop((height, width)),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
