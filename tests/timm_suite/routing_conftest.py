"""Runs timm's own ``tests/test_models.py``, as written, against blt-models.

tests/test_timm_suite.py copies this file as ``conftest.py`` next to the ``test_models.py`` of
the installed timm version (fetched from timm's sdist on PyPI by
``bash scripts/setup_integrations.sh timm``; nothing of timm's is vendored). pytest imports it
before ``test_models.py``, so the names that file imports from timm are ours by then:

* ``list_models`` / ``list_pretrained``: this library's architectures, with timm's ``filter`` /
  ``exclude_filters`` globs applied to our names. ``module=`` (timm's module families that have
  ``forward_intermediates``) matches every architecture: every family has it.
  ``include_tags=True`` lists each architecture once (its tags share the architecture).
  ``pretrained=True`` lists the architectures whose default weights ship in the package: the
  suite runs offline, and the others would need a download.
* ``create_model``: :func:`blt_models.create_model`; ``get_pretrained_cfg_value``: the
  ``default_cfg`` of the architecture, built on the meta device.
* The input sizes: timm's ``TARGET_FWD_SIZE`` (384) becomes 128, so that forward tests run at the
  models' declared ``min_input_size`` as the backward tests already do; every other size is
  timm's, from the models' ``default_cfg``.

Tests whose models are timm architectures named in the test (``'resnet18'``, ``'convit_tiny'``...)
test timm's own models, not a library's; they are skipped as not applicable, with that reason.
"""

from __future__ import annotations

import fnmatch
import os

import pytest
import timm
import timm.models
import torch

import blt_models as bm
from blt_models._registry import get_pretrained_cfg

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# BLT_TIMM_SUITE_MODELS="glob,glob" chooses the architectures; "*" (tests/test_timm_suite.py's
# default, what the slow CI target runs) is every one.
OURS = set(bm.list_models(os.environ.get("BLT_TIMM_SUITE_MODELS", "*").split(",")))
NOT_APPLICABLE = "not applicable: tests timm's own architecture (named in the test)"


def _patterns(value) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def list_models(
    filter="", module="", pretrained=False, exclude_filters="", name_matches_cfg=False,
    include_tags=None,
):  # fmt: skip
    names = sorted(OURS)
    if pretrained:
        names = [n for n in names if get_pretrained_cfg(n).file]  # shipped: no download
    include = _patterns(filter)
    if include:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in include)]
    exclude = _patterns(exclude_filters)
    return [n for n in names if not any(fnmatch.fnmatch(n, p) for p in exclude)]


def list_pretrained(filter="", exclude_filters=""):
    return list_models(filter=filter, exclude_filters=exclude_filters, pretrained=True)


def create_model(model_name, pretrained=False, **kwargs):
    return bm.create_model(model_name, pretrained=pretrained, **kwargs)


def get_pretrained_cfg_value(model_name, cfg_key):
    return bm.create_model(model_name, device="meta").default_cfg.get(cfg_key)


for _target in (timm, timm.models):
    _target.list_models = list_models
    _target.list_pretrained = list_pretrained
    _target.create_model = create_model
    _target.get_pretrained_cfg_value = get_pretrained_cfg_value


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=NOT_APPLICABLE)
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "TARGET_FWD_SIZE", None) == 384:
            module.TARGET_FWD_SIZE = 128
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("model_name") not in OURS:
            item.add_marker(skip)
