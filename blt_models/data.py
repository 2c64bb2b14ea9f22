"""Preprocessing from a model's pretrained config: ``resolve_data_config`` / ``create_transform``.

Thin wrappers over timm's functions of the same names that understand this package's
[`PretrainedCfg`][blt_models.PretrainedCfg] records and grayscale models:

>>> cfg = resolve_data_config(model)            # input_size, interpolation, mean, std, crop_pct...
>>> transform = create_transform(cfg)           # PIL image -> normalised [C, H, W] tensor
>>> x = transform(PIL.Image.open("stim.png")).unsqueeze(0)

The transform converts every image to the model's colour mode first (``"L"`` for one input
channel, ``"RGB"`` for three), so grayscale stimuli work with RGB models and vice versa.
"""

from __future__ import annotations

from dataclasses import is_dataclass
from typing import Any

__all__ = ["resolve_data_config", "create_transform", "ConvertMode"]

_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def _cfg_dict(model_or_cfg: Any) -> dict[str, Any]:
    """A plain dict from a model, a PretrainedCfg, a dict or None."""
    cfg = getattr(model_or_cfg, "pretrained_cfg", model_or_cfg)
    if cfg is None:
        cfg = {}
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    elif is_dataclass(cfg) and not isinstance(cfg, type):
        import dataclasses

        cfg = dataclasses.asdict(cfg)
    if not isinstance(cfg, dict):
        raise TypeError(
            f"expected a model, a PretrainedCfg or a dict; got {type(model_or_cfg).__name__}"
        )
    return dict(cfg)


def resolve_data_config(model_or_cfg: Any = None, **overrides: Any) -> dict[str, Any]:
    """The evaluation preprocessing of a model (or a pretrained config), in timm's format.

    Args:
        model_or_cfg: a zoo model (its ``pretrained_cfg`` and ``in_chans`` are used), a
            [`PretrainedCfg`][blt_models.PretrainedCfg], a dict in timm's format, or None (defaults).
        **overrides: any of ``input_size`` (``(C, H, W)``), ``img_size`` (int), ``in_chans``,
            ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``; they win.

    Returns:
        ``{"input_size": (C, H, W), "interpolation", "mean", "std", "crop_pct", "crop_mode"}``.
        ``mean``/``std`` have one entry per input channel: three-channel statistics of a
        one-channel model are averaged (the luminance of the RGB statistics).
    """
    from timm.data import resolve_data_config as timm_resolve

    cfg = _cfg_dict(model_or_cfg)
    in_chans = overrides.get("in_chans", getattr(model_or_cfg, "in_chans", None))
    if in_chans is not None and cfg.get("input_size") is not None:
        cfg["input_size"] = (int(in_chans), *tuple(cfg["input_size"])[1:])
    if "in_chans" not in overrides and "input_size" not in overrides and "img_size" in overrides:
        overrides["in_chans"] = (cfg.get("input_size") or (3,))[0]
    unknown = set(overrides) - {*_DATA_KEYS, "img_size", "in_chans"}
    if unknown:
        raise TypeError(
            f"unknown data config override(s): {', '.join(sorted(unknown))} "
            f"(known: {', '.join(_DATA_KEYS)}, img_size, in_chans)"
        )
    data = timm_resolve(args=overrides, pretrained_cfg=cfg)
    data["input_size"] = tuple(int(v) for v in data["input_size"])
    chans = data["input_size"][0]
    for key in ("mean", "std"):
        value = tuple(float(v) for v in data[key])
        if len(value) != chans:
            if len(value) == 1:
                value = value * chans
            elif chans == 1:
                value = (sum(value) / len(value),)
            else:
                raise ValueError(
                    f"{key} has {len(value)} entries but the input has {chans} channel(s)"
                )
        data[key] = value
    return data


class ConvertMode:
    """Convert a PIL image to a mode (``"L"``, ``"RGB"``); tensors pass through unchanged."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Any) -> Any:
        if hasattr(img, "convert") and getattr(img, "mode", self.mode) != self.mode:
            return img.convert(self.mode)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def create_transform(config_or_model: Any = None, **overrides: Any) -> Any:
    """Evaluation transform (PIL image -> normalised tensor ``[C, H, W]``) of a model or config.

    Args:
        config_or_model: a dict from [`resolve_data_config`][blt_models.resolve_data_config], a zoo model, or a
            [`PretrainedCfg`][blt_models.PretrainedCfg] (resolved with [`resolve_data_config`][blt_models.resolve_data_config]).
        **overrides: data config overrides, as for [`resolve_data_config`][blt_models.resolve_data_config].

    The pipeline is timm's evaluation transform (resize to ``size / crop_pct``, centre crop to
    ``size``, to tensor, normalise) preceded by ``ConvertMode`` to the model's colour mode.
    """
    from timm.data import create_transform as timm_create
    from torchvision import transforms

    if isinstance(config_or_model, dict) and "input_size" in config_or_model and not overrides:
        data = dict(config_or_model)  # already resolved
    else:
        data = resolve_data_config(config_or_model, **overrides)
    chans = int(data["input_size"][0])
    if chans not in (1, 3):
        raise ValueError(f"images can be converted to 1 or 3 channels; the model takes {chans}")
    tf = timm_create(
        input_size=tuple(data["input_size"]),
        is_training=False,
        interpolation=data.get("interpolation", "bilinear"),
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        crop_pct=data.get("crop_pct"),
        crop_mode=data.get("crop_mode"),
    )
    steps = list(tf.transforms) if isinstance(tf, transforms.Compose) else [tf]
    return transforms.Compose([ConvertMode("L" if chans == 1 else "RGB"), *steps])
