"""A missing optional extra fails before any work, with the line that installs it."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import blt_models as bm
from blt_models.errors import BltModelsError, MissingExtraError


def _tiny():
    return bm.create_model("blt_bl", num_classes=3, num_layers=4, timesteps=5).eval()


def _assert_install_line(err: pytest.ExceptionInfo, extra: str) -> None:
    assert f'pip install -e ".[{extra}]"' in str(err.value)
    assert isinstance(err.value, ImportError) and isinstance(err.value, BltModelsError)


def test_demo_without_matplotlib_fails_before_printing_results(monkeypatch, tmp_path, capsys):
    from blt_models.demo import run_demo

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError) as err:
        run_demo("blt_b", tmp_path)
    _assert_install_line(err, "plot")
    assert "matplotlib" in str(err.value)
    assert capsys.readouterr().out == ""  # no results first, then a traceback
    assert not (tmp_path / "activity.png").exists()


def test_cli_demo_without_matplotlib_prints_the_install_line(monkeypatch, tmp_path, capsys):
    from blt_models.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["demo", "--model", "blt_b", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[plot]"' in err


@pytest.mark.parametrize(("module", "suffix"), [("h5py", ".h5"), ("zarr", ".zarr")])
def test_extract_to_a_file_without_its_library(monkeypatch, tmp_path, module, suffix):
    monkeypatch.setitem(sys.modules, module, None)
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(MissingExtraError) as err:
        bm.extract_features(_tiny(), images, layers=["layer0"], out=tmp_path / f"f{suffix}",
                            progress=False)  # fmt: skip
    _assert_install_line(err, "extract")
    assert module in str(err.value)


def test_reading_a_feature_file_without_h5py(monkeypatch, tmp_path):
    pytest.importorskip("h5py")
    path = tmp_path / "f.h5"
    bm.extract_features(_tiny(), torch.randn(2, 3, 32, 32), layers=["layer0"], out=path,
                        progress=False)  # fmt: skip
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingExtraError) as err:
        bm.load_features(path)
    _assert_install_line(err, "extract")


@pytest.mark.parametrize("module", ["sklearn", "scipy", "matplotlib"])
def test_analysis_without_one_of_its_libraries(monkeypatch, module):
    saved = {k: v for k, v in sys.modules.items() if k.startswith("blt_models.analysis")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    monkeypatch.setitem(sys.modules, module, None)
    try:
        with pytest.raises(MissingExtraError) as err:
            importlib.import_module("blt_models.analysis")
        _assert_install_line(err, "analysis")
        assert {"sklearn": "scikit-learn"}.get(module, module) in str(err.value)
    finally:
        for k in [k for k in sys.modules if k.startswith("blt_models.analysis")]:
            del sys.modules[k]
        sys.modules.update(saved)
