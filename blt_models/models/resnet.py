"""ResNet-50, the feed-forward baseline of the BLT paper, on the zoo's clock.

The architecture is torchvision's ``resnet50`` (v1.5: stride on the 3x3 convolution), built by
torchvision itself; module and state-dict names are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1``, ``fc``...), so torchvision's ImageNet weights load as they are. The BLT
reference code's ResNet-50 is the same network under other names (``basic_conv``, ``stage_k``,
``classifier``); [`ResNet.convert_state_dict`][blt_models.models.resnet.ResNet.convert_state_dict] maps its checkpoints onto torchvision's names.
Unlike the reference, ``num_classes`` sets the width of the head.

Time: feed-forward, one clock step with one readout; features ``stem`` (after the max pool),
``layer1`` .. ``layer4``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import torch
import torchvision
from torch import Tensor, nn

from .._clock import ClockedModel, Step
from .._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, imagenet_class_names
from .._registry import register_model, register_pretrained_cfgs

__all__ = ["ResNet", "reference_resnet_to_torchvision"]

RESNET_LAYERS = ("stem", "layer1", "layer2", "layer3", "layer4")

# BLT reference key -> torchvision key, applied in order.
_REFERENCE_KEY_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^basic_conv\.0\."), "conv1."),
    (re.compile(r"^basic_conv\.1\."), "bn1."),
    (re.compile(r"^stage_(\d+)\."), r"layer\1."),
    (re.compile(r"\.conv(\d)\.0\."), r".conv\1."),
    (re.compile(r"\.conv(\d)\.1\."), r".bn\1."),
    (re.compile(r"\.shortcut\."), ".downsample."),
    (re.compile(r"^classifier\."), "fc."),
)


def _is_reference_layout(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith(("basic_conv.", "stage_", "classifier.")) for k in state_dict)


def reference_resnet_to_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of a BLT-reference ResNet state dict to torchvision's names.

    ``basic_conv.0/1`` -> ``conv1/bn1``, ``stage_k`` -> ``layerk``, ``.convN.0/1`` -> ``.convN/.bnN``,
    ``.shortcut.0/1`` -> ``.downsample.0/1``, ``classifier`` -> ``fc``. Other keys are kept.
    """
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _REFERENCE_KEY_RULES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


class ResNet(ClockedModel):
    """torchvision's ResNet-50 (or -101) as a one-step clocked model.

    Args:
        num_classes: width of ``fc`` (1000 for the ImageNet weights).
        in_chans: input channels; other than 3 replaces ``conv1`` (fresh init).
        timesteps: must be 1 (or None): the network is feed-forward.
        depth: 50 (registered as ``resnet50``) or 101.

    Shapes: ``[B, in_chans, H, W]`` -> ``[B, num_classes]``; features ``stem`` (64 ch, H/4),
    ``layer1`` (256, H/4), ``layer2`` (512, H/8), ``layer3`` (1024, H/16), ``layer4`` (2048, H/32).
    A fresh model has torchvision's initialisation (the reference used kaiming fan-in).
    """

    classifier_name = "fc"
    first_conv_name = "conv1"
    hookable_layers = frozenset(RESNET_LAYERS[1:])
    feedforward = True
    # torchvision's modules, added in __init__ (declared for type checkers).
    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    maxpool: nn.MaxPool2d
    avgpool: nn.AdaptiveAvgPool2d
    fc: nn.Linear
    layer_aliases = {  # noqa: RUF012  (reference and torchvision module names)
        "basic_conv": "stem",
        "maxpool": "stem",
        "stage_1": "layer1",
        "stage_2": "layer2",
        "stage_3": "layer3",
        "stage_4": "layer4",
    }

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, timesteps: int | None = 1, depth: int = 50
    ) -> None:
        super().__init__()
        builders = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
        if depth not in builders:
            raise ValueError(f"depth must be one of {sorted(builders)}; got {depth!r}")
        self.depth = depth
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.timesteps = 1
        self._resolve_timesteps(timesteps)
        net = builders[depth](weights=None, num_classes=num_classes or 1)
        if num_classes == 0:  # timm's convention: no classifier, forward gives pooled features
            net.fc = self._make_classifier(net.fc.in_features, 0)
        if in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        # torchvision's modules, in its order: the state dict is torchvision's.
        for name, module in net.named_children():
            self.add_module(name, module)

    # ----------------------------------------------------------------------------- clock protocol
    @property
    def layer_names(self) -> tuple[str, ...]:
        return RESNET_LAYERS

    def _display_name(self) -> str:
        return super()._display_name() if self.pretrained_cfg is not None else f"resnet{self.depth}"

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        features = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if "stem" in capture:
            features["stem"] = x
        for name in RESNET_LAYERS[1:]:
            x = getattr(self, name)(x)
            if name in capture:
                features[name] = x
        logits = self.fc(torch.flatten(self.avgpool(x), 1)) if 0 in readouts else None
        yield Step(0, features, logits)

    # ----------------------------------------------------------------------------- weights
    def convert_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Accept torchvision's key layout as is and map the BLT reference layout onto it."""
        if _is_reference_layout(state_dict):
            return reference_resnet_to_torchvision(state_dict)
        return dict(state_dict)

    def extra_repr(self) -> str:
        return f"depth={self.depth}"


# --------------------------------------------------------------------------------- configs
RESNET_CITATION = (
    "He, K., Zhang, X., Ren, S. and Sun, J. (2016). Deep Residual Learning for Image Recognition. "
    "CVPR 2016."
)


def _resnet_cfgs() -> list[PretrainedCfg]:
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1
    return [
        PretrainedCfg(
            architecture="resnet50",
            tag="tv_in1k",
            url=weights.url,
            sha256="0676ba61",  # the digits in the file name (torch.hub convention)
            input_size=(3, 224, 224),
            crop_pct=0.875,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            num_classes=1000,
            class_names=imagenet_class_names(),
            timesteps=1,
            license="BSD-3-Clause (torchvision)",
            source="torchvision ResNet50_Weights.IMAGENET1K_V1",
            training_data="ImageNet-1k",
            citation=RESNET_CITATION,
            metrics={"imagenet_top1": 76.13, "imagenet_top5": 92.862},
        )
    ]


@register_model
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 v1.5 (torchvision's architecture; the BLT reference's ``ResNet()``)."""
    return ResNet(depth=50, **kwargs)


register_pretrained_cfgs(_resnet_cfgs())
