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
import re
from collections.abc import Mapping
from pathlib import Path

from .._registry import get_pretrained_cfg, split_model_name_tag
from .._version import __version__

__all__ = ["write_brainscore_plugin", "default_region_layer_map"]

REGIONS = ("V1", "V2", "V4", "IT")


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
    """Write the plugin folder for the pretrained zoo model ``name`` (``arch.tag``).

    Args:
        name: a pretrained ``arch.tag`` (see ``blt_models.list_pretrained()``).
        out_dir: the plugin folder; its name becomes the Python package Brain-Score imports, so it
            must be a valid identifier (e.g. ``cornet_s_imagenet``). Created; must be empty.
        region_layer_map: ``{region: layer}``; default: the family's area names if it has them.
        identifier: Brain-Score identifier (default ``name`` with ``.`` -> ``-``).
        step_ms, onset_ms, visual_degrees, timesteps: as for
            [`blt_models.integrations.brainscore.to_brain_model`][blt_models.integrations.brainscore.to_brain_model].
    """
    from .._factory import create_model

    arch, tag = split_model_name_tag(name)
    cfg = get_pretrained_cfg(arch, tag)  # unknown names fail here, with suggestions
    if not tag or not cfg.has_weights:
        raise ValueError(
            f"{name!r} is not a pretrained tag with published weights; a Brain-Score plugin "
            "needs weights. Pick one of blt_models.list_pretrained()."
        )
    out = Path(out_dir)
    if not out.name.isidentifier() or keyword.iskeyword(out.name):
        suggestion = re.sub(r"\W", "_", out.name) or "my_model"
        raise ValueError(
            f"the plugin folder name {out.name!r} must be a Python identifier (Brain-Score "
            f"imports it as a package), e.g. {suggestion}"
        )
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    model = create_model(name, pretrained=False)  # the architecture: names and clock, no download
    layers = tuple(model.layer_names)
    if region_layer_map is None:
        region_layer_map = default_region_layer_map(layers)
        if region_layer_map is None:
            raise ValueError(
                f"{arch}'s layers ({', '.join(layers)}) are not named after brain areas: give "
                "the map, e.g. --region V1=layer1 --region V4=layer3 --region IT=layer5"
            )
    region_layer_map = {r: model.resolve_layer(ly) for r, ly in region_layer_map.items()}
    model._resolve_timesteps(timesteps)  # a clock length the model refuses fails now
    ident = identifier or name.replace(".", "-")
    settings = dict(step_ms=float(step_ms), onset_ms=float(onset_ms),
                    visual_degrees=float(visual_degrees), timesteps=timesteps)  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    (out / "region_layer_map").mkdir()
    (out / "region_layer_map" / f"{ident}.json").write_text(
        json.dumps(region_layer_map, indent=2) + "\n"
    )
    (out / "__init__.py").write_text(
        f'"""Brain-Score plugin: blt-models {name} (generated by `blt-models brainscore-plugin`)."""\n\n'
        "from brainscore_vision import model_registry\n\n"
        "from .model import MODEL_ID, get_model\n\n"
        "model_registry[MODEL_ID] = lambda: get_model(MODEL_ID)\n"
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
        f"    return {_bibtex(ident.replace('-', '_'), cfg.citation, cfg.source)!r}\n"
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
