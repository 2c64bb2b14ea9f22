"""``create_model``: one path from a name to a model.

name -> ``read_location`` (architecture, recorded constructor
arguments, pretrained config, weight file: plain data, for registry names, tags, ``hf-hub:`` and
``local-dir:`` alike) -> constructor arguments merged and checked -> the entrypoint builds ->
weights loaded strictly (``blt_models._checkpoint``) -> head / stem adapted -> the model
records ``pretrained_cfg`` and ``model_args``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ._checkpoint import (
    extract_state_dict,
    load_checkpoint,
    load_state_dict_strict,
    read_checkpoint,
)
from ._clock import ClockedModel
from ._pretrained import PretrainedCfg
from ._published import is_published_name, read_location, without_provenance
from ._registry import get_model_entrypoint
from ._validate import check_common_args, with_origin
from ._weights_hash import LOADED_SHA256_ATTR, removing_weights, weights_sha256
from .errors import BltModelsError, ConfigValueError, UnsupportedError

__all__ = [
    "create_model",
    "create_with_origins",
    "build_model",
    "record_model_args",
    "adapt_in_chans",
]


def create_model(
    model_name: str,
    pretrained: bool | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    timesteps: int | None = None,
    *,
    verify: bool = True,
    check_values: bool = True,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    feature_cls: str | type | None = None,
    feature_cfg: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> ClockedModel:
    """Build a zoo model, optionally with weights.

    Args:
        model_name: ``"blt_bl"``, ``"arch.tag"`` (a pretrained config), ``"hf-hub:org/repo[@rev]"``
            or ``"local-dir:/path"`` (a folder written by [`save_pretrained`][blt_models.save_pretrained]).
        pretrained: load the weights of the tag (the architecture's default tag if none is named).
            None (default) means False for registry names and True for ``hf-hub:`` and
            ``local-dir:`` names, which point at published weights; pass False to build only the
            architecture they describe.
        checkpoint_path: a local weight file: safetensors, a state dict, a reference training
            checkpoint or an official CORnet file. Loaded strictly.
        num_classes: readout width (0: no classifier); with weights, a different value replaces
            the head by a freshly initialised one. None: as the tag / architecture default.
        in_chans: input channels; with weights, a different value adapts the first convolution
            (timm's ``adapt_input_conv``: 1 channel sums the filters, more repeat and rescale
            them). None: as the tag / default.
        timesteps: default number of clock steps of recurrent models (the reference ``times``),
            1 .. 10,000; numpy and 0-d tensor integers are accepted.
        verify: check published weights against their pinned / recorded SHA-256 (default). False
            loads them unverified, with an [`UnverifiedWeightsWarning`][blt_models.errors.UnverifiedWeightsWarning].
        check_values: refuse weights with NaN / Inf, or integers where the model has floats
            (default). False loads them as they are, with a warning.
        global_pool: timm's pooling of the readout: ``"avg"`` (default) or ``""`` (none, with
            ``num_classes=0``: ``forward`` returns the unpooled map ``[B, C, H, W]``).
        features_only: return timm's feature wrapper instead of the classifier: its forward
            gives ``[B, C, H, W]`` of each layer of ``out_indices`` at the last clock step (as
            ``forward_intermediates``). For the features at step ``t`` build it with
            ``timesteps=t + 1`` (the clock is causal: a later step never changes an earlier one);
            for every step use ``model.forward_timesteps``.
        out_indices: layers for ``features_only`` (indices into ``model.layer_names``, negative
            from the end, or an int n for the last n); default every layer.
        feature_cls: ``"getter"`` (default, timm's ``FeatureGetterNet``) or ``"hook"`` (timm's
            ``FeatureHookNet``, only where the layers are submodules the clock calls once:
            CORnet-Z, ResNet); timm's ``"list"``, ``"dict"`` and ``"fx"`` wrappers need
            submodules or torch.fx and are refused with
            [`UnsupportedError`][blt_models.UnsupportedError].
        feature_cfg: timm's dict form of ``out_indices`` / ``feature_cls``.
        device: build the model there (``"meta"``: no memory, for shapes and configs; no
            weights can be loaded there, so ``pretrained`` / ``checkpoint_path`` are refused).
        dtype: floating-point dtype of the parameters.
        **kwargs: architecture arguments (``num_layers``, ``pool``, ``unroll``...).

    A named tag (or ``pretrained=True``) also supplies the defaults that its weights need
    (timesteps, unrolling, classes, architecture arguments); explicit arguments override them.
    Every value is checked where it enters: errors ([`ConfigValueError`][blt_models.errors.ConfigValueError]
    and the other [`blt_models.errors`][blt_models.errors]) name the field and where it came from.
    """
    if device is not None and not isinstance(device, (str, torch.device)):
        raise ConfigValueError(f"device = {device!r} (argument): must be a torch.device or str.")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ConfigValueError(
            f"dtype = {dtype!r} (argument): must be a floating-point torch.dtype, e.g. "
            "torch.float32 or torch.bfloat16."
        )
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = create_with_origins(
            model_name, pretrained, checkpoint_path, num_classes, in_chans, timesteps,
            verify=verify, check_values=check_values, kwargs=kwargs,
        )  # fmt: skip
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    if global_pool is not None:
        model._check_global_pool(global_pool, model.num_classes)
        model.global_pool = global_pool
    features = dict(feature_cfg or {})
    if out_indices is not None:
        features["out_indices"] = out_indices
    if feature_cls is not None:
        features["feature_cls"] = feature_cls
    if features_only:
        return feature_wrapper(model, **features)  # type: ignore[return-value]  # timm's wrapper
    if features:
        raise ConfigValueError(
            f"{', '.join(sorted(features))} (argument) describe a feature wrapper: pass "
            "features_only=True with them."
        )
    return model


def feature_wrapper(
    model: ClockedModel,
    out_indices: int | Sequence[int] | None = None,
    feature_cls: str | type = "getter",
    **feature_cfg: Any,
) -> nn.Module:
    """timm's feature wrapper around ``model`` (``create_model(..., features_only=True)``).

    ``"getter"`` (timm's ``FeatureGetterNet``) reads the layers with ``forward_intermediates``
    and works for every model (pruned after the last index where no later layer feeds a kept
    one back); ``"hook"`` (``FeatureHookNet``) only where every chosen layer is a
    submodule the clock calls once per forward. The wrapper carries ``pretrained_cfg`` /
    ``default_cfg`` as timm's do (without the classifier keys).
    """
    from timm.models._builder import pretrained_cfg_for_features
    from timm.models._features import FeatureGetterNet, FeatureHookNet

    names = {"getter": FeatureGetterNet, "hook": FeatureHookNet, "hooknet": FeatureHookNet}
    cls = (
        names.get(feature_cls.lower(), feature_cls) if isinstance(feature_cls, str) else feature_cls
    )
    take = model._take_indices(len(model.layer_names) if out_indices is None else out_indices)
    alternative = (
        "Use feature_cls='getter' (timm's FeatureGetterNet, the default), "
        "model.forward_intermediates(x) or model.forward_timesteps(x, layers=[...]) for every step."
    )
    if isinstance(cls, type) and issubclass(cls, FeatureHookNet):
        unhookable = [model.layer_names[i] for i in take if model.layer_names[i] not in
                      model.hookable_layers]  # fmt: skip
        if unhookable:
            raise UnsupportedError(
                f"feature_cls={feature_cls!r} hooks submodules, but {', '.join(unhookable)} of "
                f"{model._display_name()} is no submodule the clock calls once per forward (a "
                f"recurrent layer is computed step by step). {alternative}"
            )
        wrapper: nn.Module = cls(model, out_indices=tuple(take), **feature_cfg)
    elif isinstance(cls, type) and issubclass(cls, FeatureGetterNet):
        # timm's wrapper prunes the model to the last index; where later layers feed kept ones
        # back (or the family cannot remove layers) only the head goes, and every layer runs.
        if feature_cfg.pop("prune", True):
            if model._why_layers_must_stay(max(take)) is None:
                model.prune_intermediate_layers(take)
            else:
                with removing_weights(model):
                    model.reset_classifier(0, "")
        wrapper = cls(model, out_indices=tuple(take), prune=False, **feature_cfg)
    else:
        raise UnsupportedError(
            f"feature_cls={feature_cls!r} is not available for {model._display_name()}: timm's "
            "list / dict wrappers rebuild the model from its submodules and 'fx' traces it with "
            f"torch.fx, while its layers are steps of a clock (a Python loop). {alternative}"
        )
    cfg = pretrained_cfg_for_features(model.default_cfg)
    for attribute in ("pretrained_cfg", "default_cfg"):  # as timm's builder sets them
        setattr(wrapper, attribute, cfg)
    return wrapper


def create_with_origins(
    model_name: str,
    pretrained: bool | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    timesteps: int | None = None,
    *,
    verify: bool = True,
    check_values: bool = True,
    kwargs: dict[str, Any] | None = None,
    arg_origins: dict[str, str] | None = None,
) -> ClockedModel:
    """[`create_model`][blt_models.create_model], with ``arg_origins`` naming where argument values came from (e.g.
    ``{"timesteps": "args.recurrent_steps of checkpoint.pth"}``; default ``"argument"``)."""
    kwargs = dict(kwargs or {})
    given = dict(arg_origins or {})
    if not isinstance(model_name, str) or not model_name.strip():
        raise ConfigValueError(
            f"model_name = {model_name!r} (argument): must be a model name such as 'blt_bl', "
            "'blt_bl_tiny.fashion_mnist', 'hf-hub:org/repo' or 'local-dir:/path'; see "
            "blt_models.list_models()."
        )
    for flag, value in (("pretrained", pretrained), ("verify", verify),
                        ("check_values", check_values)):  # fmt: skip
        if value is not None and not isinstance(value, bool):
            raise ConfigValueError(f"{flag} = {value!r} (argument): must be True or False.")
    if checkpoint_path is not None and not isinstance(checkpoint_path, (str, os.PathLike)):
        raise ConfigValueError(
            f"checkpoint_path = {checkpoint_path!r} (argument): must be a path to a weight file."
        )
    if pretrained is None:
        pretrained = is_published_name(model_name) and checkpoint_path is None
    if pretrained and checkpoint_path is not None:
        raise ConfigValueError("pass either pretrained=True or checkpoint_path=, not both")
    if (pretrained or checkpoint_path is not None) and torch.get_default_device().type == "meta":
        # Copying into meta tensors does nothing: the "loaded" model would have no weights.
        raise ConfigValueError(
            f"{model_name} is built on the meta device (device='meta' or a torch.device('meta') "
            "context), whose tensors hold no values, so no weights can be loaded into it. Pass "
            "pretrained=False and no checkpoint_path for a shape-only model, or build it on "
            "'cpu' (or your GPU) to load the weights."
        )
    explicit = check_common_args(
        {
            k: v
            for k, v in (
                ("num_classes", num_classes),
                ("in_chans", in_chans),
                ("timesteps", timesteps),
            )
            if v is not None
        },  # fmt: skip
        given,
    )
    loc = read_location(model_name, fetch_weights=pretrained, verify=verify)
    # Published weights define the head and stem: other num_classes / in_chans adapt them after
    # loading. A checkpoint_path is loaded into the architecture exactly as asked for.
    with_weights = pretrained
    build = dict(loc.model_args)
    origins = dict(loc.origins)
    build.update(kwargs)
    origins.update({k: given.get(k, "argument") for k in kwargs})
    if "timesteps" in explicit:
        build["timesteps"] = explicit["timesteps"]
        origins["timesteps"] = given.get("timesteps", "argument")
    if not with_weights:  # no weights to fit: build the head and stem as asked
        for key in ("num_classes", "in_chans"):
            if key in explicit:
                build[key], origins[key] = explicit[key], given.get(key, "argument")

    weights = loc.weights if pretrained else checkpoint_path
    cfg = loc.cfg
    if weights is None:  # built without its weights: keep none of their provenance
        cfg = without_provenance(cfg)
    elif not pretrained:  # a checkpoint file's weights, not the tag's: name the file instead
        cfg = without_provenance(cfg).replace(source=f"checkpoint_path {os.fspath(weights)}")
    what = loc.weights_origin or (os.fspath(checkpoint_path) if checkpoint_path else "")

    def load(model: ClockedModel) -> None:
        assert weights is not None
        if pretrained:
            by = "its config.json" if loc.published else "the tag"
            described = f"{what} (for {loc.arch} as {by} describes it)"
            state = extract_state_dict(read_checkpoint(weights), described)
            load_state_dict_strict(model, state, what=described, check_values=check_values)
        else:
            load_checkpoint(model, weights, check_values=check_values)

    return build_model(
        loc.arch, cfg, build,
        load=load if weights is not None else None,
        num_classes=explicit.get("num_classes") if with_weights else None,
        in_chans=explicit.get("in_chans") if with_weights else None,
        origins=origins,
    )  # fmt: skip


def _accepted_keys(entrypoint: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``entrypoint`` takes, or None if it takes ``**kwargs``."""
    try:
        params = inspect.signature(entrypoint).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _construct(
    arch: str, build: dict[str, Any], origins: dict[str, str]
) -> tuple[ClockedModel, dict[str, Any]]:
    """``entrypoint(**build)``, every refusal a named error that says where the values came from."""
    entrypoint = get_model_entrypoint(arch)
    build = check_common_args(build, origins)
    accepted = _accepted_keys(entrypoint)
    unknown = sorted(set(build) - accepted) if accepted is not None else []
    if unknown:
        where = "; ".join(f"{k} from {origins.get(k, 'argument')}" for k in unknown)
        raise ConfigValueError(
            f"{arch} takes no argument(s) {', '.join(unknown)} ({where}). Its arguments: "
            f"{', '.join(sorted(accepted or ()))}."
        )
    try:
        model = entrypoint(**build)
    except ConfigValueError as err:
        raise with_origin(err, origins) from None
    except BltModelsError:
        raise
    except (
        TypeError, ValueError, ArithmeticError, LookupError, AttributeError, AssertionError,
        RuntimeError,
    ) as err:  # fmt: skip
        given = ", ".join(f"{k}={v!r} ({origins.get(k, 'argument')})" for k, v in build.items())
        raise ConfigValueError(
            f"{arch} cannot be built from {given or 'its defaults'}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(model, ClockedModel):
        raise ConfigValueError(f"the entrypoint of {arch} returned {type(model).__name__}")
    return model, build


def build_model(
    arch: str,
    cfg: PretrainedCfg,
    build: dict[str, Any],
    load: Callable[[ClockedModel], None] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    origins: dict[str, str] | None = None,
) -> ClockedModel:
    """Call the entrypoint of ``arch`` with ``build``, load weights, adapt head / stem, record.

    ``load`` fills the freshly built model (strictly). ``num_classes`` / ``in_chans`` that differ
    from the built model replace the head / adapt the first convolution afterwards. The result
    carries ``pretrained_cfg`` (updated to the final model) and ``model_args`` (the constructor
    arguments that rebuild it, see ``record_model_args``).
    """
    model, build = _construct(arch, build, origins or {})
    model.pretrained_cfg = cfg
    built_num_classes, built_in_chans = model.num_classes, model.in_chans
    if load is not None:
        load(model)
    if in_chans is not None and in_chans != model.in_chans:
        adapt_in_chans(model, in_chans)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    # One statistic per input channel (or one for all), whatever the record said.
    mean, std = _per_channel(cfg.mean, model.in_chans), _per_channel(cfg.std, model.in_chans)
    input_size = model.fixed_input_size or (model.in_chans, *cfg.input_size[1:])
    timm_keys = model.timm_cfg_keys(input_size, pool_size=False)  # no dry run here
    del timm_keys["input_size"]
    model.pretrained_cfg = cfg.replace(
        **timm_keys,
        architecture=arch,
        num_classes=model.num_classes,
        input_size=input_size,
        mean=mean,
        std=std,
        timesteps=model.timesteps,
        unroll=getattr(model, "unroll", cfg.unroll),
        class_names=cfg.class_names if model.num_classes == cfg.num_classes else None,
    )
    args = record_model_args(get_model_entrypoint(arch), model, build)
    if model.num_classes != built_num_classes:
        args["num_classes"] = model.num_classes
    if model.in_chans != built_in_chans:
        args["in_chans"] = model.in_chans
    model.model_args = args  # type: ignore[assignment]  # a plain attribute, not a submodule
    if load is not None:  # what was loaded, so that later changes to the weights are visible
        setattr(model, LOADED_SHA256_ATTR, weights_sha256(model))
    return model


def _per_channel(stats: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Normalisation statistics for ``channels`` inputs after ``adapt_in_chans``: the
    average for one channel (filters summed), else cycled as the filters are."""
    if len(stats) in (1, channels):
        return tuple(stats)
    if channels == 1:
        return (sum(stats) / len(stats),)
    return tuple(stats[i % len(stats)] for i in range(channels))


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
    """Change the input channels of a loaded model, keeping its first-layer filters meaningful.

    timm's ``adapt_input_conv`` with the loaded weights' own channel count as the base: to 1
    channel the filters are summed (a gray image then gives what the gray image repeated on every
    channel gave); to more channels they are repeated and scaled by ``old / new``, so an image
    whose channels are all equal gives the same response as before.
    """
    from timm.models import adapt_input_conv
    from torch import nn

    conv = model.get_submodule(model.first_conv_name)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ConfigValueError(
            f"{type(model).__name__}'s first layer {model.first_conv_name!r} cannot be adapted to "
            f"in_chans={in_chans}; build it with in_chans={model.in_chans}."
        )
    weight = conv.weight.detach()
    adapted = adapt_input_conv(in_chans, weight, base_chans=int(weight.shape[1]))
    conv.weight = nn.Parameter(adapted.contiguous(), requires_grad=conv.weight.requires_grad)
    conv.in_channels = in_chans
    model.in_chans = in_chans
    model.__dict__.pop("_feature_info_cache", None)


def save_and_check_reload(model: nn.Module, out_dir: Any, **pretrained_cfg: Any) -> Any:
    """``save_pretrained(model, out_dir)``, then check that ``create_model("local-dir:...")``
    reloads identical weights; returns the folder (what every converter does last)."""
    import torch

    from ._published import save_pretrained
    from .errors import PublishedFormatError

    out = save_pretrained(model, out_dir, **pretrained_cfg)
    reloaded = create_model(f"local-dir:{out}", pretrained=True)
    ref, got = model.state_dict(), reloaded.state_dict()
    if ref.keys() != got.keys() or not all(torch.equal(ref[k], got[k]) for k in ref):
        raise PublishedFormatError(f"{out} does not reload to the converted weights")
    return out
