"""The examples run offline as documented."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_extraction_example(tmp_path):
    out = tmp_path / "features.h5"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "extraction" / "extract_samples.py"), "--out", str(out)],
        env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "layer3: (100, 8, 64, 4, 4)  (active from step 3)" in proc.stdout
    assert "identical to the returned result: True" in proc.stdout
    assert out.stat().st_size > 1_000_000


def test_convrnn_neural_protocol_example(tmp_path):
    out = tmp_path / "it.h5"
    script = ROOT / "examples" / "convrnn" / "extract_it_neural.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--num-images", "2", "--img-size", "32", "--out", str(out)],
        env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 images, 26 steps (image on for steps 0-9)" in proc.stdout
    assert "conv10: (2, 26, 512), carries the image from step 9" in proc.stdout
    assert "off=10" in proc.stdout and out.is_file()
