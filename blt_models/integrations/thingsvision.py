"""A thingsvision extractor for any zoo model, with the time axis in the module names.

thingsvision reads activations with forward hooks and keeps the last call of each module, so on a
recurrent model it would see one step (or a partial value). [`TimeAddressable`][blt_models.integrations.thingsvision.TimeAddressable] wraps a zoo
model in a module whose submodules are *addresses*: ``"layer3@t7"`` is ``layer3`` at clock step 7
(``[B, C, H, W]``) and ``"layer3"`` is ``layer3`` at every step (``[B, T, C, H, W]``, batch-major as
thingsvision expects); reference aliases work too (``"output_3@t7"``). Hooks on an address fire
once per forward with exactly that value, taken from ``forward_timesteps``.

>>> import blt_models as bm
>>> from blt_models.integrations.thingsvision import get_extractor
>>> from thingsvision.utils.data import DataLoader, ImageDataset
>>> model = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True)
>>> extractor = get_extractor(model)               # thingsvision's get_extractor_from_model
>>> dataset = ImageDataset(root="stimuli/", out_path="out/", backend="pt",
...                        transforms=extractor.get_transformations())
>>> batches = DataLoader(dataset, batch_size=32, backend="pt")
>>> feats = extractor.extract_features(batches, module_names=["layer3@t7", "layer3"],
...                                    flatten_acts=False)
>>> feats["layer3@t7"].shape, feats["layer3"].shape   # (N, C, H, W), (N, T, C, H, W)

Requires the ``thingsvision`` extra and thingsvision itself in their own environment: in a clone
of blt-models, ``pip install "torch==2.14.1" "torchvision==0.29.1" -e ".[thingsvision]"`` then
``pip install --no-deps "thingsvision>=2.7,<2.8"`` in a new virtual environment
(``bash scripts/setup_integrations.sh thingsvision`` builds ``.venvs/thingsvision``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .._clock import ClockedModel
from ..data import create_transform
from ..errors import StepOutOfRangeError

__all__ = ["TimeAddressable", "get_extractor", "parse_address"]

_ADDRESS = re.compile(r"^(?P<layer>[^@]+)(?:@t(?P<step>-?\d+))?$")


def parse_address(address: str) -> tuple[str, int | None]:
    """``"layer3@t7"`` -> ``("layer3", 7)``; ``"layer3"`` -> ``("layer3", None)`` (all steps)."""
    m = _ADDRESS.match(address)
    if m is None:
        raise ValueError(f"not a module address: {address!r} (use 'LAYER' or 'LAYER@tSTEP')")
    return m["layer"], None if m["step"] is None else int(m["step"])


class _Tap(nn.Identity):
    """Called once per forward with the value of its address, so that hooks see that value."""


class TimeAddressable(nn.Module):
    """A zoo model whose submodules ``LAYER`` and ``LAYER@tSTEP`` carry its layers in time.

    Args:
        model: the zoo model (available as ``.model``).
        timesteps: clock length (default ``model.timesteps``); addresses exist for its steps.

    ``forward(x)`` returns the logits at the last step (as the model's ``forward``); for every
    address that has a forward hook it also runs the clock capturing that layer and calls the
    address module with ``features[layer][step]`` (``[B, C, H, W]``) or, for a bare layer name,
    all steps batch-major (``[B, T, C, H, W]``; zeros where the layer is absent, see
    ``first_step``).
    """

    def __init__(self, model: ClockedModel, timesteps: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.timesteps = model._resolve_timesteps(timesteps)
        self.addresses: dict[str, tuple[str, int | None]] = {}
        for name in model.layer_names:
            self._add(name, name, None)
            for t in range(self.timesteps):
                self._add(f"{name}@t{t}", name, t)

    def _add(self, address: str, layer: str, step: int | None) -> None:
        self.add_module(address, _Tap())
        self.addresses[address] = (layer, step)

    def resolve_address(self, address: str) -> str:
        """Canonical address for ``address`` (reference aliases and negative steps accepted)."""
        if address in self.addresses:
            return address
        layer, step = parse_address(address)
        layer = self.model.resolve_layer(layer)
        if step is not None:
            if not -self.timesteps <= step < self.timesteps:
                raise StepOutOfRangeError(
                    f"step {step} of {address!r} is outside the clock 0..{self.timesteps - 1}; "
                    f"wrap the model with TimeAddressable(model, timesteps={step + 1}) for more."
                )
            step %= self.timesteps
        return layer if step is None else f"{layer}@t{step}"

    def _hooked(self) -> list[str]:
        return [
            a
            for a in self.addresses
            if self._modules[a]._forward_hooks or self._modules[a]._forward_pre_hooks  # type: ignore[union-attr]
        ]

    def forward(self, x: Tensor) -> Tensor:
        hooked = self._hooked()
        layers = list(dict.fromkeys(self.addresses[a][0] for a in hooked))
        out = self.model.forward_timesteps(x, timesteps=self.timesteps, layers=layers or None)
        for address in hooked:
            layer, step = self.addresses[address]
            feat = out.features[layer]  # [T, B, ...]
            value = feat[step] if step is not None else feat.transpose(0, 1).contiguous()
            self._modules[address](value)  # type: ignore[misc]
        return out.logits[-1]


def get_extractor(
    model: ClockedModel,
    device: str = "cpu",
    timesteps: int | None = None,
    preprocess: Callable[[Any], Tensor] | None = None,
) -> Any:
    """thingsvision's extractor (``get_extractor_from_model``) for a zoo model.

    Module names are addresses ([`TimeAddressable`][blt_models.integrations.thingsvision.TimeAddressable]): ``"layer3@t7"`` for a layer at a step,
    ``"layer3"`` for all steps; ``extractor.get_module_names()`` lists them after the model's own
    submodules. The transform is the model's evaluation preprocessing
    ([`blt_models.create_transform`][blt_models.create_transform]) unless ``preprocess`` is given.
    """
    from thingsvision import get_extractor_from_model

    wrapped = TimeAddressable(model, timesteps=timesteps)
    extractor = get_extractor_from_model(
        model=wrapped,
        device=device,
        backend="pt",
        preprocess=preprocess if preprocess is not None else create_transform(model),
    )
    _accept_aliases(extractor, wrapped)
    return extractor


def _accept_aliases(extractor: Any, wrapped: TimeAddressable) -> None:
    """Let ``extract_features`` take aliases / negative steps and refuse unknown names loudly.

    thingsvision registers hooks only on names it finds and then fails with a bare KeyError for
    the others; the names are resolved (or refused with the list of layers) first.
    """
    extract = extractor.extract_features

    def extract_features(*args: Any, **kwargs: Any) -> Any:
        name, names = kwargs.get("module_name"), kwargs.get("module_names")
        if name is not None:
            canonical = wrapped.resolve_address(name)
            kwargs["module_name"] = canonical
            return extract(*args, **kwargs)
        if names is not None:
            resolved = [wrapped.resolve_address(n) for n in names]
            kwargs["module_names"] = resolved
            feats = extract(*args, **kwargs)
            if isinstance(feats, dict):  # keyed as the caller asked
                return {n: feats[r] for n, r in zip(names, resolved, strict=True)}
            return feats
        return extract(*args, **kwargs)

    extractor.extract_features = extract_features
    extractor.time_addressable = wrapped
