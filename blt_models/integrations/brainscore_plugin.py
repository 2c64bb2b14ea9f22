"""``blt-models brainscore-plugin NAME OUT_DIR``: a Brain-Score model plugin folder for a zoo model.

The folder follows Brain-Score's plugin layout (``brainscore_vision/models/<plugin>/``):
``__init__.py`` registers the model in ``brainscore_vision.model_registry``; ``model.py`` has
``get_model``, ``get_layers`` and ``get_bibtex``; ``region_layer_map/<identifier>.json`` commits
each region to a layer (no layer selection by download-backed benchmarks); ``requirements.txt``
and ``test.py``. Generating needs neither Brain-Score nor the weights; the plugin needs both.
"""

from __future__ import annotations

import json
import keyword
import math
import numbers
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._registry import get_pretrained_cfg, split_model_name_tag
from .._validate import refuse
from .._version import __version__
from ..errors import ConfigValueError, SaveTargetError, TimestepsError

__all__ = ["write_brainscore_plugin", "default_region_layer_map", "DEFAULT_COVER_MS"]

REGIONS = ("V1", "V2", "V4", "IT")

#: The latest bin end (ms after stimulus onset) that a generated plugin's default clock covers:
#: Brain-Score's generic plugin tests ask for (50, 100) and (100, 200), the standard temporal
#: benchmarks for (70, 170) and, in 10 ms bins, 70-250 ms (Kar2019).
DEFAULT_COVER_MS = 250.0

# A Brain-Score identifier: written literally into model_registry['...'] and a file name.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _check_number(value: Any, field: str, allow_zero: bool) -> float:
    """A finite number > 0 (or >= 0 with ``allow_zero``), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise refuse(field, value, "argument", "must be a finite number.")
    if value < 0 or (value == 0 and not allow_zero):
        raise refuse(field, value, "argument", "must be >= 0." if allow_zero else "must be > 0.")
    return float(value)


def _check_identifier(identifier: Any) -> str:
    if (
        not isinstance(identifier, str)
        or not _IDENTIFIER.fullmatch(identifier)
        or ".." in identifier
    ):
        raise refuse(
            "identifier", identifier, "argument",
            "must be a plain name of letters, digits, '_', '-' and '.' (no path separators, no "
            "'..', no quotes), e.g. 'blt_bl_tiny-fashion_mnist'.",
        )  # fmt: skip
    return identifier


def _check_regions(region_layer_map: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(region_layer_map, Mapping) or not region_layer_map:
        raise ConfigValueError(
            f"region_layer_map = {region_layer_map!r}: give at least one region, e.g. "
            "{'IT': 'layer3'} (--region IT=layer3)."
        )
    for region, layer in region_layer_map.items():
        if region not in REGIONS:
            raise ConfigValueError(
                f"region {region!r} is not a Brain-Score recording target: use "
                f"{', '.join(REGIONS)}."
            )
        if not isinstance(layer, str) or not layer:
            raise ConfigValueError(f"region {region} maps to {layer!r}: give one layer name.")
    return dict(region_layer_map)


def _default_timesteps(model: Any, step_ms: float, onset_ms: float) -> int | None:
    """A clock that covers bins up to `DEFAULT_COVER_MS`; None (the model's own clock) for
    families whose clock length is fixed."""
    need = max(1, math.ceil((DEFAULT_COVER_MS - onset_ms) / step_ms))
    need = max(need, model._resolve_timesteps(None))
    try:
        return model._resolve_timesteps(need)
    except TimestepsError:  # a fixed clock (CORnet-S, feed-forward models): it is what it is
        return None


def default_region_layer_map(layer_names: tuple[str, ...]) -> dict[str, str] | None:
    """The map a family's names imply: CORnet's areas (``V1`` ... ``IT``), BLT-VS's bottom-up
    streams (``v1_bu`` ... and ``loc_bu`` for IT), the ConvRNNs' layers that the authors found
    to match V4 and cIT/aIT best (the first of each: shallow ``conv3`` / ``conv5``, intermediate
    ``conv5`` / ``conv9``); None for families whose layers are not named after brain areas
    (BLT, ResNet): those need an explicit map."""
    if all(r in layer_names for r in REGIONS):
        return {r: r for r in REGIONS}
    for depth, n in (("shallow", 5), ("intermediate", 10)):
        if tuple(layer_names) == tuple(f"conv{k}" for k in range(1, n + 1)):
            from ..models.convrnn import CONVRNN_AREAS

            areas = CONVRNN_AREAS[depth]
            return {"V4": areas["V4"][0], "IT": areas["cIT/aIT"][0]}
    streams = {"V1": "v1_bu", "V2": "v2_bu", "V4": "v4_bu", "IT": "loc_bu"}
    if all(s in layer_names for s in streams.values()):
        return dict(streams)
    return None


def _bibtex(key: str, citation: str | None, source: str | None) -> str:
    note = (citation or source or "blt-models zoo model").replace("{", "(").replace("}", ")")
    return f"@misc{{{key},\n  title = {{{key}}},\n  note = {{{note}}}\n}}"


def write_brainscore_plugin(
    name: str,
    out_dir: str | Path,
    region_layer_map: Mapping[str, str] | None = None,
    identifier: str | None = None,
    step_ms: float = 10.0,
    onset_ms: float = 0.0,
    visual_degrees: float = 8.0,
    timesteps: int | None = None,
) -> Path:
    """Write the plugin folder for the pretrained zoo model ``name``.

    Args:
        name: a pretrained ``arch.tag`` (see ``blt_models.list_pretrained()``), or a published
            model, ``hf-hub:org/repo[@rev]`` or ``local-dir:/path`` (written as an absolute path).
        out_dir: the plugin folder; its name becomes the Python package Brain-Score imports, so it
            must be a valid identifier (e.g. ``cornet_s_imagenet``). Created; must be empty.
        region_layer_map: ``{region: layer}`` with regions from ``V1``, ``V2``, ``V4``, ``IT``;
            default: the family's area names if it has them.
        identifier: Brain-Score identifier (default ``name`` with ``.`` -> ``-``): a plain name
            of letters, digits, ``_``, ``-`` and ``.``; ``__init__.py`` registers it literally as
            ``model_registry['<identifier>']``, which is how Brain-Score finds plugins.
        step_ms: milliseconds per clock step (finite, > 0).
        onset_ms: latency of step 0 (finite, >= 0).
        visual_degrees: degrees the input spans (finite, > 0).
        timesteps: clock length; default: long enough to cover bins up to
            ``DEFAULT_COVER_MS``
            (250 ms: Kar2019's bins, Brain-Score's generic tests), or the model's own clock where
            it cannot change.

    Raises:
        ConfigValueError: an argument the plugin could not use (the message names it).
        SaveTargetError: ``out_dir`` exists and is not empty.
    """
    from .._factory import create_model
    from .._published import is_published_name, read_location

    step_ms = _check_number(step_ms, "step_ms", allow_zero=False)
    onset_ms = _check_number(onset_ms, "onset_ms", allow_zero=True)
    visual_degrees = _check_number(visual_degrees, "visual_degrees", allow_zero=False)
    if not isinstance(name, str) or not name.strip():
        raise refuse(
            "name", name, "argument", "must be a pretrained arch.tag, hf-hub: or local-dir:."
        )
    if is_published_name(name):
        if name.startswith("local-dir:"):
            name = "local-dir:" + str(Path(name.partition(":")[2]).expanduser().resolve())
        cfg = read_location(name, fetch_weights=False).cfg  # config.json only, checked
        arch = cfg.architecture
        # hf-hub:org/repo@rev -> org-repo-rev; local-dir:/path/to/model -> model
        where = name.partition(":")[2]
        where = Path(where).name if name.startswith("local-dir:") else where
        default_ident = re.sub(r"[^A-Za-z0-9_.\-]+", "-", where).strip("-.")
    else:
        arch, tag = split_model_name_tag(name)
        cfg = get_pretrained_cfg(arch, tag)  # unknown names fail here, with suggestions
        if not tag or not cfg.has_weights:
            raise ConfigValueError(
                f"{name!r} is not a pretrained tag with published weights; a Brain-Score plugin "
                "needs weights. Pick one of blt_models.list_pretrained(), or a published model "
                "(hf-hub:org/repo, local-dir:/path)."
            )
        default_ident = name.replace(".", "-")
    ident = _check_identifier(identifier if identifier is not None else default_ident)
    out = Path(out_dir)
    if not out.name.isidentifier() or keyword.iskeyword(out.name):
        suggestion = re.sub(r"\W", "_", out.name) or "my_model"
        raise ConfigValueError(
            f"the plugin folder name {out.name!r} must be a Python identifier (Brain-Score "
            f"imports it as a package), e.g. {suggestion}"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SaveTargetError(
            f"{out} exists and is not empty (or not a folder); choose a new folder"
        )
    model = create_model(name, pretrained=False)  # the architecture: names and clock, no download
    layers = tuple(model.layer_names)
    if region_layer_map is None:
        region_layer_map = default_region_layer_map(layers)
        if region_layer_map is None:
            raise ConfigValueError(
                f"{arch}'s layers ({', '.join(layers)}) are not named after brain areas: give "
                "the map, e.g. --region V1=layer1 --region V4=layer3 --region IT=layer5"
            )
    region_layer_map = {
        r: model.resolve_layer(ly) for r, ly in _check_regions(region_layer_map).items()
    }
    if timesteps is None:
        timesteps = _default_timesteps(model, step_ms, onset_ms)
    else:
        timesteps = model._resolve_timesteps(
            timesteps
        )  # a clock length the model refuses fails now
    settings = dict(step_ms=step_ms, onset_ms=onset_ms, visual_degrees=visual_degrees,
                    timesteps=timesteps)  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    (out / "region_layer_map").mkdir()
    (out / "region_layer_map" / f"{ident}.json").write_text(
        json.dumps(region_layer_map, indent=2) + "\n"
    )
    # Brain-Score finds a plugin by the literal text model_registry['<identifier>'] in its
    # __init__.py (brainscore_core's ImportPlugin.locate_plugin): no variable in the brackets.
    (out / "__init__.py").write_text(
        f'"""Brain-Score plugin: blt-models {name} (generated by `blt-models brainscore-plugin`)."""\n\n'
        "from brainscore_vision import model_registry\n\n"
        "from .model import get_model\n\n"
        f"model_registry[{ident!r}] = lambda: get_model({ident!r})\n"
    )
    (out / "model.py").write_text(
        f'"""Brain-Score plugin model: blt-models {name}.\n\n'
        f"Generated by `blt-models brainscore-plugin` (blt-models {__version__}). Clock step t is\n"
        f"[onset_ms + t * step_ms, onset_ms + (t + 1) * step_ms) after stimulus onset.\n"
        '"""\n\n'
        "import json\n"
        "from pathlib import Path\n\n"
        "import blt_models as bm\n"
        "from blt_models.integrations.brainscore import to_brain_model\n\n"
        f"MODEL_ID = {ident!r}\n"
        f"ZOO_NAME = {name!r}\n"
        f"SETTINGS = {settings!r}\n"
        f"LAYERS = {list(layers)!r}\n\n\n"
        "def get_layers(name):\n"
        "    assert name == MODEL_ID, name\n"
        "    return list(LAYERS)\n\n\n"
        "def get_model(name):\n"
        "    assert name == MODEL_ID, name\n"
        "    path = Path(__file__).parent / 'region_layer_map' / f'{MODEL_ID}.json'\n"
        "    region_layer_map = json.loads(path.read_text())\n"
        "    model = bm.create_model(ZOO_NAME, pretrained=True)\n"
        "    return to_brain_model(model, MODEL_ID, region_layer_map, **SETTINGS)\n\n\n"
        "def get_bibtex(name):\n"
        "    assert name == MODEL_ID, name\n"
        f"    return {_bibtex(re.sub(r'[^A-Za-z0-9_]', '_', ident), cfg.citation, cfg.source)!r}\n"
    )
    (out / "requirements.txt").write_text(f"blt-models[brainscore]=={__version__}\n")
    (out / "test.py").write_text(
        "import pytest\n\n"
        "import brainscore_vision\n\n\n"
        "@pytest.mark.travis_slow\n"
        "def test_has_identifier():\n"
        f"    model = brainscore_vision.load_model({ident!r})\n"
        f"    assert model.identifier == {ident!r}\n"
    )
    return out
