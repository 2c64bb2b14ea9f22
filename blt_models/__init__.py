"""blt-models: recurrent vision models for computational neuroscience, on one clock.

>>> import blt_models as bm
>>> model = bm.create_model("blt_bl")
>>> out = model.forward_timesteps(images, layers=["layer5"])

``import blt_models`` itself is cheap (no torch): the public names below load on first use
(PEP 562 module ``__getattr__``), so the ``blt-models`` command answers ``--help`` at once. The
first of them imports torch and registers every model family.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from ._version import __version__
from .errors import (
    BltModelsError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    ConfigValueError,
    ConvRNNCheckpointError,
    ExtractionError,
    HashMismatchError,
    HubUploadError,
    InputError,
    InvalidWeightsError,
    KerasWeightsError,
    MissingExtraError,
    NoImagesError,
    OutputMismatchError,
    PartialHookWarning,
    PublishedFormatError,
    SaveTargetError,
    StepOutOfRangeError,
    StimulusError,
    TimestepsError,
    UnknownLayerError,
    UnknownModelError,
    UnreadableCheckpointError,
    UnreadableImageError,
    UnsupportedError,
    UnverifiedWeightsWarning,
    WeightsUnavailableError,
)

if TYPE_CHECKING:  # the names _LAZY loads, for type checkers and IDEs
    from ._checkpoint import load_checkpoint
    from ._clock import ClockedModel, Connection, TimestepOutput
    from ._convert import convert_convrnn_checkpoint, load_reference_checkpoint
    from ._convert_rcnn_sat import convert_rcnn_sat_h5
    from ._factory import create_model
    from ._pretrained import PretrainedCfg
    from ._published import push_to_hub, save_pretrained
    from ._registry import (
        get_pretrained_cfg,
        is_model,
        list_models,
        list_pretrained,
        list_pretrained_cfgs,
        register_model,
        register_pretrained_cfgs,
    )
    from .data import create_transform, resolve_data_config
    from .extract import ExtractedFeatures, extract_features, load_features

#: Public name -> the submodule that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "load_checkpoint": "_checkpoint",
    "ClockedModel": "_clock",
    "Connection": "_clock",
    "TimestepOutput": "_clock",
    "load_reference_checkpoint": "_convert",
    "convert_rcnn_sat_h5": "_convert_rcnn_sat",
    "convert_convrnn_checkpoint": "_convert",
    "create_model": "_factory",
    "PretrainedCfg": "_pretrained",
    "push_to_hub": "_published",
    "save_pretrained": "_published",
    "get_pretrained_cfg": "_registry",
    "is_model": "_registry",
    "list_models": "_registry",
    "list_pretrained": "_registry",
    "list_pretrained_cfgs": "_registry",
    "register_model": "_registry",
    "register_pretrained_cfgs": "_registry",
    "create_transform": "data",
    "resolve_data_config": "data",
    "ExtractedFeatures": "extract",
    "extract_features": "extract",
    "load_features": "extract",
}
#: Submodules reachable as attributes (``bm.analysis``, ``bm.models``...).
_SUBMODULES = ("analysis", "data", "demo", "extract", "models", "stimuli")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        importlib.import_module(".models", __name__)  # registers every family, once
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later accesses skip __getattr__
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'blt_models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "BltModelsError",
    "CheckpointMismatchError",
    "ClockedModel",
    "Connection",
    "HashMismatchError",
    "HubUploadError",
    "InputError",
    "KerasWeightsError",
    "MissingExtraError",
    "PretrainedCfg",
    "PublishedFormatError",
    "TimestepOutput",
    "TimestepsError",
    "UnknownModelError",
    "WeightsUnavailableError",
    "create_model",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_pretrained",
    "list_pretrained_cfgs",
    "load_checkpoint",
    "load_reference_checkpoint",
    "convert_rcnn_sat_h5",
    "push_to_hub",
    "register_model",
    "register_pretrained_cfgs",
    "save_pretrained",
]

__all__ += [
    "CheckpointNotFoundError",
    "ConfigValueError",
    "InvalidWeightsError",
    "SaveTargetError",
    "UnreadableCheckpointError",
    "UnverifiedWeightsWarning",
]

__all__ += [
    "ExtractedFeatures",
    "ExtractionError",
    "NoImagesError",
    "OutputMismatchError",
    "StepOutOfRangeError",
    "UnknownLayerError",
    "UnreadableImageError",
    "__version__",
    "create_transform",
    "errors",
    "extract_features",
    "load_features",
    "resolve_data_config",
]

__all__ += ["StimulusError", "stimuli"]

__all__ += ["ConvRNNCheckpointError", "convert_convrnn_checkpoint"]
__all__ += ["PartialHookWarning", "UnsupportedError"]
