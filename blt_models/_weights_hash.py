"""The hash of a model's weights, and the record of the weights ``create_model`` loaded.

Below the clock and the loaders (it imports nothing of the package): the clock's
``prune_intermediate_layers`` keeps the record of weights it only removes from, the loaders set
it, and feature files report it (``weights_sha256``, ``pretrained``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["LOADED_SHA256_ATTR", "weights_sha256", "removing_weights"]

#: Attribute where ``create_model`` keeps ``weights_sha256`` of the weights it loaded, so that
#: a feature file can tell published weights from weights changed after loading.
LOADED_SHA256_ATTR = "_loaded_weights_sha256"


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the tensors actually used (``model.state_dict()``), streamed tensor by tensor.

    The hash runs over the state dict's entries sorted by name; each entry adds one line
    ``json.dumps([name, dtype, shape])`` + ``"\\n"`` (dtype without ``torch.``, e.g.
    ``["layer0.weight", "float32", [64, 3, 3, 3]]``) and then the tensor's bytes in C
    (row-major) order, so the value does not depend on the memory layout (channels_last or not)
    or on the device. Recompute it with::

        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape)])
                     .encode() + b"\\n")
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        h.hexdigest()

    Nothing of the size of the model is copied: a row-major CPU tensor is hashed in place, any
    other (channels_last, on a GPU) one row ``t[i]`` at a time. The value of feature-file
    format 2 (``sha256(safetensors.torch.save(state_dict))``) held two or three serialised
    copies of the weights while it was computed.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        header = [name, str(t.dtype).replace("torch.", ""), list(t.shape)]
        digest.update(json.dumps(header).encode() + b"\n")
        in_place = t.device.type == "cpu" and t.is_contiguous()
        for part in [t] if in_place or t.ndim < 2 else t:  # rows: the row-major order
            part = part.to("cpu").contiguous()
            digest.update(part.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@contextlib.contextmanager
def removing_weights(model: nn.Module) -> Iterator[None]:
    """Around a change that only removes tensors of ``model`` (pruned layers, a dropped head):
    weights that were as loaded before stay recorded as loaded (their `LOADED_SHA256_ATTR`
    becomes the hash of what is left), so a feature file of the smaller model still says which
    published weights it runs on. Weights changed before stay changed."""
    loaded = getattr(model, LOADED_SHA256_ATTR, None)
    as_loaded = loaded is not None and loaded == weights_sha256(model)
    yield
    if as_loaded:
        setattr(model, LOADED_SHA256_ATTR, weights_sha256(model))
