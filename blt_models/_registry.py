"""Model registry: architecture names, pretrained tags and their configs.

Architectures register a builder function with [`register_model`][blt_models.register_model]; a family file also calls
[`register_pretrained_cfgs`][blt_models.register_pretrained_cfgs] with one [`PretrainedCfg`][blt_models.PretrainedCfg] per ``arch.tag``. The first tag
registered for an architecture is its default (what ``pretrained=True`` without a tag loads).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterable
from typing import Any

from ._pretrained import PretrainedCfg
from .errors import UnknownModelError

__all__ = [
    "register_model",
    "register_pretrained_cfgs",
    "list_models",
    "list_pretrained",
    "is_model",
    "get_model_entrypoint",
    "get_pretrained_cfg",
    "split_model_name_tag",
    "UnknownModelError",
]

_model_entrypoints: dict[str, Callable[..., Any]] = {}
_model_family: dict[str, str] = {}
_pretrained_cfgs: dict[str, dict[str, PretrainedCfg]] = {}  # arch -> tag -> cfg


def _families() -> None:
    """Import the model families (which register themselves) before the first lookup.

    The package root loads lazily, so a lookup through a submodule (``blt_models._registry``,
    ``blt_models.extract`` given a model name) must not find an empty registry.
    """
    global _families_imported
    if not _families_imported:
        _families_imported = True
        try:
            importlib.import_module(".models", __package__)
        except BaseException:
            _families_imported = False
            raise


_families_imported = False


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: register ``fn`` as the builder of the architecture named ``fn.__name__``."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model {name!r} is registered twice")
    _model_entrypoints[name] = fn
    _model_family[name] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def register_pretrained_cfgs(cfgs: Iterable[PretrainedCfg]) -> None:
    """Register pretrained configs; the first tag of each architecture is its default."""
    for cfg in cfgs:
        tags = _pretrained_cfgs.setdefault(cfg.architecture, {})
        if cfg.tag in tags:
            raise ValueError(f"pretrained config {cfg.name!r} is registered twice")
        tags[cfg.tag] = cfg


def split_model_name_tag(name: str) -> tuple[str, str]:
    """``"blt_bl.vggface2"`` -> ``("blt_bl", "vggface2")``; no tag -> ``(name, "")``."""
    arch, _, tag = name.partition(".")
    return arch, tag


def _filter(names: Iterable[str], pattern: str | Iterable[str] | None) -> list[str]:
    names = sorted(names)
    if not pattern:
        return names
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def list_models(pattern: str | Iterable[str] | None = None, pretrained: bool = False) -> list[str]:
    """Registered architecture names, optionally filtered by glob pattern(s).

    With ``pretrained=True`` only architectures that have at least one set of weights.
    """
    _families()
    names: Iterable[str] = _model_entrypoints
    if pretrained:
        names = [
            n for n in names if any(c.has_weights for c in _pretrained_cfgs.get(n, {}).values())
        ]
    return _filter(names, pattern)


def list_pretrained(pattern: str | Iterable[str] | None = None) -> list[str]:
    """``arch.tag`` names that have weights (Hub repo, pinned URL or a file in the package)."""
    _families()
    names = [c.name for tags in _pretrained_cfgs.values() for c in tags.values() if c.has_weights]
    return _filter(names, pattern)


def list_pretrained_cfgs(pattern: str | Iterable[str] | None = None) -> list[str]:
    """Every registered ``arch.tag``, including configs whose weights are not published."""
    _families()
    names = [c.name for tags in _pretrained_cfgs.values() for c in tags.values()]
    return _filter(names, pattern)


def is_model(name: str) -> bool:
    """True if ``name`` (with or without a tag) is a registered architecture (and tag)."""
    _families()
    arch, tag = split_model_name_tag(name)
    if arch not in _model_entrypoints:
        return False
    return not tag or tag in _pretrained_cfgs.get(arch, {})


def _unknown(kind: str, name: str, candidates: Iterable[str], hint: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.5)
    suggestion = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownModelError(f"Unknown {kind} {name!r}.{suggestion} {hint}")


def get_model_entrypoint(arch: str) -> Callable[..., Any]:
    _families()
    try:
        return _model_entrypoints[arch]
    except KeyError:
        raise _unknown(
            "model", arch, _model_entrypoints, "See blt_models.list_models() for all names."
        ) from None


def model_family(arch: str) -> str:
    get_model_entrypoint(arch)
    return _model_family[arch]


def get_pretrained_cfg(arch: str, tag: str = "") -> PretrainedCfg:
    """The config of ``arch.tag``; with no tag, the architecture's default tag.

    Architectures without any registered tag get a plain default record (ImageNet statistics).
    """
    get_model_entrypoint(arch)
    tags = _pretrained_cfgs.get(arch, {})
    if not tag:
        return next(iter(tags.values())) if tags else PretrainedCfg(architecture=arch)
    if tag not in tags:
        known = [f"{arch}.{t}" for t in tags]
        hint = (
            f"Tags of {arch}: {', '.join(known)}." if known else f"{arch} has no pretrained tags."
        )
        raise _unknown("pretrained tag", f"{arch}.{tag}", known, hint)
    return tags[tag]
