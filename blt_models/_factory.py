"""``create_model``: from a name (``arch``, ``arch.tag``, ``hf-hub:``, ``local-dir:``) to a model."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from ._builder import load_checkpoint
from ._clock import ClockedModel
from ._hub import resolve_weights_file
from ._pretrained import PretrainedCfg
from ._registry import get_model_entrypoint, get_pretrained_cfg, split_model_name_tag

__all__ = ["create_model", "build_model", "record_model_args"]


def create_model(
    model_name: str,
    pretrained: bool | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    timesteps: int | None = None,
    **kwargs: Any,
) -> ClockedModel:
    """Build a zoo model, optionally with weights.

    Args:
        model_name: ``"blt_bl"``, ``"arch.tag"`` (a pretrained config), ``"hf-hub:org/repo[@rev]"``
            or ``"local-dir:/path"`` (a folder written by :func:`save_pretrained`).
        pretrained: load the weights of the tag (the architecture's default tag if none is named).
            None (default) means False for registry names and True for ``hf-hub:`` and
            ``local-dir:`` names, which point at published weights; pass False to build only the
            architecture they describe.
        checkpoint_path: a local weight file: safetensors, a state dict, a reference training
            checkpoint or an official CORnet file. Loaded strictly.
        num_classes: readout width; with ``pretrained=True`` a different value replaces the head
            by a freshly initialised one. None: as the tag / architecture default.
        in_chans: input channels; with ``pretrained=True`` a different value adapts the first
            convolution (timm's ``adapt_input_conv``). None: as the tag / default (3).
        timesteps: default number of clock steps of recurrent models (the reference ``times``).
        **kwargs: architecture arguments (``num_layers``, ``pool``, ``unroll``...).

    A named tag (or ``pretrained=True``) also supplies the defaults that its weights need
    (timesteps, unrolling, classes, architecture arguments); explicit arguments override them.
    """
    if model_name.startswith(("hf-hub:", "local-dir:")):
        from ._published import create_from_published

        if pretrained is None:
            pretrained = checkpoint_path is None

        return create_from_published(
            model_name, pretrained=pretrained, checkpoint_path=checkpoint_path,
            num_classes=num_classes, in_chans=in_chans, timesteps=timesteps, **kwargs,
        )  # fmt: skip
    pretrained = bool(pretrained)
    arch, tag = split_model_name_tag(model_name)
    cfg = get_pretrained_cfg(arch, tag)  # also checks that arch is registered
    if pretrained and checkpoint_path is not None:
        raise ValueError("pass either pretrained=True or checkpoint_path=, not both")

    if not pretrained and (checkpoint_path is None or not tag):
        # Without the tag's weights: keep its preprocessing and timing conventions, but none of
        # the provenance of weights the model does not hold (a saved or extracted model must not
        # claim training it never had). A checkpoint loaded into a named tag keeps its record.
        cfg = cfg.replace(
            hf_hub_id=None, hf_hub_filename=None, hf_hub_revision=None, url=None, file=None,
            sha256=None, license=None, source=None, training_data=None, description=None,
            metrics={},
        )  # fmt: skip
    if not (pretrained or tag):  # an architecture: not even the default tag's name and classes
        cfg = cfg.replace(tag="", class_names=None)

    build: dict[str, Any] = {}
    if pretrained or tag:
        build.update(cfg.model_args)
        build["num_classes"] = cfg.num_classes
        build["in_chans"] = cfg.input_size[0]
        if cfg.timesteps is not None:
            build["timesteps"] = cfg.timesteps
        if cfg.unroll is not None:
            build["unroll"] = cfg.unroll
    build = merge_build_args(build, kwargs, timesteps, num_classes, in_chans, pretrained)
    weights = resolve_weights_file(cfg) if pretrained else checkpoint_path
    return build_model(
        arch, cfg, build,
        load=(lambda m: load_checkpoint(m, weights)) if weights is not None else None,
        num_classes=num_classes, in_chans=in_chans,
    )  # fmt: skip


def merge_build_args(
    defaults: dict[str, Any],
    kwargs: dict[str, Any],
    timesteps: int | None,
    num_classes: int | None,
    in_chans: int | None,
    pretrained: bool,
) -> dict[str, Any]:
    """Constructor arguments: recorded ``defaults`` < explicit ``kwargs`` < ``timesteps``.

    With ``pretrained`` the weights define the head and stem, so ``num_classes`` / ``in_chans``
    are not built in; :func:`build_model` adapts them after loading.
    """
    build = {**defaults, **kwargs}
    if timesteps is not None:
        build["timesteps"] = timesteps
    if not pretrained:
        if num_classes is not None:
            build["num_classes"] = num_classes
        if in_chans is not None:
            build["in_chans"] = in_chans
    return build


def build_model(
    arch: str,
    cfg: PretrainedCfg,
    build: dict[str, Any],
    load: Callable[[ClockedModel], None] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
) -> ClockedModel:
    """Call the entrypoint of ``arch`` with ``build``, load weights, adapt head / stem, record.

    ``load`` fills the freshly built model (strictly). ``num_classes`` / ``in_chans`` that differ
    from the built model replace the head / adapt the first convolution afterwards. The result
    carries ``pretrained_cfg`` (updated to the final model) and ``model_args`` (the constructor
    arguments that rebuild it, see :func:`record_model_args`).
    """
    entrypoint = get_model_entrypoint(arch)
    model = entrypoint(**build)
    model.pretrained_cfg = cfg
    built_num_classes, built_in_chans = model.num_classes, model.in_chans
    if load is not None:
        load(model)
    if in_chans is not None and in_chans != model.in_chans:
        adapt_in_chans(model, in_chans)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    model.pretrained_cfg = cfg.replace(
        architecture=arch,
        num_classes=model.num_classes,
        input_size=(model.in_chans, *cfg.input_size[1:]),
        timesteps=model.timesteps,
        unroll=getattr(model, "unroll", cfg.unroll),
        class_names=cfg.class_names if model.num_classes == cfg.num_classes else None,
    )
    args = record_model_args(entrypoint, model, build)
    if model.num_classes != built_num_classes:
        args["num_classes"] = model.num_classes
    if model.in_chans != built_in_chans:
        args["in_chans"] = model.in_chans
    model.model_args = args
    return model


def record_model_args(
    entrypoint: Callable[..., Any], model: nn.Module, build: dict[str, Any]
) -> dict[str, Any]:
    """Constructor arguments that rebuild ``model`` with ``entrypoint(**args)``, for config.json.

    Works for any registered architecture: the arguments the entrypoint was called with, completed
    by every keyword the entrypoint's signature names explicitly (defaults included) whose value
    the model exposes as an attribute of the same name. Entrypoints that take only ``**kwargs``
    record exactly what they were called with, which rebuilds them just as well.
    """
    args = dict(build)
    try:
        params = inspect.signature(entrypoint).parameters
    except (TypeError, ValueError):  # builtins, odd callables: keep what we passed
        return args
    for name, param in params.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in args:
            continue
        if name == "pretrained" or not hasattr(model, name):
            continue
        value = getattr(model, name)
        if isinstance(value, (bool, int, float, str, type(None))) or (
            isinstance(value, (tuple, list))
            and all(isinstance(v, (bool, int, float, str)) for v in value)
        ):
            args[name] = list(value) if isinstance(value, tuple) else value
    return args


def adapt_in_chans(model: ClockedModel, in_chans: int) -> None:
    """Change the input channels of a loaded model, keeping its first-layer filters meaningful."""
    from timm.models import adapt_input_conv
    from torch import nn

    conv = model.get_submodule(model.first_conv_name)
    assert isinstance(conv, nn.Conv2d)
    conv.weight = nn.Parameter(adapt_input_conv(in_chans, conv.weight.detach()))
    conv.in_channels = in_chans
    model.in_chans = in_chans
