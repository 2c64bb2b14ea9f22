"""examples/stimuli/run_experiments.py at a tiny size: it runs, and its numbers obey the clock."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    path = ROOT / "examples" / "stimuli" / "run_experiments.py"
    spec = importlib.util.spec_from_file_location("stimuli_experiments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stimuli_experiments_tiny(tmp_path):
    example = load_example()
    res = example.run(n=24, out=tmp_path / "out", assets=tmp_path / "assets", batch=12)
    for name in ("masking", "duration", "flash"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "assets" / f"stimuli_{name}.png").exists()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["n"] == 24
    steps, static = res["readout_steps"], res["static"]
    assert steps == [3, 4, 5, 6, 7]
    for kind in ("noise", "image"):
        by_soa = res["masking"][kind]
        assert sorted(by_soa, key=int) == ["1", "2", "3", "4", "5"]
        for soa, acc in by_soa.items():
            # The mask at step soa reaches the readout layer at soa + 3: earlier readouts are the
            # static image's exactly.
            for r, step in enumerate(steps):
                if step < int(soa) + 3:
                    assert acc[r] == static[r], (kind, soa, step)
        assert by_soa["5"] == static
    assert res["duration"]["5"] == static
    flash = res["flash"]
    for layer, first in flash["first_step"].items():
        evoked = flash["evoked"][layer]
        assert all(v == 0 for v in evoked[:first]) and evoked[first] > 0, layer
