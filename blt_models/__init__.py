"""blt-models: recurrent vision models for computational neuroscience, on one clock.

>>> import blt_models as bm
>>> model = bm.create_model("blt_bl")
>>> out = model.forward_timesteps(images, layers=["layer5"])
"""

from . import errors, stimuli
from ._builder import load_checkpoint
from ._clock import ClockedModel, TimestepOutput
from ._convert import load_reference_checkpoint
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
from ._version import __version__
from .data import create_transform, resolve_data_config
from .errors import (
    BltModelsError,
    CheckpointMismatchError,
    ExtractionError,
    HashMismatchError,
    HubUploadError,
    InputError,
    NoImagesError,
    OutputMismatchError,
    PublishedFormatError,
    StepOutOfRangeError,
    StimulusError,
    TimestepsError,
    UnknownLayerError,
    UnknownModelError,
    UnreadableImageError,
    WeightsUnavailableError,
)
from .extract import (
    ExtractedFeatures,
    extract_features,
    load_features,
)
from .models import *  # noqa: F403  (registers every family)

__all__ = [
    "BltModelsError",
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
    "__version__",
    "create_transform",
    "errors",
    "extract_features",
    "load_features",
    "resolve_data_config",
]

__all__ += ["StimulusError", "stimuli"]
