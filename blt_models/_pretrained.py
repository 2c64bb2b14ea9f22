"""Pretrained configuration records: preprocessing, timing and provenance of a set of weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Fields of [`PretrainedCfg`][blt_models.PretrainedCfg] that describe the built architecture (timm's keys), not a set
#: of weights: recomputed from the model, never written to or read from config.json.
DERIVED_FIELDS = ("fixed_input_size", "min_input_size", "pool_size", "first_conv", "classifier")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Face statistics of the VGGFace2 loader of the BLT reference code.
VGGFACE2_MEAN = (0.6068, 0.4517, 0.3800)
VGGFACE2_STD = (0.2492, 0.2173, 0.2082)

CCN2024_CITATION = (
    "Adeli, H. et al. (2024). Recurrent models optimized for face recognition exhibit "
    "representational dynamics resembling the primate brain. "
    "Conference on Cognitive Computational Neuroscience (CCN 2024)."
)


@dataclass
class PretrainedCfg(Mapping):
    """Everything needed to use one set of weights of one architecture (``arch.tag``).

    A record exists even when no weights are published yet (``has_weights`` is then False), so that
    preprocessing and timing conventions of a training setup are documented in one place.

    Fields are attributes (``cfg.mean``) and, read-only, mapping keys (``cfg["mean"]``,
    ``cfg.get("crop_mode")``, ``"input_size" in cfg``): timm's utilities
    (``timm.data.resolve_data_config(model=m)``, ``create_transform``) read a model's
    ``pretrained_cfg`` as a dict. The keys are the field names; a key that is not a field is
    absent (``cfg.get("test_input_size")`` is None), as in timm's configs.
    """

    architecture: str = ""
    tag: str = ""
    # Where the weights live: at most one of these is set.
    hf_hub_id: str | None = None  # "org/repo"
    hf_hub_filename: str | None = None  # None: the zoo format (model.safetensors + config.json)
    hf_hub_revision: str | None = None  # pinned commit / tag
    url: str | None = None
    file: str | None = None  # path relative to blt_models/weights/, shipped in the package
    sha256: str | None = None  # full hex digest or a prefix (torch.hub convention)
    # Preprocessing.
    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # Output and timing.
    num_classes: int = 1000
    class_names: tuple[str, ...] | None = None
    timesteps: int | None = None
    unroll: str | None = None
    # The presentation the weights were trained with (``Protocol.to_dict()`` of
    # ``blt_models.stimuli``; None: a static image at every step). ``protocol_of(model)``.
    protocol: dict[str, Any] | None = None
    # Constructor arguments that the weights need (e.g. pool="blur"); explicit kwargs override.
    model_args: dict[str, Any] = field(default_factory=dict)
    # Provenance.
    license: str | None = None
    source: str | None = None  # human-readable origin (paper code, lab, training run)
    training_data: str | None = None
    citation: str | None = None
    description: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # timm's architecture keys, derived from the built model by ``create_model`` (never read from
    # or written to config.json; see DERIVED_FIELDS): ``fixed_input_size`` True where the model
    # takes only ``input_size``; ``min_input_size`` the smallest ``(C, H, W)`` it takes;
    # ``pool_size`` the ``(H, W)`` of the map the readout pools at ``input_size``; ``first_conv``
    # and ``classifier`` the dotted names of the first convolution and the classifier.
    fixed_input_size: bool = False
    min_input_size: tuple[int, int, int] | None = None
    pool_size: tuple[int, int] | None = None
    first_conv: str | None = None
    classifier: str | None = None

    # ----------------------------------------------------------------- read-only mapping view
    def __getitem__(self, key: str) -> Any:
        if key not in self._field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    @property
    def has_weights(self) -> bool:
        return bool(self.hf_hub_id or self.url or self.file)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainedCfg:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("input_size", "mean", "std", "class_names", "min_input_size", "pool_size"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> PretrainedCfg:
        return dataclasses.replace(self, **changes)


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in label order, from torchvision's weight metadata."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
