"""blt-models: recurrent vision models for computational neuroscience, on one clock.

>>> import blt_models as bm
>>> model = bm.create_model("blt_bl")
>>> out = model.forward_timesteps(images, layers=["layer5"])
"""

from ._builder import CheckpointMismatchError, load_checkpoint
from ._clock import ClockedModel, InputError, TimestepOutput, TimestepsError
from ._convert import load_reference_checkpoint
from ._factory import create_model
from ._hub import HashMismatchError, HubUploadError, WeightsUnavailableError
from ._pretrained import PretrainedCfg
from ._published import PublishedFormatError, push_to_hub, save_pretrained
from ._registry import (
    UnknownModelError,
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    list_pretrained_cfgs,
    register_model,
    register_pretrained_cfgs,
)
from .data import create_transform, resolve_data_config
from .extract import (
    ExtractedFeatures,
    ExtractionError,
    NoImagesError,
    OutputMismatchError,
    StepOutOfRangeError,
    UnknownLayerError,
    UnreadableImageError,
    extract_features,
    load_features,
)
from .models import *  # noqa: F403  (registers every family)

__version__ = "0.1.0"

__all__ = [
    "CheckpointMismatchError",
    "ClockedModel",
    "HashMismatchError",
    "HubUploadError",
    "InputError",
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
    "push_to_hub",
    "register_model",
    "register_pretrained_cfgs",
    "save_pretrained",
]

__all__ += [
    "ExtractedFeatures",
    "ExtractionError",
    "NoImagesError",
    "OutputMismatchError",
    "StepOutOfRangeError",
    "UnknownLayerError",
    "UnreadableImageError",
    "create_transform",
    "extract_features",
    "load_features",
    "resolve_data_config",
]
