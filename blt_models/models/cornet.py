"""CORnet Z / S / R / RT (Kubilius et al.), the baselines of the BLT paper, on the zoo's clock.

Re-implemented from the published description of the official code (github.com/dicarlolab/CORnet);
module and state-dict names are the official ones (``V1.conv_input``, ``IT.norm1_1``,
``decoder.linear``...), so the official weight files load once their DataParallel ``module.``
prefix is removed (which the loader does). Given the same weights, ``model(x)`` is the official
output.

Departures from the official code that do not change any output at 224 px: map sizes are derived
from the input (the official R/RT hard-code 224 px zero maps), tensors are created on the input's
device (no ``.cuda()``), every model takes ``in_chans`` and ``num_classes``, and CORnet-S's strided
first inner step passes the stride to the convolution instead of mutating ``conv2.stride``.

Time on the zoo's clock:

* **CORnet-Z**: feed-forward, one step, one readout.
* **CORnet-R / RT**: ``timesteps`` is the official ``times`` (default 5; the weights were trained
  with 5). Every step carries a readout (the decoder applied to IT at that step); the readout at
  the last step is the official output. At step 0 only V1 gets the image; V2, V4 and IT start from
  a zero drive, so their step-0 output is ``ReLU(norm1.bias)`` everywhere. RT updates the areas
  synchronously (each area reads the area below at the previous step): V1, V2, V4, IT first
  carry image information at steps 0, 1, 2, 3, and RT's readouts at steps 0-2 are the same for
  every image. R updates the areas in order within a step (V2 at step t reads V1's step-t output):
  V1 at step 0, V2, V4 and IT from step 1. Features before an area's ``first_step`` are the
  computed, image-independent values.
* **CORnet-S**: see [`CORnetS`][blt_models.models.cornet.CORnetS] (one clock step per inner step, areas in sequence).

Sequences ``[T, B, C, H, W]``: frame ``t`` is V1's input at step ``t`` (R / RT), or one sweep per
frame (Z). CORnet-S refuses them: its image enters only at step 0 (see ``arrival_steps``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from .._clock import ClockedModel, Connection, InputStage, Step
from .._pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedCfg, imagenet_class_names
from .._registry import register_model, register_pretrained_cfgs
from ..errors import InputError

__all__ = ["CORnetZ", "CORnetS", "CORnetR", "CORnetRT", "CORNET_AREAS"]

CORNET_AREAS = ("V1", "V2", "V4", "IT")
# Widths of the four areas (V1 -> IT) in every variant.
_WIDTHS = (64, 128, 256, 512)


def _conv_out(side: int, kernel: int, stride: int, padding: int) -> int:
    return (side + 2 * padding - kernel) // stride + 1


def _decoder(in_features: int, num_classes: int, with_output: bool) -> nn.Sequential:
    # num_classes=0: no classifier, the decoder returns the pooled IT features (timm's convention).
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        avgpool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        linear=ClockedModel._make_classifier(in_features, num_classes),
    )
    if with_output:
        layers["output"] = nn.Identity()
    return nn.Sequential(layers)


# --------------------------------------------------------------------------------- blocks
class CORblockZ(nn.Module):
    """Conv (bias) -> ReLU -> MaxPool(3, 2, 1) -> ``output``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)
        self.nonlin = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.output = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.pool(self.nonlin(self.conv(x))))


class CORblockR(nn.Module):
    """One recurrent area of CORnet-R / RT.

    ``drive = ReLU(norm_input(conv_input(inp)))`` (a zero map when there is no input), then
    ``out = ReLU(norm1(conv1(drive + state)))``; ``out`` is also the new state.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_input = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2
        )
        self.norm_input = nn.GroupNorm(32, out_channels)
        self.nonlin_input = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm1 = nn.GroupNorm(32, out_channels)
        self.nonlin1 = nn.ReLU(inplace=True)
        self.output = nn.Identity()

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Map size of this area for an input map of ``height x width``."""
        conv = self.conv_input
        k, s, p = conv.kernel_size[0], conv.stride[0], int(conv.padding[0])
        return _conv_out(height, k, s, p), _conv_out(width, k, s, p)

    def drive(self, inp: Tensor) -> Tensor:
        return self.nonlin_input(self.norm_input(self.conv_input(inp)))

    def update(self, drive: Tensor, state: Tensor | None) -> Tensor:
        x = drive if state is None else drive + state
        return self.output(self.nonlin1(self.norm1(self.conv1(x))))

    def forward(
        self,
        inp: Tensor | None = None,
        state: Tensor | None = None,
        zero_like: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Official-style call: ``(output, new_state)``. With ``inp=None`` the drive is a zero map
        of this area's size; ``zero_like`` (the input of the area below, or the image for V1
        sizes) gives batch, size, dtype and device."""
        if inp is None:
            if zero_like is None:
                raise ValueError(
                    "without an input, pass zero_like= (the tensor this area would get)"
                )
            h, w = self.output_size(int(zero_like.shape[-2]), int(zero_like.shape[-1]))
            drive = zero_like.new_zeros((zero_like.shape[0], self.out_channels, h, w))
        else:
            drive = self.drive(inp)
        out = self.update(drive, state)
        return out, out


class CORblockS(nn.Module):
    """CORnet-S bottleneck area with ``times`` inner steps and per-step BatchNorms (scale 4)."""

    scale = 4

    def __init__(self, in_channels: int, out_channels: int, times: int = 1) -> None:
        super().__init__()
        self.times = times
        mid = out_channels * self.scale
        self.conv_input = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.skip = nn.Conv2d(out_channels, out_channels, 1, stride=2, bias=False)
        self.norm_skip = nn.BatchNorm2d(out_channels)
        self.conv1 = nn.Conv2d(out_channels, mid, 1, bias=False)
        self.nonlin1 = nn.ReLU(inplace=True)
        # Stride 2 at inner step 0, 1 afterwards (passed at call time, see `steps`).
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, bias=False)
        self.nonlin2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.nonlin3 = nn.ReLU(inplace=True)
        self.output = nn.Identity()
        for t in range(times):
            self.add_module(f"norm1_{t}", nn.BatchNorm2d(mid))
            self.add_module(f"norm2_{t}", nn.BatchNorm2d(mid))
            self.add_module(f"norm3_{t}", nn.BatchNorm2d(out_channels))

    def steps(self, inp: Tensor) -> Iterator[Tensor]:
        """Yield the area's output after each inner step."""
        x = self.conv_input(inp)
        for t in range(self.times):
            if t == 0:
                skip = self.norm_skip(self.skip(x))
                stride = 2
            else:
                skip = x
                stride = 1
            x = self.nonlin1(self.get_submodule(f"norm1_{t}")(self.conv1(x)))
            x = F.conv2d(x, self.conv2.weight, None, stride, self.conv2.padding)
            x = self.nonlin2(self.get_submodule(f"norm2_{t}")(x))
            x = self.get_submodule(f"norm3_{t}")(self.conv3(x))
            x = self.nonlin3(x + skip)
            yield self.output(x)

    def forward(self, inp: Tensor) -> Tensor:
        out = inp
        for step_output in self.steps(inp):
            out = step_output
        return out


# --------------------------------------------------------------------------------- models
class _CORnet(ClockedModel):
    """What the four variants share: area names, head, display name."""

    classifier_name = "decoder.linear"
    arch_name = "cornet"

    @property
    def layer_names(self) -> tuple[str, ...]:
        return CORNET_AREAS

    @property
    def layer_aliases(self) -> dict[str, str]:  # type: ignore[override]
        # Brain-Score / hook-style names of the official modules.
        return {f"{a}.output": a for a in CORNET_AREAS}

    def _display_name(self) -> str:
        return super()._display_name() if self.pretrained_cfg is not None else self.arch_name


class CORnetZ(_CORnet):
    """CORnet-Z: four conv-ReLU-maxpool areas and a linear decoder; feed-forward, one clock step.

    Args:
        num_classes: decoder width (1000 for the official weights).
        in_chans: input channels (3 for the official weights).
        timesteps: must be 1 (or None).

    Shapes: ``[B, in_chans, H, W]`` -> ``[B, num_classes]``; areas at H/4, H/8, H/16, H/32.
    """

    first_conv_name = "V1.conv"
    arch_name = "cornet_z"
    hookable_layers = frozenset(CORNET_AREAS)
    feedforward = True

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, timesteps: int | None = 1
    ) -> None:
        super().__init__()
        self.timesteps = 1
        self._resolve_timesteps(timesteps)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.V1 = CORblockZ(in_chans, 64, kernel_size=7, stride=2)
        self.V2 = CORblockZ(64, 128)
        self.V4 = CORblockZ(128, 256)
        self.IT = CORblockZ(256, 512)
        self.decoder = _decoder(512, num_classes, with_output=True)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        features = {}
        for name in CORNET_AREAS:
            x = getattr(self, name)(x)
            if name in capture:
                features[name] = x
        yield Step(0, features, self.decoder(x) if 0 in readouts else None)


class CORnetR(_CORnet):
    """CORnet-R: four recurrent areas (conv input drive + a recurrent 3x3 conv), updated in order.

    Args:
        num_classes: decoder width (1000 for the official weights).
        in_chans: input channels (3 for the official weights).
        timesteps: the official ``times`` (default 5, as trained).

    Clock: steps ``0 .. timesteps-1``, a readout (decoder of IT) at every step; the last one is the
    official output. Within a step the areas are updated in order V1, V2, V4, IT, each reading the
    area below *at the same step* (V1 reads the image). At step 0 only V1 gets the image, so V2, V4
    and IT first carry image information at step 1 (``first_step`` = V1 0, V2 1, V4 1, IT 1), and
    the step-0 readout is the same for every image. Areas at H/4, H/8, H/16, H/32 (rounded up).
    """

    first_conv_name = "V1.conv_input"
    arch_name = "cornet_r"
    supports_sequences = True
    #: True: every area reads the area below at the previous step (CORnet-RT).
    synchronous = False

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, timesteps: int = 5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.timesteps = timesteps
        self.V1 = CORblockR(in_chans, 64, kernel_size=7, stride=4)
        self.V2 = CORblockR(64, 128, stride=2)
        self.V4 = CORblockR(128, 256, stride=2)
        self.IT = CORblockR(256, 512, stride=2)
        self.decoder = _decoder(512, num_classes, with_output=False)
        # Timesteps are checked at call time; a bad default is reported now.
        self._resolve_timesteps(timesteps)

    @property
    def areas(self) -> tuple[CORblockR, ...]:
        return (self.V1, self.V2, self.V4, self.IT)

    def area_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Map size of every area for an input of ``height x width`` (56, 28, 14, 7 at 224)."""
        sizes = []
        for area in self.areas:
            height, width = area.output_size(height, width)
            sizes.append((height, width))
        return sizes

    def first_steps(self, timesteps: int | None = None) -> dict[str, int]:
        if self.synchronous:
            return {name: k for k, name in enumerate(CORNET_AREAS)}
        return {name: min(k, 1) for k, name in enumerate(CORNET_AREAS)}

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        return list(range(self.timesteps if timesteps is None else timesteps))

    def arrival_steps(self, onset: int, timesteps: int | None = None) -> dict[str, int]:
        """Frame ``onset`` is V1's drive at step ``onset``. RT: area ``k`` reads area ``k-1`` of
        the previous step, so ``onset + k``. R: every area reads the one below at the same step,
        so ``onset`` for all, except that at step 0 V2, V4 and IT get a zero drive (official
        code): frame 0 reaches them at step 1."""
        if self.synchronous:
            return {name: onset + k for k, name in enumerate(CORNET_AREAS)}
        return {name: onset if k == 0 else max(onset, 1) for k, name in enumerate(CORNET_AREAS)}

    def _last_steps(
        self, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> list[int]:
        """Last step at which each area must be computed (-1: never) for the requested outputs.

        An area needed at step t is needed at every earlier step (its state), so the work is a
        prefix of steps per area; the area below is needed up to the same step (R) or one step
        earlier (RT), except that at step 0 no area but V1 reads from below.
        """
        last = [timesteps - 1 if name in capture else -1 for name in CORNET_AREAS]
        if readouts:
            last[-1] = max(last[-1], max(readouts))
        lag = 1 if self.synchronous else 0
        for k in range(len(last) - 1, 0, -1):
            if last[k] >= 1:
                last[k - 1] = max(last[k - 1], last[k] - lag)
        return last

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        areas = self.areas
        last = self._last_steps(timesteps, capture, readouts)
        sizes = self.area_sizes(int(x.shape[-2]), int(x.shape[-1]))
        batch = x.shape[-4]
        # V1's drive of frame t: computed once for a static image, once per step for a sequence.
        image_drive = InputStage(x, areas[0].drive)
        prev: list[Tensor | None] = [None] * len(areas)
        for t in range(timesteps):
            cur: list[Tensor | None] = [None] * len(areas)
            for k, area in enumerate(areas):
                if t > last[k]:
                    continue
                if k == 0:
                    drive = image_drive(t)
                elif t == 0:
                    drive = x.new_zeros((batch, area.out_channels, *sizes[k]))
                else:
                    below = prev[k - 1] if self.synchronous else cur[k - 1]
                    assert below is not None
                    drive = area.drive(below)
                cur[k] = area.update(drive, prev[k])
            features = {n: cur[k] for k, n in enumerate(CORNET_AREAS) if n in capture}
            logits = self.decoder(cur[-1]) if t in readouts else None
            yield Step(t, features, logits)  # type: ignore[arg-type]
            prev = cur

    def connections(self) -> tuple[Connection, ...]:
        """The image into V1; each area's input from the area below (same step for CORnet-R's
        in-order update, previous step for CORnet-RT's synchronous one) and its own state."""
        bottom_up = 1 if self.synchronous else 0
        out = [Connection("input", "V1", "input", 0, "V1.conv_input")]
        for below, name in zip(CORNET_AREAS[:-1], CORNET_AREAS[1:], strict=True):
            out.append(Connection(below, name, "bottom_up", bottom_up, f"{name}.conv_input"))
        out += [Connection(n, n, "lateral", 1, f"{n}.conv1") for n in CORNET_AREAS]
        return (*out, self._readout_connection("IT"))

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, update={'synchronous' if self.synchronous else 'sequential'}"


class CORnetRT(CORnetR):
    """CORnet-RT: CORnet-R's areas and weights layout, updated synchronously.

    Args and clock as [`CORnetR`][blt_models.models.cornet.CORnetR], but at every step each area reads the area below *at the
    previous step* (V1 reads the image). Image information reaches V1, V2, V4, IT at steps 0, 1, 2,
    3 (``first_step``), so readouts at steps 0-2 (the output with ``times <= 3``) do not depend on
    the image; the step-0 readout is ``decoder(ReLU(IT.norm1.bias))``.
    """

    arch_name = "cornet_rt"
    synchronous = True


class CORnetS(_CORnet):
    """CORnet-S: V1 (two convs) and three recurrent bottleneck areas with fixed inner steps.

    Args:
        num_classes: decoder width (1000 for the official weights).
        in_chans: input channels (3 for the official weights).
        timesteps: must be 9 (or None); see the clock below.

    Clock (the zoo's choice; the official code runs each area's loop to completion before the next
    area starts): **one clock step per inner step, areas in sequence.** V1 (one pass) is step 0,
    V2's two inner steps are steps 1-2, V4's four are steps 3-6 and IT's two are steps 7-8, so the
    clock has 9 steps and one readout, at step 8 (the official output). ``first_step`` is V1 0,
    V2 1, V4 3, IT 7. An area's features hold its output after each of its inner steps at the
    steps above and zeros at all other steps (before it starts and after it has finished). The
    number of inner steps is fixed by the per-step BatchNorms of the weights, so any other
    ``timesteps`` is an error. Areas at H/4, H/8, H/16, H/32 (rounded up).
    """

    first_conv_name = "V1.conv1"
    arch_name = "cornet_s"
    hookable_layers = frozenset({"V1"})
    #: Inner steps of V2, V4 and IT.
    inner_steps = {"V2": 2, "V4": 4, "IT": 2}

    def __init__(
        self, num_classes: int = 1000, in_chans: int = 3, timesteps: int | None = None
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.timesteps = 1 + sum(self.inner_steps.values())
        self._resolve_timesteps(timesteps)
        self.V1 = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False),
                norm1=nn.BatchNorm2d(64),
                nonlin1=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(3, 2, 1),
                conv2=nn.Conv2d(64, 64, 3, stride=1, padding=1, bias=False),
                norm2=nn.BatchNorm2d(64),
                nonlin2=nn.ReLU(inplace=True),
                output=nn.Identity(),
            )
        )
        self.V2 = CORblockS(64, 128, times=self.inner_steps["V2"])
        self.V4 = CORblockS(128, 256, times=self.inner_steps["V4"])
        self.IT = CORblockS(256, 512, times=self.inner_steps["IT"])
        self.decoder = _decoder(512, num_classes, with_output=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def area_steps(self) -> dict[str, tuple[int, ...]]:
        """Clock steps at which each area produces an output (one per inner step)."""
        steps: dict[str, tuple[int, ...]] = {"V1": (0,)}
        t = 1
        for name, n in self.inner_steps.items():
            steps[name] = tuple(range(t, t + n))
            t += n
        return steps

    def first_steps(self, timesteps: int | None = None) -> dict[str, int]:
        return {name: steps[0] for name, steps in self.area_steps.items()}

    def _sequence_unsupported_reason(self) -> str:
        return (
            "its areas run one after the other (V1 at step 0, then V2's, V4's and IT's inner "
            "steps), so the image enters only at step 0 and a frame at a later step has no area "
            "to enter. Pass images [B, C, H, W], or use cornet_r / cornet_rt, whose V1 reads the "
            "input at every step."
        )

    def arrival_steps(self, onset: int, timesteps: int | None = None) -> dict[str, int]:
        """Only step 0 has an input (a static image); see ``_sequence_unsupported_reason``."""
        if onset != 0:
            raise InputError(
                f"{self._display_name()} does not take input sequences: "
                f"{self._sequence_unsupported_reason()}"
            )
        return self.first_steps(timesteps)

    def readout_steps(self, timesteps: int | None = None) -> list[int]:
        return [self.timesteps - 1]

    def last_steps(self, timesteps: int | None = None) -> dict[str, int]:
        """Each area's last inner step (V1 0, V2 2, V4 6, IT 8): its final output."""
        self._resolve_timesteps(timesteps)
        return {name: steps[-1] for name, steps in self.area_steps.items()}

    def _resolve_timesteps(self, timesteps: int | None) -> int:
        why = (
            "its areas have a fixed number of inner steps (V1 1, V2 2, V4 4, IT 2; each inner "
            "step has its own BatchNorms in the weights), which the zoo puts one per clock step."
        )
        return self._fixed_timesteps(timesteps, self.timesteps, why)

    def connections(self) -> tuple[Connection, ...]:
        """One area per clock step: V1 at step 0, then each area's inner steps in turn; an area's
        first inner step reads the area below's last output, the others its own previous one."""
        out = [Connection("input", "V1", "input", 0, "V1")]
        for below, name in zip(CORNET_AREAS[:-1], CORNET_AREAS[1:], strict=True):
            out.append(Connection(below, name, "bottom_up", 1, f"{name}.conv_input"))
        out += [
            Connection(n, n, "lateral", 1, n) for n in self.inner_steps if self.inner_steps[n] > 1
        ]
        return (*out, self._readout_connection("IT"))

    def _unroll(
        self, x: Tensor, timesteps: int, capture: frozenset[str], readouts: frozenset[int]
    ) -> Iterator[Step]:
        x = self.V1(x)
        yield Step(0, {"V1": x} if "V1" in capture else {})
        t = 0
        for name in self.inner_steps:
            area: CORblockS = getattr(self, name)
            for out in area.steps(x):
                t += 1
                x = out
                logits = self.decoder(x) if (t == self.timesteps - 1 and t in readouts) else None
                yield Step(t, {name: x} if name in capture else {}, logits)


# --------------------------------------------------------------------------------- configs
CORNET_CITATION = (
    "Kubilius, J., Schrimpf, M., et al. (2019). Brain-Like Object Recognition with "
    "High-Performing Shallow Recurrent ANNs. NeurIPS 2019. / Kubilius, J., Schrimpf, M., et al. "
    "(2018). CORnet: Modeling the Neural Mechanisms of Core Object Recognition. bioRxiv 408385."
)

#: First 8 hex digits of the SHA-256 of each official weight file (also in its file name).
CORNET_WEIGHT_HASHES = {
    "cornet_z": "5c427c9c",
    "cornet_r": "5930a990",
    "cornet_rt": "933c001c",
    "cornet_s": "1d3f7974",
}
_CORNET_TIMESTEPS = {"cornet_z": 1, "cornet_r": 5, "cornet_rt": 5, "cornet_s": 9}


def _cornet_cfgs() -> list[PretrainedCfg]:
    cfgs = []
    for arch, digest in CORNET_WEIGHT_HASHES.items():
        cfgs.append(
            PretrainedCfg(
                architecture=arch,
                tag="imagenet",
                url=f"https://s3.amazonaws.com/cornet-models/{arch}-{digest}.pth",
                sha256=digest,
                input_size=(3, 224, 224),
                crop_pct=0.875,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                num_classes=1000,
                class_names=imagenet_class_names(),
                timesteps=_CORNET_TIMESTEPS[arch],
                license="GPL-3.0 (official CORnet code and weights)",
                source="github.com/dicarlolab/CORnet (official ImageNet weights)",
                training_data="ImageNet-1k (224x224, torchvision ImageNet normalisation)",
                citation=CORNET_CITATION,
                description="Official CORnet weights; the file is a DataParallel checkpoint "
                "({'state_dict': {'module.<key>': ...}, 'epoch', 'arch', 'optimizer'}).",
            )
        )
    return cfgs


@register_model
def cornet_z(**kwargs) -> CORnetZ:
    """CORnet-Z (feed-forward, 4 areas; official ``CORnet_Z``)."""
    return CORnetZ(**kwargs)


@register_model
def cornet_r(**kwargs) -> CORnetR:
    """CORnet-R (recurrent areas, sequential update; official ``CORnet_R``)."""
    return CORnetR(**kwargs)


@register_model
def cornet_rt(**kwargs) -> CORnetRT:
    """CORnet-RT (recurrent areas, synchronous update; official ``CORnet_RT``)."""
    return CORnetRT(**kwargs)


@register_model
def cornet_s(**kwargs) -> CORnetS:
    """CORnet-S (recurrent bottleneck areas; official ``CORnet_S``)."""
    return CORnetS(**kwargs)


register_pretrained_cfgs(_cornet_cfgs())
