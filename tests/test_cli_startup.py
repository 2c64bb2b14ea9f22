"""The command line starts without torch; ``import blt_models`` stays lean (item 3 of issue 16)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter on this checkout; it prints one JSON line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True,
                          text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _all_help_texts() -> dict[str, str]:
    from blt_models.cli import build_parser

    parser = build_parser()
    texts = {"blt-models": parser.format_help()}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        texts[name] = p.format_help()
    return texts


def test_help_has_no_rst_markup_and_names_every_command():
    texts = _all_help_texts()
    assert {"list", "info", "demo", "extract", "convert", "push"} <= set(texts)
    for name, text in texts.items():
        assert "``" not in text, f"{name} --help shows RST markup"
        assert "`" not in text, f"{name} --help shows a backtick"
    intro = texts["blt-models"].split("positional arguments")[0]
    intro = " ".join(intro.split())  # argparse wraps lines
    for name in set(texts) - {"blt-models"}:
        assert f" {name}," in intro or f" {name}." in intro, f"the intro omits {name}"


def test_help_and_argument_errors_do_not_import_torch():
    got = _python(
        "import sys, json, contextlib, io\n"
        "from blt_models.cli import main\n"
        "codes = []\n"
        "for argv in (['--help'], ['extract', '--help'], ['extract'], ['nonsense']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit as e: codes.append(e.code)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'codes': codes}))"
    )
    assert got["codes"] == [0, 0, 2, 2]
    assert not got["torch"], "blt-models --help / argument errors imported torch"


def test_import_blt_models_is_lean_and_names_still_resolve():
    heavy = ["torch", "matplotlib", "h5py", "zarr", "sklearn", "scipy", "rsatoolbox"]
    got = _python(
        "import sys, json\n"
        "import blt_models as bm\n"
        f"heavy = {heavy!r}\n"
        "bare = [m for m in heavy if m in sys.modules]\n"
        "model = bm.create_model('blt_b', num_classes=3)\n"
        "from blt_models import TimestepOutput, list_models\n"
        "used = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps({'bare': bare, 'used': used, 'n': len(list_models()),\n"
        "                  'errors': bm.errors.BltModelsError.__name__,\n"
        "                  'all': all(hasattr(bm, n) for n in bm.__all__)}))"
    )
    assert got["bare"] == []
    assert got["used"] == ["torch"], "first use imported an optional extra"
    assert got["n"] > 20 and got["all"] and got["errors"] == "BltModelsError"


def test_registry_lookups_through_submodules_see_every_family():
    # The root is lazy: a private import path must not meet an empty registry.
    got = _python(
        "import json\n"
        "from blt_models._registry import list_models, is_model\n"
        "print(json.dumps({'n': len(list_models()), 'cornet': is_model('cornet_rt')}))"
    )
    assert got["n"] > 20 and got["cornet"]


def test_unknown_attribute_is_an_attribute_error():
    import blt_models as bm

    with pytest.raises(AttributeError, match="no attribute 'create_modle'"):
        bm.create_modle  # noqa: B018
