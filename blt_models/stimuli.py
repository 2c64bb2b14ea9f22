"""Presentation protocols: images in time, as the sequences ``[T, B, C, H, W]`` the clock takes.

A protocol is a small frozen dataclass (a value: compare it, store it with [`Protocol.to_dict`][blt_models.stimuli.Protocol.to_dict],
rebuild it with [`protocol_from_dict`][blt_models.stimuli.protocol_from_dict]) that turns any batch of images ``[B, C, H, W]``,
already normalised for the model, into a time-major sequence: frame ``t`` is the input at clock
step ``t``.

>>> from blt_models.stimuli import Presentation, BackwardMask
>>> seq = Presentation(timesteps=8, on=0, off=2).apply(images)   # [8, B, C, H, W]
>>> out = model.forward_timesteps(seq)                            # flash for two steps
>>> seq = BackwardMask(timesteps=8, soa=2).apply(images)          # target 0-1, noise mask 2-7

Frames (``I`` image, ``M`` mask, ``_`` blank, ``1``/``2``/... RSVP items):

===========================================================  ======================
``Presentation(timesteps=6, on=1, off=3)``                   ``_ I I _ _ _``
``BackwardMask(timesteps=6, soa=2)``                         ``I I M M M M``
``BackwardMask(timesteps=6, soa=3, duration=1, mask_duration=2)``  ``I _ _ M M _``
``RSVP(timesteps=7, items=3, duration=1, gap=1)``            ``1 _ 2 _ 3 _ _``
===========================================================  ======================

Common options (keyword-only, every protocol): ``blank`` is the value of blank pixels in the
normalised space: 0, the dataset's mean grey, unless given (a float, or one per channel; black is
``-mean / std``). ``contrast`` scales every frame around the blank, ``blank + c * (frame -
blank)``, and ``noise_std`` adds fresh Gaussian noise to every frame after that; each is one
value or one per step. Noise is seeded by ``seed`` and, per image, by its index (``index=`` of
[`Protocol.apply`][blt_models.stimuli.Protocol.apply], default the position in the batch), so an image gets the same noise
whatever the batch it is in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._validate import MAX_TIMESTEPS, as_int
from .errors import StimulusError

__all__ = [
    "Protocol",
    "Presentation",
    "BackwardMask",
    "RSVP",
    "protocol_from_dict",
    "protocol_of",
    "convrnn_protocol",
    "check_for_model",
    "apply_to_batch",
    "PROTOCOLS",
    "StimulusError",
]

#: Step-dependent values: one number for every step, or one per step.
PerStep = float | tuple[float, ...]


def _number(name: str, value: Any) -> float:
    """``value`` as a float if it is a real number (numpy and 0-d tensor numbers too), not a bool
    or a string."""
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise StimulusError(
            f"{name} must be a number (int or float); got {value!r} ({type(value).__name__})"
        )
    return float(value)


def _per_step(name: str, value: Any, timesteps: int, minimum: float | None) -> PerStep:
    if isinstance(value, (list, tuple)):
        if len(value) != timesteps:
            raise StimulusError(
                f"{name} has {len(value)} values but timesteps={timesteps}: give one value, or "
                "one per step."
            )
        values = tuple(_number(f"{name}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, (numbers.Real, Tensor)) and not isinstance(value, bool):
        values = (_number(name, value),)
    else:
        raise StimulusError(
            f"{name} must be a number or a list of numbers (one per step); got {value!r} "
            f"({type(value).__name__})"
        )
    for v in values:
        if not math.isfinite(v) or (minimum is not None and v < minimum):
            bound = f" and >= {minimum}" if minimum is not None else ""
            raise StimulusError(f"{name} values must be finite{bound}; got {value!r}")
    return values if isinstance(value, (list, tuple)) else values[0]


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = MAX_TIMESTEPS) -> None:
    """An int in ``[minimum, maximum]`` (steps are bounded as the models' clocks are)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StimulusError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum:,}" if maximum is not None else f">= {minimum}"
        raise StimulusError(f"{name} must be an integer {bound}; got {value!r}")


def _seed_for(seed: int, stream: int, index: int) -> int:
    """A generator seed for one image and one noise stream, independent of batching."""
    digest = hashlib.sha256(f"blt-models/{seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _gaussian(seed: int, stream: int, index: list[int], like: Tensor) -> Tensor:
    """Standard normal noise shaped like ``like [B, C, H, W]``, one seeded draw per image."""
    per_image = [
        torch.randn(
            tuple(like.shape[1:]),
            generator=torch.Generator().manual_seed(_seed_for(seed, stream, i)),
        )
        for i in index
    ]
    return torch.stack(per_image).to(device=like.device, dtype=like.dtype)


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """Base of every protocol: the clock length and the options every protocol has.

    Attributes:
        timesteps: ``T``, the number of frames (and so of clock steps).
        blank: value of blank pixels in the normalised space (0: mean grey); a float or one per
            channel.
        contrast: contrast of every frame around the blank (1: unchanged); one value or one per
            step.
        noise_std: standard deviation of additive Gaussian noise, fresh at every step (0: none);
            one value or one per step.
        seed: seed of every random draw of the protocol.
    """

    timesteps: int
    blank: float | tuple[float, ...] = 0.0
    contrast: PerStep = 1.0
    noise_std: PerStep = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if type(self) is Protocol:
            raise StimulusError(f"Protocol is the base class; use one of {', '.join(PROTOCOLS)}")
        _check_int("timesteps", self.timesteps, 1)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        raw: Any = self.blank
        if isinstance(raw, (list, tuple)):
            values = tuple(_number(f"blank[{i}]", b) for i, b in enumerate(raw))
            if not values or not all(math.isfinite(b) for b in values):
                raise StimulusError(f"blank must be finite numbers; got {raw!r}")
            blank: float | tuple[float, ...] = values
        else:
            blank = _per_step("blank", raw, 1, None)
        object.__setattr__(self, "blank", blank)
        object.__setattr__(
            self, "contrast", _per_step("contrast", self.contrast, self.timesteps, None)
        )
        object.__setattr__(
            self, "noise_std", _per_step("noise_std", self.noise_std, self.timesteps, 0.0)
        )

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """Names of the tensors ``apply`` needs besides the images (e.g. ``("mask",)``)."""
        return ()

    # ----------------------------------------------------------------------------- contents
    def _check_window(self, what: str, start: int, stop: int) -> None:
        if stop > self.timesteps:
            raise StimulusError(
                f"{type(self).__name__}: {what} ends at step {stop} (exclusive), beyond "
                f"timesteps={self.timesteps} (steps 0..{self.timesteps - 1}). Use "
                f"timesteps >= {stop}, or an earlier or shorter {what}."
            )
        if start >= stop:
            raise StimulusError(
                f"{type(self).__name__}: {what} is empty (steps [{start}, {stop})): it needs "
                "at least one step."
            )

    def schedule(self) -> list[str | None]:
        """What each step shows: a content name (``"image"``, ``"mask"``, ``"item0"``...) or
        None for blank."""
        raise NotImplementedError

    def _contents(
        self, images: Tensor, index: list[int], inputs: dict[str, Any]
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def apply(
        self,
        images: Tensor | Sequence[Tensor],
        *,
        index: Tensor | Sequence[int] | None = None,
        **inputs: Any,
    ) -> Tensor:
        """The sequence ``[T, B, C, H, W]`` of this protocol for a batch.

        Args:
            images: ``[B, C, H, W]`` normalised images (RSVP: one such batch per item).
            index: per-image indices ``[B]`` that seed the noise (default ``0 .. B-1``); pass
                the images' positions in the stimulus set so that noise does not depend on
                batching.
            inputs: the protocol's ``extra_inputs`` (e.g. ``mask=`` images ``[B, C, H, W]``).

        Returns:
            ``[T, B, C, H, W]`` in the dtype and on the device of the images, contiguous.
        """
        first = _first_batch(images, several=isinstance(self, RSVP))
        batch = int(first.shape[0])
        if index is None:
            index_list = list(range(batch))
        else:
            index_list = _check_index(index)
            if len(index_list) != batch:
                raise StimulusError(
                    f"index has {len(index_list)} entries for a batch of {batch} images"
                )
        unknown = set(inputs) - set(self.extra_inputs)
        if unknown:
            takes = ", ".join(self.extra_inputs) or "no extra inputs"
            raise StimulusError(
                f"{type(self).__name__}.apply got unexpected input(s) {sorted(unknown)}; it "
                f"takes {takes}."
            )
        contents = self._contents(images, index_list, inputs)  # type: ignore[arg-type]
        channels = int(first.shape[1])
        blank = self._blank_tensor(first, channels)
        out = blank.expand(self.timesteps, *first.shape).clone()
        for t, name in enumerate(self.schedule()):
            if name is not None:
                out[t] = contents[name]
        contrast = self.contrast
        for t in range(self.timesteps):
            c = contrast[t] if isinstance(contrast, tuple) else contrast
            if c != 1.0:
                out[t] = blank + c * (out[t] - blank)
        noise = self.noise_std
        for t in range(self.timesteps):
            s = noise[t] if isinstance(noise, tuple) else noise
            if s > 0:
                out[t] += s * _gaussian(self.seed, 1 + t, index_list, first)
        return out

    def _blank_tensor(self, like: Tensor, channels: int) -> Tensor:
        blank = self.blank
        if isinstance(blank, tuple):
            if len(blank) != channels:
                raise StimulusError(
                    f"blank has {len(blank)} values but the images have {channels} channels"
                )
            return torch.tensor(blank, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        return torch.full((1, channels, 1, 1), float(blank), dtype=like.dtype, device=like.device)

    # ----------------------------------------------------------------------------- metadata
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record: ``{"protocol": class name, field: value, ...}``."""
        record: dict[str, Any] = {"protocol": type(self).__name__}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            record[f.name] = list(value) if isinstance(value, tuple) else value
        return record

    @property
    def image_steps(self) -> list[int]:
        """Steps that show the (target) image."""
        return [t for t, name in enumerate(self.schedule()) if name in ("image", "item0")]


def _first_batch(images: Tensor | Sequence[Tensor], several: bool) -> Tensor:
    """The (first) image batch ``[B, C, H, W]`` of ``apply``'s images; ``several``: RSVP, which
    also takes a list of batches or ``[items, B, C, H, W]``."""
    takes = (
        "[B, C, H, W] (RSVP: a list of such batches, one per item, or [items, B, C, H, W])"
        if several
        else "[B, C, H, W]"
    )
    if several and isinstance(images, (list, tuple)):
        if not images:
            raise StimulusError(f"got an empty list of image batches; expected {takes}")
        first: Any = images[0]
    elif several and isinstance(images, Tensor) and images.ndim == 5:
        first = images[0]
    else:
        first = images
    if not isinstance(first, Tensor):
        raise StimulusError(
            f"expected an image tensor {takes}; got {type(images).__name__}"
            + (f" of {type(first).__name__}" if first is not images else "")
        )
    if first.ndim != 4 or not first.is_floating_point():
        hint = (
            " A 5-D tensor is a sequence already: run it with model.forward_timesteps, or pass "
            "its images [B, C, H, W]."
            if first.ndim == 5
            else " Add a batch dimension with x.unsqueeze(0)."
            if first.ndim == 3
            else ""
        )
        raise StimulusError(
            f"expected a floating-point image batch {takes}; got shape {tuple(first.shape)}, "
            f"dtype {first.dtype}. Normalise the images with the model's transform.{hint}"
        )
    return first


def _check_index(index: Any) -> list[int]:
    """``apply``'s ``index=``: one integer per image (a tensor of integers, a list, a range)."""
    if isinstance(index, Tensor):
        if (
            index.ndim != 1
            or index.is_floating_point()
            or index.is_complex()
            or (index.dtype == torch.bool)
        ):
            raise StimulusError(
                f"index must be one integer per image ([B] integers); got a tensor of shape "
                f"{tuple(index.shape)} and dtype {index.dtype}"
            )
        return [int(i) for i in index.tolist()]
    if isinstance(index, (str, bytes, dict)) or not hasattr(index, "__iter__"):
        raise StimulusError(
            f"index must be one integer per image (a list, a range or a tensor [B]); got {index!r}"
        )
    out = []
    for i, value in enumerate(index):
        as_integer = as_int(value)
        if as_integer is None:
            raise StimulusError(
                f"index[{i}] = {value!r} ({type(value).__name__}): image indices must be "
                "integers (the images' positions in the stimulus set)"
            )
        out.append(as_integer)
    return out


def _check_like(name: str, value: Any, images: Tensor) -> Tensor:
    """An extra input of the same shape as the images ([C, H, W] broadcasts over the batch)."""
    if not isinstance(value, Tensor):
        raise StimulusError(f"{name} must be a tensor [B, C, H, W]; got {type(value).__name__}")
    if not value.is_floating_point():
        raise StimulusError(
            f"{name} has dtype {value.dtype}; give floating-point images normalised like the "
            "target images (the model's transform), not raw pixel values"
        )
    if value.ndim == 3:
        value = value.unsqueeze(0).expand_as(images)
    if tuple(value.shape) != tuple(images.shape):
        raise StimulusError(
            f"{name} has shape {tuple(value.shape)} but the images have {tuple(images.shape)}: "
            f"give one {name} per image ([B, C, H, W]) or one for all ([C, H, W]), of the images' "
            "size and channels."
        )
    return value.to(device=images.device, dtype=images.dtype)


@dataclass(frozen=True, kw_only=True)
class Presentation(Protocol):
    """The image on steps ``[on, off)``, blank elsewhere (``off=None``: to the last step).

    ``Presentation(timesteps=6, on=1, off=3)``: ``_ I I _ _ _``.
    """

    on: int = 0
    off: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("on", self.on, 0)
        if self.off is not None:
            _check_int("off", self.off, 1)
        self._check_window("the presentation", self.on, self.stop)

    @property
    def stop(self) -> int:
        return self.timesteps if self.off is None else self.off

    def schedule(self) -> list[str | None]:
        return ["image" if self.on <= t < self.stop else None for t in range(self.timesteps)]

    def _contents(
        self, images: Tensor, index: list[int], inputs: dict[str, Any]
    ) -> dict[str, Tensor]:
        return {"image": images}


@dataclass(frozen=True, kw_only=True)
class BackwardMask(Protocol):
    """A target, then a mask ``soa`` steps after the target's onset (stimulus onset asynchrony).

    Attributes:
        soa: steps from target onset to mask onset (>= 1).
        onset: the target's first step.
        duration: steps the target is shown (None: ``soa``, i.e. until the mask); at most
            ``soa``. Steps between the target's end and the mask are blank.
        mask_duration: steps the mask is shown (None: to the last step).
        mask: ``"noise"``: Gaussian noise of standard deviation ``mask_std`` around the blank,
            one pattern per image (seeded by ``seed`` and the image index), held for the mask's
            steps; ``"image"``: the images passed as ``apply(images, mask=...)``.
        mask_std: standard deviation of the noise mask in the normalised space.

    ``BackwardMask(timesteps=6, soa=3, duration=1, mask_duration=2)``: ``I _ _ M M _``.
    """

    soa: int
    onset: int = 0
    duration: int | None = None
    mask_duration: int | None = None
    mask: str = "noise"
    mask_std: float = 1.0

    MASKS: ClassVar[tuple[str, ...]] = ("noise", "image")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("soa", self.soa, 1)
        _check_int("onset", self.onset, 0)
        if self.duration is not None:
            _check_int("duration", self.duration, 1)
            if self.duration > self.soa:
                raise StimulusError(
                    f"BackwardMask: duration={self.duration} is longer than soa={self.soa}; the "
                    "target must end by the mask's onset (use duration <= soa)."
                )
        if self.mask_duration is not None:
            _check_int("mask_duration", self.mask_duration, 1)
        if self.mask not in self.MASKS:
            raise StimulusError(f"mask must be one of {self.MASKS}; got {self.mask!r}")
        if (
            isinstance(self.mask_std, bool)
            or not isinstance(self.mask_std, (int, float))
            or not math.isfinite(self.mask_std)
            or self.mask_std < 0
        ):
            raise StimulusError(f"mask_std must be a finite number >= 0; got {self.mask_std!r}")
        object.__setattr__(self, "mask_std", float(self.mask_std))
        self._check_window("the target", self.onset, self.onset + self.target_duration)
        self._check_window("the mask", self.mask_onset, self.mask_stop)

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        return ("mask",) if self.mask == "image" else ()

    @property
    def target_duration(self) -> int:
        return self.soa if self.duration is None else self.duration

    @property
    def mask_onset(self) -> int:
        return self.onset + self.soa

    @property
    def mask_stop(self) -> int:
        if self.mask_duration is None:
            return max(self.timesteps, self.mask_onset + 1)
        return self.mask_onset + self.mask_duration

    def schedule(self) -> list[str | None]:
        out: list[str | None] = []
        for t in range(self.timesteps):
            if self.onset <= t < self.onset + self.target_duration:
                out.append("image")
            elif self.mask_onset <= t < self.mask_stop:
                out.append("mask")
            else:
                out.append(None)
        return out

    def _contents(
        self, images: Tensor, index: list[int], inputs: dict[str, Any]
    ) -> dict[str, Tensor]:
        if self.mask == "image":
            if "mask" not in inputs:
                raise StimulusError(
                    "BackwardMask(mask='image') needs the mask images: apply(images, mask=masks) "
                    "with masks [B, C, H, W] (or [C, H, W] for all)."
                )
            mask = _check_like("mask", inputs["mask"], images)
        else:
            blank = self._blank_tensor(images, int(images.shape[1]))
            mask = blank + self.mask_std * _gaussian(self.seed, 0, index, images)
        return {"image": images, "mask": mask}


@dataclass(frozen=True, kw_only=True)
class RSVP(Protocol):
    """Rapid serial visual presentation: ``items`` images one after the other, each for
    ``duration`` steps, with ``gap`` blank steps between them, from step ``onset``.

    ``apply`` takes the items as a sequence of ``items`` batches ``[B, C, H, W]`` (or one tensor
    ``[items, B, C, H, W]``). ``RSVP(timesteps=7, items=3, duration=1, gap=1)``:
    ``1 _ 2 _ 3 _ _``.
    """

    items: int
    duration: int = 1
    gap: int = 0
    onset: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("items", self.items, 1)
        _check_int("duration", self.duration, 1)
        _check_int("gap", self.gap, 0)
        _check_int("onset", self.onset, 0)
        stop = self.onset + self.items * self.duration + (self.items - 1) * self.gap
        self._check_window(f"the last of {self.items} items", stop - self.duration, stop)

    def item_onsets(self) -> list[int]:
        return [self.onset + k * (self.duration + self.gap) for k in range(self.items)]

    def schedule(self) -> list[str | None]:
        out: list[str | None] = [None] * self.timesteps
        for k, start in enumerate(self.item_onsets()):
            for t in range(start, start + self.duration):
                out[t] = f"item{k}"
        return out

    def _contents(
        self, images: Tensor | Sequence[Tensor], index: list[int], inputs: dict[str, Any]
    ) -> dict[str, Tensor]:
        items = list(images.unbind(0)) if isinstance(images, Tensor) and images.ndim == 5 else None
        if items is None:
            if isinstance(images, Tensor):
                if self.items != 1:
                    raise StimulusError(
                        f"RSVP with items={self.items} needs {self.items} image batches (a list of "
                        "[B, C, H, W], or [items, B, C, H, W]); got one batch."
                    )
                items = [images]
            else:
                items = list(images)
        if len(items) != self.items:
            raise StimulusError(f"RSVP(items={self.items}) got {len(items)} image batches")
        first = items[0]
        return {f"item{k}": _check_like(f"item {k}", item, first) for k, item in enumerate(items)}


PROTOCOLS: dict[str, type[Protocol]] = {
    cls.__name__: cls for cls in (Presentation, BackwardMask, RSVP)
}


def protocol_from_dict(record: dict[str, Any]) -> Protocol:
    """Rebuild a protocol from [`Protocol.to_dict`][blt_models.stimuli.Protocol.to_dict] (e.g. read back from a features file)."""
    if not isinstance(record, dict) or "protocol" not in record:
        raise StimulusError(f"not a protocol record (no 'protocol' key): {record!r}")
    fields = dict(record)
    name = fields.pop("protocol")
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise StimulusError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    bad_keys = [k for k in fields if not isinstance(k, str)]
    if bad_keys:
        raise StimulusError(f"{name} field names must be strings; got {bad_keys!r}")
    cls = PROTOCOLS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(fields) - known
    if unknown:
        raise StimulusError(f"{name} has no field(s) {sorted(unknown)}")
    return cls(**fields)


# --------------------------------------------------------------------------------- extraction
def check_for_model(protocol: Protocol, model: Any, timesteps: int | None = None) -> int:
    """Check that ``protocol`` can drive ``model`` on its own images and return the clock length.

    Used by ``extract_features(..., stimulus=protocol)``: the protocol must need nothing but the
    images (no ``mask=`` or RSVP items), ``timesteps`` (if given) must equal
    ``protocol.timesteps``, and the model must take sequences and give a readout within them.
    """
    if not isinstance(protocol, Protocol):
        raise StimulusError(
            f"stimulus must be a blt_models.stimuli protocol (Presentation, BackwardMask, RSVP); "
            f"got {type(protocol).__name__}"
        )
    needs = protocol.extra_inputs or (
        ("items",) if isinstance(protocol, RSVP) and protocol.items > 1 else ()
    )
    if needs:
        raise StimulusError(
            f"{type(protocol).__name__} needs {', '.join(needs)} besides each image, which an "
            "image source does not give: use a protocol that needs only the image (e.g. "
            "BackwardMask(mask='noise')), or build the sequences with protocol.apply(images, ...) "
            "and run model.forward_timesteps on them."
        )
    T = protocol.timesteps
    if timesteps is not None and timesteps != T:
        raise StimulusError(
            f"timesteps={timesteps} but the stimulus runs {T} steps (protocol.timesteps); a "
            "protocol sets the clock length: pass timesteps=None."
        )
    if not model.feedforward:
        if not model.supports_sequences:
            raise StimulusError(
                f"{model._display_name()} does not take input sequences: "
                f"{model._sequence_unsupported_reason()}"
            )
        model._resolve_timesteps(T)
    return T


def apply_to_batch(protocol: Protocol, images: Tensor, start: int) -> Tensor:
    """The protocol's sequence for images ``start .. start+B-1`` of a stimulus set: noise is
    seeded by each image's position in the set, so batching and resuming do not change it."""
    return protocol.apply(images, index=range(start, start + int(images.shape[0])))


def protocol_record(protocol: Protocol | None) -> dict[str, Any] | None:
    """What a features file stores under ``metadata["stimulus"]`` (None: the static image)."""
    return None if protocol is None else protocol.to_dict()


def protocol_of(source: Any) -> Protocol | None:
    """The protocol recorded by ``source`` (None: the static image at every step).

    ``source`` is a features file's metadata (the protocol it was extracted with), a model or its
    ``pretrained_cfg`` (the protocol its weights were trained with, e.g. the ConvRNNs' image
    then "off" frame; None for weights trained on static images).

    >>> protocol_of(load_features("feats.h5").metadata)
    >>> seq = protocol_of(model).apply(images)   # the presentation the weights were trained with
    """
    from ._pretrained import PretrainedCfg

    cfg = getattr(source, "pretrained_cfg", source)
    if isinstance(cfg, PretrainedCfg):
        return None if cfg.protocol is None else protocol_from_dict(dict(cfg.protocol))
    if source is not None and hasattr(source, "pretrained_cfg"):  # a model without a config
        return None
    if not isinstance(source, dict):
        raise StimulusError(
            f"protocol_of takes a features file's metadata, a model or a PretrainedCfg; got "
            f"{type(source).__name__}"
        )
    record = source.get("stimulus")
    return None if record is None else protocol_from_dict(record)


#: The ConvRNN reference's presentation modes (``image_pres``) and their clocks.
CONVRNN_MODES = ("default", "constant", "neural")
#: Value of the reference's "off" frame in the normalised space (not a normalised grey).
CONVRNN_OFF_VALUE = 0.5


def convrnn_protocol(
    model: Any,
    mode: str = "default",
    *,
    timesteps: int | None = None,
    image_off: int | None = None,
) -> Presentation:
    """One of the ConvRNN reference's image presentations (Nayebi et al. 2022) as a protocol.

    Args:
        model: a ConvRNN model or its architecture name (``"convrnn_rgc_intermediate"``, a tag
            allowed): sets the default clock and the ``default`` mode.
        mode: ``"default"``: as the model was trained: the image for steps ``0 .. 11``, then the
            "off" frame to step ``T - 1`` (T = 16 shallow, 17 intermediate); the t22 / t30 models
            the image at all 22 / 30 steps. ``"constant"``: the image at every one of
            ``timesteps`` steps (default: the model's T). ``"neural"``: 26 steps, the image for
            steps ``0 .. 9`` (the authors' protocol for neural comparisons). ``"custom"``: the
            image for steps ``< image_off`` of ``timesteps``.
        timesteps: overrides ``T`` (``constant`` and ``custom``; ``default`` and ``neural`` fix it).
        image_off: ``custom``: the first step of the off frame.

    The off frame is the constant 0.5 in normalised units (the reference's, not mean grey):
    ``blank=0.5``. Equal to ``protocol_of(model)`` for ``default`` on the authors' tags.

    Returns:
        A [`Presentation`][blt_models.stimuli.Presentation]; ``.apply(images)`` gives ``[T, B, C, H, W]``.
    """
    from .models.convrnn import convrnn_spec

    arch = model if isinstance(model, str) else getattr(
        getattr(model, "pretrained_cfg", None), "architecture", ""
    )  # fmt: skip
    try:
        spec = convrnn_spec(str(arch).split(".")[0])
    except KeyError:
        raise StimulusError(
            f"convrnn_protocol needs a ConvRNN (an architecture of list_models('convrnn*')); got "
            f"{arch or type(model).__name__!r}"
        ) from None
    fixed = {"default": spec.timesteps, "neural": 26}
    if mode in fixed and timesteps is not None and timesteps != fixed[mode]:
        raise StimulusError(
            f"the {mode!r} presentation of {spec.name} runs {fixed[mode]} steps; use "
            "mode='constant' or 'custom' for another clock"
        )
    if mode == "default":
        return Presentation(timesteps=spec.timesteps, off=spec.image_off, blank=CONVRNN_OFF_VALUE)
    if mode == "neural":
        return Presentation(timesteps=26, off=10, blank=CONVRNN_OFF_VALUE)
    steps = spec.timesteps if timesteps is None else timesteps
    if mode == "constant":
        if image_off is not None:
            raise StimulusError("the 'constant' presentation has no image_off")
        return Presentation(timesteps=steps, blank=CONVRNN_OFF_VALUE)
    if mode == "custom":
        if image_off is None:
            raise StimulusError("the 'custom' presentation needs image_off (and timesteps)")
        return Presentation(timesteps=steps, off=image_off, blank=CONVRNN_OFF_VALUE)
    raise StimulusError(f"mode must be one of {(*CONVRNN_MODES, 'custom')}; got {mode!r}")
